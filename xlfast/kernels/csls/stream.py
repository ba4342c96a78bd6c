"""The exact tiled driver: X·Yᵀ computed tile by tile into one reused buffer whose size follows the memory
budget, each tile scanned by the backend's selection kernel, which keeps a running top-k per row of X and, in
the same scan, per column (= row of Y). CSLS and margin need r_T and r_S first: pass 1 gives both from one
scan, pass 2 streams the tiles again with the score fused into the selection. The N×M matrix never exists.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xlfast import threads
from xlfast.kernels.csls.base import Mode, Running, Search, TiledBackend, TopK, clip_k, means_of, take, tile_shape


@dataclass(frozen=True)
class Exact:
    """Exact fp32 search: tiles of X·Yᵀ of at most `mem` bytes (int or '256M'; None: 128 MiB) on the CPU
    backends; the device backends run the whole search on the GPU and need no tiles."""

    mem: int | str | None = None


def fp32_tiles(backend: TiledBackend, Xn, Yn, bx, by):
    tiler = backend.tiler(bx, by, Xn.shape[1])
    for i0 in range(0, Xn.shape[0], bx):
        for j0 in range(0, Yn.shape[0], by):
            yield i0, j0, tiler.product(Xn[i0 : i0 + bx], Yn[j0 : j0 + by])


def stream(backend: TiledBackend, Xn, Yn, *, k_rows, k_cols, mode, r_T, r_S, mem, exclude_self,
           tiles=fp32_tiles) -> tuple[Running, Running]:
    """One pass over the tiles of Xn·Ynᵀ; returns (row buffers [n, k_rows], column buffers [m, k_cols]).
    With both k_rows and k_cols the backend's fused kernel reads each tile once for both. `tiles` yields
    (i0, j0, tile); the bf16 path passes its own (approximate scores, re-scored afterwards)."""
    n, m = Xn.shape[0], Yn.shape[0]
    rows, cols = Running(n, k_rows), Running(m, k_cols)
    if n == 0 or m == 0 or (k_rows == 0 and k_cols == 0):
        return rows, cols
    empty_v = np.empty((0, 1), np.float32)
    empty_i = np.empty((0, 1), np.int64)
    rterm = r_T if r_T is not None else np.zeros(n, np.float32)
    cterm = r_S if r_S is not None else np.zeros(m, np.float32)
    bx, by = tile_shape(n, m, Xn.shape[1], mem)
    for i0, j0, S in tiles(backend, Xn, Yn, bx, by):
        threads.poll()  # between tiles: share the CPUs when other work runs (xlfast.threads)
        backend.update(
            S, i0, j0,
            rows.vals if k_rows else empty_v, rows.idx if k_rows else empty_i,
            cols.vals if k_cols else empty_v, cols.idx if k_cols else empty_i,
            int(mode), rterm, cterm, exclude_self,
        )
    return rows, cols


class ExactSearch(Search):
    """The fp32 tiled scan on a CPU backend."""

    def __init__(self, backend: TiledBackend, mem, Xn: np.ndarray, Yn: np.ndarray):
        self.backend, self.mem, self.X, self.Y = backend, mem, Xn, Yn

    def means(self, k, exclude_self):
        rows, cols = stream(self.backend, self.X, self.Y, k_rows=clip_k(k, self.m, exclude_self),
                            k_cols=clip_k(k, self.n, exclude_self), mode=Mode.COS, r_T=None, r_S=None,
                            mem=self.mem, exclude_self=exclude_self)
        return means_of(rows.vals, self.n), means_of(cols.vals, self.m)

    def topk(self, rows, kr, kc, mode, r_T, r_S, exclude_self, both) -> TopK:
        X = self.X if rows is None else take(self.X, rows)
        r_T = r_T if rows is None or r_T is None else take(r_T, rows)
        fwd, rev = stream(self.backend, X, self.Y, k_rows=kr, k_cols=kc, mode=mode, r_T=r_T, r_S=r_S,
                          mem=self.mem, exclude_self=exclude_self)
        out = TopK(torch.from_numpy(fwd.vals), torch.from_numpy(fwd.idx))
        if both:
            out = out._replace(rev_scores=torch.from_numpy(rev.vals), rev_indices=torch.from_numpy(rev.idx))
        return out
