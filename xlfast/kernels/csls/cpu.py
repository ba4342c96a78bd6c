"""The CPU backends of `xlfast.kernels.csls` (all fed tiles by the driver in stream.py).

`TorchBackend`: torch.mm + torch.topk merges, the portable fallback. `CompiledSelection`: a numpy/OpenBLAS
tile product (faster than torch.mm on this CPU) and compiled parallel selection kernels — the Numba ones
(numba.py) or the C++/OpenMP ones (csrc/cpu/csls.cpp) — which read each tile once for rows and columns
together (threads own column stripes; row candidates go to private per-stripe buffers, merged once per tile).
A candidate is only inserted when it beats the row's (column's) current k-th best, so after a few tiles the
scan is one compare per element and the GEMM dominates.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from xlfast.kernels.csls.base import MARGIN_EPS, Mode, TiledBackend


class NumpyTiler:
    """OpenBLAS GEMM (through numpy) into one reused buffer."""

    def __init__(self, bx, by, dim):
        self.buf = np.empty(bx * by, dtype=np.float32)

    def product(self, Xb, Yb):
        out = self.buf[: Xb.shape[0] * Yb.shape[0]].reshape(Xb.shape[0], Yb.shape[0])
        np.matmul(Xb, Yb.T, out=out)
        return out


class _TorchTiler:
    def __init__(self, bx, by, dim):
        self.buf = torch.empty(bx * by, dtype=torch.float32)

    def product(self, Xb, Yb):
        out = self.buf[: Xb.shape[0] * Yb.shape[0]].view(Xb.shape[0], Yb.shape[0])
        torch.mm(torch.from_numpy(Xb), torch.from_numpy(Yb).T, out=out)
        return out.numpy()


class TorchBackend(TiledBackend):
    """torch.mm + torch.topk merges: portable fallback, same streaming scheme."""

    name = "torch"

    def tiler(self, bx, by, dim):
        return _TorchTiler(bx, by, dim)

    @staticmethod
    def _scores(S, i0, j0, mode, rterm, cterm, exclude_self):
        S = torch.from_numpy(S)
        nb, mb = S.shape
        if mode != Mode.COS:
            rt = torch.from_numpy(rterm[i0 : i0 + nb])[:, None]
            ct = torch.from_numpy(cterm[j0 : j0 + mb])[None, :]
            S = 2 * S - rt - ct if mode == Mode.CSLS else 2 * S / (rt + ct).clamp_min(MARGIN_EPS)
        if exclude_self:
            lo, hi = max(i0, j0), min(i0 + nb, j0 + mb)
            if lo < hi:
                S = S.clone() if mode == Mode.COS else S
                d = torch.arange(lo, hi)
                S[d - i0, d - j0] = -math.inf
        return S

    def update(self, S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self):
        T = self._scores(S, i0, j0, mode, rterm, cterm, exclude_self)
        nb, mb = T.shape
        if rvals.shape[0]:
            k = rvals.shape[1]
            v = torch.from_numpy(rvals[i0 : i0 + nb])
            ix = torch.from_numpy(ridx[i0 : i0 + nb])
            cand_i = torch.arange(j0, j0 + mb).expand(nb, mb)
            # running buffer first: ties keep the earlier (smaller) index, as in the compiled backends
            top = torch.cat([v, T], 1).topk(k, dim=1, sorted=True)
            v.copy_(top.values)
            ix.copy_(torch.cat([ix, cand_i], 1).gather(1, top.indices))
        if cvals.shape[0]:
            k = cvals.shape[1]
            v = torch.from_numpy(cvals[j0 : j0 + mb])
            ix = torch.from_numpy(cidx[j0 : j0 + mb])
            cand_i = torch.arange(i0, i0 + nb).expand(mb, nb)
            top = torch.cat([v, T.T], 1).topk(k, dim=1, sorted=True)
            v.copy_(top.values)
            ix.copy_(torch.cat([ix, cand_i], 1).gather(1, top.indices))

    def rescore(self, Q, D, idx, out):
        for i in range(0, idx.shape[0], 4096):  # float64 sums, bounded chunks
            ix = idx[i : i + 4096]
            c = np.einsum("rcd,rd->rc", D[np.maximum(ix, 0)].astype(np.float64), Q[i : i + 4096].astype(np.float64))
            out[i : i + 4096] = np.where(ix >= 0, c, -np.inf)


class CompiledSelection(TiledBackend):
    """Numpy/OpenBLAS tile product + compiled parallel selection kernels (numba or C++): rows only, columns
    only, or both from one read of the tile (`fused`). Every kernel receives MARGIN_EPS."""

    compiled_rescore = True

    def __init__(self, name: str, rows_fn: Callable, cols_fn: Callable, fused_fn: Callable, rescore_fn: Callable,
                 *, bf16_tiles: bool = False):
        self.name = name
        self._rows, self._cols, self._fused, self._rescore = rows_fn, cols_fn, fused_fn, rescore_fn
        self.bf16_tiles = bf16_tiles

    def tiler(self, bx, by, dim):
        return NumpyTiler(bx, by, dim)

    def update(self, S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self):
        if rvals.shape[0] and cvals.shape[0]:
            self._fused(S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self, MARGIN_EPS)
            return
        if rvals.shape[0]:
            self._rows(S, i0, j0, rvals, ridx, mode, rterm, cterm, exclude_self, MARGIN_EPS)
        if cvals.shape[0]:
            self._cols(S, i0, j0, cvals, cidx, mode, rterm, cterm, exclude_self, MARGIN_EPS)

    def rescore(self, Q, D, idx, out):
        self._rescore(Q, D, idx, out)
