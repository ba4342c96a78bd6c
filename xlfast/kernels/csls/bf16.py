"""The certified bf16 path: exact results from bf16 tiles (CPU backends, where bf16 matmul is native).

Every pass computes its tiles with a bf16 GEMM (oneDNN, ≈4× the fp32 rate there) and keeps k + `extra`
candidates per row (and column); the candidates are re-scored exactly (float32 vectors, float64 sums), r_T /
r_S come from exactly re-scored pass-1 candidates, and the top-k is taken from the exact scores. A row is
CERTIFIED when its (k+extra)-th approximate score plus the worst-case bf16 error (input rounding measured per
row, accumulation, output rounding) is below its k-th exact score: no other candidate can then enter its
top-k. With certify=True uncertified rows are recomputed in fp32, so the result is the exact one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from xlfast.errors import XlfastError
from xlfast.kernels.csls.base import (MARGIN_EPS, Mode, Search, TiledBackend, TopK, clip_k, means_of, metric_scores,
                                      ranked, rescored, take, without_self)
from xlfast.kernels.csls.stream import stream
from xlfast.kernels.dispatch import bf16_native

log = logging.getLogger("xlfast")

# The automatic choice takes this path (certified, so exact) once a pass has this many similarities; below
# it the fixed costs (rounding norms, re-scoring, certificates) lose: measured on 2k×2k×300 CSLS 0.59× fp32,
# 10k×10k 1.6×, 20k×20k 2.5× (benchmarks/bench_csls_precision.py).
AUTO_BF16_MIN_PAIRS = 25_000_000
BF16_U = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits, round to nearest even)


@dataclass(frozen=True)
class Bf16:
    """Certified bf16 search: tiles of at most `mem` bytes; `extra` candidates per row beyond k are
    re-scored exactly; certify=False returns the re-scored candidates without recomputing uncertified rows
    (stats count them). Where bf16 is not native it runs the exact fp32 scan instead."""

    mem: int | str | None = None
    extra: int = 16
    certify: bool = True

    def __post_init__(self):
        if isinstance(self.extra, bool) or not isinstance(self.extra, (int, np.integer)) or self.extra < 0:
            raise XlfastError(f"extra must be an integer ≥ 0, got {self.extra!r}")


def pays(backend: TiledBackend, pairs: int) -> bool:
    """Whether the automatic choice takes this path: a compiled re-scoring, at least AUTO_BF16_MIN_PAIRS
    similarities in the largest pass, and native bf16."""
    return backend.compiled_rescore and pairs >= AUTO_BF16_MIN_PAIRS and bf16_native()


def runs_here() -> bool:
    if not bf16_native():
        log.info("csls: no native bf16 matmul on this CPU; Bf16 runs the exact fp32 scan")
        return False
    return True


class _Bf16Tiler:
    """torch bf16 GEMM (oneDNN) into one reused bf16 buffer; tiles are handed on as uint16 bits."""

    def __init__(self, bx, by):
        self.buf = torch.empty(bx * by, dtype=torch.bfloat16)

    def product(self, Xb, Yb):
        out = self.buf[: Xb.shape[0] * Yb.shape[0]].view(Xb.shape[0], Yb.shape[0])
        torch.mm(Xb, Yb.T, out=out)
        return out.view(torch.int16).numpy().view(np.uint16)


def _widen(S: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) → float32, exactly (the bits are the high half of the float32)."""
    return (S.astype(np.uint32) << 16).view(np.float32)


def bf16_tiles(backend: TiledBackend, Xn, Yn, bx, by):
    """bf16 tiles, column block outermost: only one block of Y and one of X are ever held in bf16, so
    the extra memory stays within the tile budget at any N, M (whole bf16 copies of X and Y took
    +200 MiB at 100k×100k×512). Every row still meets the column blocks in ascending order and every
    column the row blocks, so ties resolve as in the fp32 order."""
    tiler = _Bf16Tiler(bx, by)
    for j0 in range(0, Yn.shape[0], by):
        Yb = torch.from_numpy(Yn[j0 : j0 + by]).to(torch.bfloat16)
        for i0 in range(0, Xn.shape[0], bx):
            S = tiler.product(torch.from_numpy(Xn[i0 : i0 + bx]).to(torch.bfloat16), Yb)
            yield i0, j0, S if backend.bf16_tiles else _widen(S)


def row_rounding(A: np.ndarray, chunk: int = 8192):
    """Per row: ‖a‖, ‖bf16(a)‖ and ‖bf16(a) − a‖, the inputs of the bf16 error bound. bf16(a) − a is exact
    in float32 (nearby floats); the float32 norms are within d·2⁻²⁴ relative, covered by a 1e-3 margin."""
    n = A.shape[0]
    norm, norm16, dnorm = (np.zeros(n) for _ in range(3))
    for i in range(0, n, chunk):
        a = torch.from_numpy(A[i : i + chunk])
        a16 = a.to(torch.bfloat16).float()
        norm[i : i + chunk] = a.norm(dim=1).double().numpy() * (1 + 1e-3)
        norm16[i : i + chunk] = a16.norm(dim=1).double().numpy() * (1 + 1e-3)
        dnorm[i : i + chunk] = (a16 - a).norm(dim=1).double().numpy() * (1 + 1e-3)
    return norm, norm16, dnorm


def error_bound(Q: np.ndarray, D: np.ndarray, rq=None, rd=None):
    """For every row q of Q: (eps_in[q], cmax[q]) with |c̃_acc(q, j) − q·d_j| ≤ eps_in[q] for every row j of D
    (c̃_acc: the fp32 accumulation of the bf16-rounded vectors, before its own rounding to bf16) and
    |c̃_acc| ≤ cmax[q]. x̃·ỹ − x·y = δx·ỹ + x·δy (Cauchy–Schwarz on each), plus the accumulation error
    γ_d Σ|x̃_t ỹ_t| (the bf16 products are exact in fp32), plus flushed denormals."""
    nq, nd, dq = rq if rq is not None else row_rounding(Q)
    dnorm_d = rd if rd is not None else row_rounding(D)
    d = Q.shape[1]
    gamma = d * 2.0**-24 / (1 - d * 2.0**-24)
    if D.shape[0] == 0:
        return np.zeros(Q.shape[0]), np.zeros(Q.shape[0])
    dmax16, ddmax = dnorm_d[1].max(), dnorm_d[2].max()
    eps_in = dq * dmax16 + nq * ddmax + gamma * nd * dmax16 + d * 2.0**-125
    cmax = nd * dmax16 * (1 + gamma) + d * 2.0**-125
    return eps_in, cmax


def _exact_rows(backend, Q, D, which, kq, mode, qterm, dterm, mem, exclude_self):
    """fp32 top-kq of the rows `which` of Q against D (exclude_self: the pair (which[r], which[r]) is
    dropped — one more neighbour is found, then the row's own index, or else the last, is removed)."""
    Qs = np.ascontiguousarray(Q[which])
    qt = None if qterm is None else np.ascontiguousarray(qterm[which])
    ke = min(kq + (1 if exclude_self else 0), D.shape[0])
    buf, _ = stream(backend, Qs, D, k_rows=ke, k_cols=0, mode=mode, r_T=qt, r_S=dterm, mem=mem, exclude_self=False)
    if not exclude_self:
        return buf.vals, buf.idx
    idx, vals = without_self(which, buf.idx, buf.vals)
    return vals[:, :kq], idx[:, :kq]


def _select(backend, Q, D, approx, kq, mode, qterm, dterm, err, exclude_self, certify, mem, st, label):
    """Exact top-kq for every row of Q from its approximate candidates `approx` (a Running of width ≥ kq):
    re-score exactly, sort by (score desc, index asc), certify, recompute uncertified rows in fp32."""
    nq = Q.shape[0]
    vals = np.full((nq, kq), -np.inf, np.float32)
    idx = np.full((nq, kq), -1, np.int64)
    if nq == 0 or kq == 0 or D.shape[0] == 0:
        st[label] = {"rows": nq, "certified": nq, "recomputed": 0}
        return vals, idx
    cand = approx.idx
    vals, idx = ranked(metric_scores(rescored(backend, Q, D, cand), mode, qterm, dterm, cand), cand, kq)
    # certificate: every non-candidate has approximate score ≤ t (the last kept one)
    t = approx.vals[:, -1].astype(np.float64)
    eps_in, cmax = err
    u = BF16_U
    dc = u * cmax / (1 - u) + eps_in  # |exact cos − bf16 cos| (output rounding bounded via |c| ≤ cmax)
    if mode == Mode.COS:
        bound = t + u * np.abs(t) / (1 - u) + eps_in + 1e-5
    elif mode == Mode.CSLS:
        bound = t + 2 * dc + 1e-5 * (1 + cmax)
    else:
        den = np.maximum(qterm.astype(np.float64) + float(dterm.min()), MARGIN_EPS) * (1 - 2.0**-22)
        bound = t + (2 * dc + 1e-5 * (1 + cmax)) / den
    total = D.shape[0] - (1 if exclude_self else 0)
    with np.errstate(invalid="ignore"):
        cert = (approx.vals.shape[1] >= total) | (bound < vals[:, -1])
    bad = np.flatnonzero(~cert)
    if certify and len(bad):
        vals[bad], idx[bad] = _exact_rows(backend, Q, D, bad, kq, mode, qterm, dterm, mem, exclude_self)
    st[label] = {"rows": nq, "certified": int(cert.sum()), "recomputed": int(len(bad)) if certify else 0}
    return vals, idx


class Bf16Search(Search):
    """Candidates from bf16 tiles, re-scored and certified per row (see the module's docstring)."""

    def __init__(self, backend: TiledBackend, opts: Bf16, Xn: np.ndarray, Yn: np.ndarray, stats: dict):
        self.backend, self.opts, self.X, self.Y, self.stats = backend, opts, Xn, Yn, stats
        self.rx, self.ry = row_rounding(Xn), row_rounding(Yn)

    def _width(self, k: int, total: int) -> int:
        return min(k + self.opts.extra, total) if k else 0

    def means(self, k, exclude_self):
        n, m, ex = self.n, self.m, 1 if exclude_self else 0
        kr, kc = clip_k(k, m, exclude_self), clip_k(k, n, exclude_self)
        rows, cols = stream(self.backend, self.X, self.Y, k_rows=self._width(kr, m - ex),
                            k_cols=self._width(kc, n - ex), mode=Mode.COS, r_T=None, r_S=None, mem=self.opts.mem,
                            exclude_self=exclude_self, tiles=bf16_tiles)
        common = (self.opts.certify, self.opts.mem, self.stats)
        rv, _ = _select(self.backend, self.X, self.Y, rows, kr, Mode.COS, None, None,
                        error_bound(self.X, self.Y, self.rx, self.ry), exclude_self, *common, "pass1_rows")
        cv, _ = _select(self.backend, self.Y, self.X, cols, kc, Mode.COS, None, None,
                        error_bound(self.Y, self.X, self.ry, self.rx), exclude_self, *common, "pass1_cols")
        self.stats["precision"] = "bf16"
        return means_of(rv, n), means_of(cv, m)

    def topk(self, rows, kr, kc, mode, r_T, r_S, exclude_self, both) -> TopK:
        X, rx = self.X, self.rx
        if rows is not None:
            X, rx = take(X, rows), tuple(a[rows] for a in rx)
            r_T = None if r_T is None else take(r_T, rows)
        n, m, ex = X.shape[0], self.m, 1 if exclude_self else 0
        fwd, rev = stream(self.backend, X, self.Y, k_rows=self._width(kr, m - ex),
                          k_cols=self._width(kc, n - ex) if both else 0, mode=mode, r_T=r_T, r_S=r_S,
                          mem=self.opts.mem, exclude_self=exclude_self, tiles=bf16_tiles)
        common = (self.opts.certify, self.opts.mem, self.stats)
        fv, fi = _select(self.backend, X, self.Y, fwd, kr, mode, r_T, r_S, error_bound(X, self.Y, rx, self.ry),
                         exclude_self, *common, "rows")
        self.stats["precision"] = "bf16"
        out = TopK(torch.from_numpy(fv), torch.from_numpy(fi))
        if both:
            bv, bi = _select(self.backend, self.Y, X, rev, kc, mode, r_S, r_T, error_bound(self.Y, X, self.ry, rx),
                             exclude_self, *common, "cols")
            out = out._replace(rev_scores=torch.from_numpy(bv), rev_indices=torch.from_numpy(bi))
        return out
