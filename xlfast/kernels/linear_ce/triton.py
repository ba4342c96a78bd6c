"""Triton row pass of the fused linear cross-entropy (GPU; tested on the CPU with TRITON_INTERPRET=1).

One program per row: a first sweep over the classes keeps the running maximum and the rescaled sum
(online log-sum-exp, fp32 whatever the logits' dtype), a second sweep writes softmax − onehot in place.
The GEMMs around it are cuBLAS calls made by the shared chunked driver.
"""
from __future__ import annotations

import triton
import triton.language as tl

from xlfast.kernels.linear_ce.base import RowKernel


@triton.jit
def _linear_ce_rows_kernel(logits, target, bias, loss, V, HAS_BIAS: tl.constexpr, GRAD: tl.constexpr,
                           BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    row = logits + r * V
    t = tl.load(target + r)
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        keep = cols < V
        x = tl.load(row + cols, mask=keep, other=float("-inf")).to(tl.float32)
        if HAS_BIAS:
            x += tl.load(bias + cols, mask=keep, other=0.0).to(tl.float32)
        m_new = tl.maximum(m, x)
        # lanes past V see only -inf: shift them by 0, not by -inf (exp(-inf - -inf) would be NaN)
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - shift) + tl.exp(x - shift)
        m = m_new
    m_row = tl.max(m, 0)
    lse = m_row + tl.log(tl.sum(s * tl.exp(m - m_row), 0))
    picked = tl.load(row + t).to(tl.float32)
    if HAS_BIAS:
        picked += tl.load(bias + t).to(tl.float32)
    tl.store(loss + r, lse - picked)
    if GRAD:
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            keep = cols < V
            x = tl.load(row + cols, mask=keep, other=0.0).to(tl.float32)
            if HAS_BIAS:
                x += tl.load(bias + cols, mask=keep, other=0.0).to(tl.float32)
            g = tl.exp(x - lse) - tl.where(cols == t, 1.0, 0.0)
            tl.store(row + cols, g.to(logits.dtype.element_ty), mask=keep)


class TritonRows(RowKernel):
    name = "triton"

    def rows_(self, logits, target, bias, loss, grad):
        C, V = logits.shape
        if C == 0:
            return
        block = min(4096, triton.next_power_of_2(V))
        _linear_ce_rows_kernel[(C,)](logits, target, logits if bias is None else bias, loss, V,
                                     HAS_BIAS=bias is not None, GRAD=grad, BLOCK=block)
