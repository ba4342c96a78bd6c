"""The csls 'triton' backend: a fused tile product + running top-k kernel.

Each program owns BLOCK_M rows of X and streams Y in BLOCK_N-row tiles: the tile of X·Yᵀ is built
with tl.dot over BLOCK_D slices (fp32, "ieee" precision: no TF32 rounding), transformed to the metric's
score, and merged into a [BLOCK_M, KP] register buffer by K rounds of "take the larger of the tile's
and the buffer's maximum" (ties go to the buffer, i.e. the earlier index, like the CPU kernels). Nothing
of size N×M is ever written. Column statistics (r_S, reverse top-k) run the same kernel with X and Y
swapped — two launches instead of the CPU backends' single fused pass.

Runs on CUDA, or on the CPU under TRITON_INTERPRET=1 (tests only: the interpreter is slow).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from xlfast.kernels.csls.base import MARGIN_EPS, Mode
from xlfast.kernels.csls.device import RowTopkBackend

_CSLS: tl.constexpr = tl.constexpr(int(Mode.CSLS))
_MARGIN: tl.constexpr = tl.constexpr(int(Mode.MARGIN))
_MARGIN_EPS: tl.constexpr = tl.constexpr(MARGIN_EPS)


@triton.jit
def _topk_rows_kernel(
    X, Y, out_v, out_i, rterm, cterm, N, M, D,
    K: tl.constexpr, KP: tl.constexpr, MODE: tl.constexpr, EXCLUDE_SELF: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    slots = tl.arange(0, KP)
    tile_cols = tl.arange(0, BLOCK_N)
    best_v = tl.full([BLOCK_M, KP], float("-inf"), tl.float32)
    best_i = tl.full([BLOCK_M, KP], -1, tl.int64)
    a = tl.load(rterm + rows, mask=row_ok, other=0.0)
    for j0 in range(0, M, BLOCK_N):
        cols = j0 + tile_cols
        col_ok = cols < M
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + tl.arange(0, BLOCK_D)
            d_ok = dd < D
            x = tl.load(X + rows[:, None] * D + dd[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            y = tl.load(Y + cols[:, None] * D + dd[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)
            acc += tl.dot(x, tl.trans(y), input_precision="ieee")
        if MODE == _CSLS:
            b = tl.load(cterm + cols, mask=col_ok, other=0.0)
            acc = 2.0 * acc - a[:, None] - b[None, :]
        elif MODE == _MARGIN:
            b = tl.load(cterm + cols, mask=col_ok, other=0.0)
            acc = 2.0 * acc / tl.maximum(a[:, None] + b[None, :], _MARGIN_EPS)
        keep = row_ok[:, None] & col_ok[None, :]
        if EXCLUDE_SELF:
            keep = keep & (rows[:, None] != cols[None, :])
        s = tl.where(keep, acc, float("-inf"))
        new_v = tl.full([BLOCK_M, KP], float("-inf"), tl.float32)
        new_i = tl.full([BLOCK_M, KP], -1, tl.int64)
        for r in tl.static_range(K):
            top_s = tl.max(s, 1)
            top_b = tl.max(best_v, 1)
            arg_s = tl.argmax(s, 1)
            arg_b = tl.argmax(best_v, 1)
            from_tile = top_s > top_b
            idx_b = tl.sum(tl.where(slots[None, :] == arg_b[:, None], best_i, 0), 1)
            idx = tl.where(from_tile, (j0 + arg_s).to(tl.int64), idx_b)
            new_v = tl.where(slots[None, :] == r, tl.where(from_tile, top_s, top_b)[:, None], new_v)
            new_i = tl.where(slots[None, :] == r, idx[:, None], new_i)
            s = tl.where(from_tile[:, None] & (tile_cols[None, :] == arg_s[:, None]), float("-inf"), s)
            best_v = tl.where((~from_tile)[:, None] & (slots[None, :] == arg_b[:, None]), float("-inf"), best_v)
        best_v = new_v
        best_i = new_i
    out_mask = row_ok[:, None] & (slots[None, :] < K)
    tl.store(out_v + rows[:, None] * K + slots[None, :], best_v, mask=out_mask)
    tl.store(out_i + rows[:, None] * K + slots[None, :], best_i, mask=out_mask)


class TritonBackend(RowTopkBackend):
    name = "triton"

    def __init__(self, device: str):
        self.device = torch.device(device)
        interpret = os.environ.get("TRITON_INTERPRET") == "1"
        # the interpreter runs every program in Python: small blocks keep tests quick
        self.blocks = (16, 32, 32) if interpret else (64, 64, 32)

    def _launch(self, At, Bt, vals, idx, rt, ct, k, mode, exclude_self):
        n, m, d = At.shape[0], Bt.shape[0], At.shape[1]
        bm, bn, bd = self.blocks
        kp = max(2, triton.next_power_of_2(k))
        _topk_rows_kernel[(triton.cdiv(n, bm),)](
            At, Bt, vals, idx, rt, ct, n, m, d,
            K=k, KP=kp, MODE=mode, EXCLUDE_SELF=bool(exclude_self), BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd,
        )


def load() -> TritonBackend:
    if torch.cuda.is_available():
        return TritonBackend("cuda")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return TritonBackend("cpu")
    raise RuntimeError("triton needs a CUDA GPU (or TRITON_INTERPRET=1 for testing on the CPU)")
