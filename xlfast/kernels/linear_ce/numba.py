"""Numba row pass of the fused linear cross-entropy (always installed; the C++ pass is faster because
its exponential is vectorised — Numba has no vector exp without SVML)."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from xlfast.kernels.linear_ce.base import RowKernel


@njit(parallel=True, fastmath=True, boundscheck=False, cache=True)
def _rows(logits, target, bias, has_bias, loss, grad):
    C, V = logits.shape
    for r in prange(C):
        row = logits[r]
        if has_bias:
            for j in range(V):
                row[j] += bias[j]
        m = np.float32(-np.inf)
        for j in range(V):
            m = max(m, row[j])
        picked = row[target[r]]
        s = 0.0  # float64: a float32 sum over 20k terms loses ~1e-5 of the partition function
        if grad:
            for j in range(V):
                e = math.exp(row[j] - m)
                row[j] = e
                s += e
        else:
            for j in range(V):
                s += math.exp(row[j] - m)
        loss[r] = m + math.log(s) - picked
        if grad:
            inv = np.float32(1.0 / s)
            for j in range(V):
                row[j] *= inv
            row[target[r]] -= 1.0


_NO_BIAS = np.zeros(1, dtype=np.float32)


class NumbaRows(RowKernel):
    name = "numba"

    def rows_(self, logits, target, bias, loss, grad):
        b = _NO_BIAS if bias is None else bias.detach().numpy()
        _rows(logits.numpy(), target.numpy(), b, bias is not None, loss.numpy(), grad)
