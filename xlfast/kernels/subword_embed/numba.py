"""The subword_embed 'numba' backend: the fused subword-average lookup on the CPU (float32 and float64).

Forward: threads over words; words of 1-3 pieces are written in one fused pass, longer ones are summed
in the output row (in L1) and finished in place.

Backward (grad_Z only; grad_E is handled by the autograd Function): the piece table is split into one
contiguous range of rows per thread, and every thread walks all words in order, adding `g[w] / count`
into the pieces of its own range. No atomics, no private copies to reduce, deterministic, and each
gradient row is read sequentially by at most (threads) workers — a transposed CSR instead reads every
gradient row once per piece use, in random order (measured slower here: `xlfast bench embed`).
"""
from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from xlfast.kernels.subword_embed.base import FusedBackend

@njit(inline="always")
def _sum_pieces(Z, pieces, start, stop, out, i):
    """out[i] = the sum of the word's piece rows Z[pieces[start:stop]] (summed in the output row, in L1)."""
    d = out.shape[1]
    p = pieces[start]
    for j in range(d):
        out[i, j] = Z[p, j]
    for k in range(start + 1, stop):
        p = pieces[k]
        for j in range(d):
            out[i, j] += Z[p, j]


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _forward(E, Z, offsets, pieces, rows, inv_counts, out):
    n, d = out.shape
    for i in prange(n):
        w = rows[i]
        start = offsets[w]
        stop = offsets[w + 1]
        count = stop - start
        inv = inv_counts[w]
        # Words of 1-3 pieces (nearly all of them) in one fused pass: a sum kept in the output row
        # and finished in a second pass was 2x slower here.
        if count == 1:
            p = pieces[start]
            for j in range(d):
                out[i, j] = E[w, j] + Z[p, j]
        elif count == 2:
            p, q = pieces[start], pieces[start + 1]
            for j in range(d):
                out[i, j] = E[w, j] + (Z[p, j] + Z[q, j]) * inv
        elif count == 3:
            p, q, r = pieces[start], pieces[start + 1], pieces[start + 2]
            for j in range(d):
                out[i, j] = E[w, j] + (Z[p, j] + Z[q, j] + Z[r, j]) * inv
        else:
            _sum_pieces(Z, pieces, start, stop, out, i)
            for j in range(d):
                out[i, j] = E[w, j] + out[i, j] * inv


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _grad_pieces(g, offsets, pieces, rows, inv_counts, grad_Z, parts):
    P, d = grad_Z.shape
    n = g.shape[0]
    for t in prange(parts):
        lo = P * t // parts
        hi = P * (t + 1) // parts
        for p in range(lo, hi):
            for j in range(d):
                grad_Z[p, j] = 0
        for i in range(n):
            w = rows[i]
            start = offsets[w]
            stop = offsets[w + 1]
            inv = inv_counts[w]
            for k in range(start, stop):
                p = pieces[k]
                if p >= lo and p < hi:
                    for j in range(d):
                        grad_Z[p, j] += g[i, j] * inv


_M32 = np.uint64(0xFFFFFFFF)


@njit(inline="always")
def _mix32(h):
    # The same 32-bit finaliser as base.dropout_keep (kept in uint64: Numba
    # would turn mixed signed/unsigned arithmetic into floats).
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & _M32
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & _M32
    h ^= h >> np.uint64(16)
    return h


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _dropout_scale(X, key, threshold, scale, out):
    """out = X * keep * scale with keep a counter-based hash of the element index: no mask is stored,
    the backward recomputes it. `out` may be `X` (in place)."""
    P, d = X.shape
    for p in prange(P):
        base = np.uint64(p) * np.uint64(d)
        for j in range(d):
            h = _mix32(((base + np.uint64(j)) & _M32) ^ key)
            out[p, j] = X[p, j] * scale if h >= threshold else 0.0


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _forward_word_dropout(E, Z, offsets, pieces, rows, inv_counts, out, key, threshold, scale):
    """The forward with the word-table dropout fused in (the mask bit of E[w, j] is the hash of w*d + j,
    exactly as `_dropout_scale` would give): saves writing and re-reading a dropped-out copy of E."""
    n, d = out.shape
    for i in prange(n):
        w = rows[i]
        start = offsets[w]
        stop = offsets[w + 1]
        inv = inv_counts[w]
        _sum_pieces(Z, pieces, start, stop, out, i)
        base = np.uint64(w) * np.uint64(d)
        for j in range(d):
            h = _mix32(((base + np.uint64(j)) & _M32) ^ key)
            e = E[w, j] * scale if h >= threshold else 0.0
            out[i, j] = e + out[i, j] * inv


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class NumbaSubwordEmbed(FusedBackend):
    name = "numba"

    def __init__(self):
        # Compile (or load from cache) now, so that a broken Numba shows up as "backend unavailable".
        E = np.zeros((2, 3), np.float32)
        offsets = np.array([0, 1, 3], np.int64)
        pieces = np.array([0, 1, 1], np.int64)
        rows = np.arange(2, dtype=np.int64)
        inv = np.array([1.0, 0.5], np.float32)
        _forward(E, E, offsets, pieces, rows, inv, np.empty_like(E))
        _grad_pieces(E, offsets, pieces, rows, inv, np.empty_like(E), 1)

    def dropout_into(self, X, drop, out):
        if X.dtype == torch.bfloat16:  # numpy has no bf16: the mask as a tensor
            return super().dropout_into(X, drop, out)
        key, threshold, scale = drop
        X = _np(X)
        _dropout_scale(X, np.uint64(key), np.uint64(threshold), X.dtype.type(scale), _np(out))

    def forward_word_dropout_into(self, E, Z, layout, ids, out, drop):
        rows = _np(layout.all_rows() if ids is None else ids)
        key, threshold, scale = drop
        inv = _np(layout.inv_counts(E.dtype))
        _forward_word_dropout(_np(E), _np(Z), _np(layout.offsets), _np(layout.pieces), rows, inv, _np(out),
                              np.uint64(key), np.uint64(threshold), inv.dtype.type(scale))

    def forward_into(self, E, Z, layout, ids, out):
        rows = _np(layout.all_rows() if ids is None else ids)
        inv = _np(layout.inv_counts(E.dtype))
        _forward(_np(E), _np(Z), _np(layout.offsets), _np(layout.pieces), rows, inv, _np(out))

    def grad_pieces_into(self, g, layout, ids, grad_Z):
        rows = _np(layout.all_rows() if ids is None else ids)
        parts = min(numba.get_num_threads(), grad_Z.shape[0]) or 1
        inv = _np(layout.inv_counts(g.dtype))
        _grad_pieces(_np(g), _np(layout.offsets), _np(layout.pieces), rows, inv, _np(grad_Z), parts)
