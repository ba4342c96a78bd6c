"""Numba selection kernels of the csls 'numba' backend: running top-k over one similarity tile.

`rows_update` keeps, for every row of the tile, the k best scores seen so far (parallel over rows);
`fused_update` does that and the same per column from one read of the tile (threads own column stripes,
each walking the rows so reads stay contiguous; row candidates go to private per-stripe buffers merged
once per tile); `cols_update`, columns alone, is the fused kernel. All test each element
against the current k-th best (a per-row / per-column threshold) and only then pay for an insertion, so
most elements cost one compare.

mode: the int of base.Mode — cos s, csls 2s − r_T[i] − r_S[j], margin 2s / max(r_T[i] + r_S[j], eps).
A branch-free "count the hits in 64 elements first" pre-check measured slower than this plain loop
(0.62 vs 0.59 s selection on 4096×16384, alternated), and tiles that fit in cache lost more in GEMM
and launch overhead than they saved. Buffers hold values descending; ties keep the earlier index (strict '>').
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from xlfast.kernels.csls.base import MARGIN_EPS, Mode

_COS, _CSLS, _MARGIN = int(Mode.COS), int(Mode.CSLS), int(Mode.MARGIN)  # constants once compiled
CHUNK = 64  # minimum column stripe width


@njit(inline="always")
def _insert(vals, idx, s, j):
    k = vals.shape[0]
    p = k - 1
    while p > 0 and vals[p - 1] < s:
        vals[p] = vals[p - 1]
        idx[p] = idx[p - 1]
        p -= 1
    vals[p] = s
    idx[p] = j


@njit(inline="always")
def _score(s, mode, a, b, eps):
    if mode == _CSLS:
        return np.float32(2.0) * s - a - b
    if mode == _MARGIN:
        den = a + b
        if den < eps:
            den = eps
        return np.float32(2.0) * s / den
    return s


@njit(parallel=True, cache=True, nogil=True)
def rows_update(S, i0, j0, vals, idx, mode, rterm, cterm, exclude_self, margin_eps):
    eps = np.float32(margin_eps)
    nb, mb = S.shape
    k = vals.shape[1]
    for bi in prange(nb):
        i = i0 + bi
        v = vals[i]
        ix = idx[i]
        thr = v[k - 1]
        row = S[bi]
        a = rterm[i] if mode != _COS else np.float32(0.0)
        for bj in range(mb):
            s = _score(row[bj], mode, a, cterm[j0 + bj], eps) if mode != _COS else row[bj]
            if s > thr:
                j = j0 + bj
                if exclude_self and j == i:
                    continue
                _insert(v, ix, s, j)
                thr = v[k - 1]


def cols_update(S, i0, j0, vals, idx, mode, rterm, cterm, exclude_self, margin_eps):
    """Column buffers alone (a pass with no row top-k, rare): the fused kernel with throw-away row buffers."""
    rows = i0 + S.shape[0]
    fused_update(S, i0, j0, np.full((rows, 1), -np.inf, np.float32), np.full((rows, 1), -1, np.int64), vals, idx,
                 mode, rterm, cterm, exclude_self, margin_eps)


def fused_update(S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self, margin_eps, stripes=0):
    """Row AND column buffers from one read of the tile (see csrc/cpu/csls_kernels.h: fused_kernel);
    `stripes` > 0 forces the number of column stripes (tests), else one per thread."""
    _fused_update(S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self, margin_eps,
                  stripes if stripes > 0 else get_num_threads(), stripes > 0)


@njit(parallel=True, cache=True, nogil=True)
def _fused_update(S, i0, j0, rvals, ridx, cvals, cidx, mode, rterm, cterm, exclude_self, margin_eps, n_threads,
                  forced):
    eps = np.float32(margin_eps)
    # threads own column stripes (each column buffer has one writer); row candidates that beat the row's
    # current k-th best go to private per-stripe buffers (stripes × rows × k), merged once per tile
    nb, mb = S.shape
    kr = rvals.shape[1]
    kc = cvals.shape[1]
    n_stripes = max(1, min(mb, n_threads) if forced else min((mb + CHUNK - 1) // CHUNK, n_threads))
    stripe = (mb + n_stripes - 1) // n_stripes
    pv = np.full((n_stripes, nb, kr), -np.inf, dtype=np.float32)
    px = np.full((n_stripes, nb, kr), -1, dtype=np.int64)
    for t in prange(n_stripes):
        lo = t * stripe
        hi = min(mb, lo + stripe)
        if lo >= hi:
            continue
        cthr = np.empty(hi - lo, dtype=np.float32)
        for bj in range(lo, hi):
            cthr[bj - lo] = cvals[j0 + bj, kc - 1]
        for bi in range(nb):
            i = i0 + bi
            row = S[bi]
            a = rterm[i] if mode != _COS else np.float32(0.0)
            v = pv[t, bi]
            ix = px[t, bi]
            gthr = rvals[i, kr - 1]
            rthr = max(gthr, v[kr - 1])
            for bj in range(lo, hi):
                s = _score(row[bj], mode, a, cterm[j0 + bj], eps) if mode != _COS else row[bj]
                in_row = s > rthr
                in_col = s > cthr[bj - lo]
                if in_row or in_col:
                    j = j0 + bj
                    if exclude_self and j == i:
                        continue
                    if in_row:
                        _insert(v, ix, s, j)
                        rthr = max(gthr, v[kr - 1])
                    if in_col:
                        _insert(cvals[j], cidx[j], s, i)
                        cthr[bj - lo] = cvals[j, kc - 1]
    for bi in prange(nb):
        i = i0 + bi
        tv = np.empty(kr, dtype=np.float32)
        tx = np.empty(kr, dtype=np.int64)
        for t in range(n_stripes):
            w = pv[t, bi]
            if w[0] == -np.inf:
                continue
            jx = px[t, bi]
            v = rvals[i]
            ix = ridx[i]
            a = 0
            b = 0
            for c in range(kr):  # the row buffer holds the earlier indices: it wins ties
                if w[b] > v[a]:
                    tv[c] = w[b]
                    tx[c] = jx[b]
                    b += 1
                else:
                    tv[c] = v[a]
                    tx[c] = ix[a]
                    a += 1
            v[:] = tv
            ix[:] = tx


@njit(parallel=True, cache=True, nogil=True)
def rescore(X, Y, idx, out):
    """out[r, c] = X[r] · Y[idx[r, c]] with float64 accumulation; −inf where idx < 0."""
    n, c = idx.shape
    d = X.shape[1]
    for r in prange(n):
        for q in range(c):
            j = idx[r, q]
            if j < 0:
                out[r, q] = -np.inf
                continue
            acc = 0.0
            for t in range(d):
                acc += np.float64(X[r, t]) * np.float64(Y[j, t])
            out[r, q] = np.float32(acc)


def warmup() -> None:
    """Compile (or load from cache) every specialisation once, so the first real call is not slow and a
    broken Numba shows up as 'backend unavailable'."""
    S = np.zeros((2, 3), np.float32)
    rt, ct = np.zeros(2, np.float32), np.zeros(3, np.float32)

    def buffers(rows):
        return np.full((rows, 1), -np.inf, np.float32), np.full((rows, 1), -1, np.int64)

    for mode in Mode:
        for ex in (False, True):
            rows_update(S, 0, 0, *buffers(2), int(mode), rt, ct, ex, MARGIN_EPS)
            cols_update(S, 0, 0, *buffers(3), int(mode), rt, ct, ex, MARGIN_EPS)
            fused_update(S, 0, 0, *buffers(2), *buffers(3), int(mode), rt, ct, ex, MARGIN_EPS)
    rescore(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), np.zeros((2, 1), np.int64),
            np.zeros((2, 1), np.float32))
