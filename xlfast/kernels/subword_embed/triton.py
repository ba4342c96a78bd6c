"""The subword_embed 'triton' backend: the fused subword-average lookup on a GPU (tested on the CPU with
TRITON_INTERPRET=1).

Forward: one program per (row, block of columns) sums the word's piece rows in registers and writes
`E[w] + sum / count` once. Backward (grad_Z): the same grid scatters `g[i] / count` into the piece rows
with atomic adds — on a GPU atomics into a table this small are cheap, and there is no transposed CSR.
"""
from __future__ import annotations

import triton
import triton.language as tl

from xlfast.kernels.subword_embed.base import FusedBackend


@triton.jit
def _program_word(offsets, rows, d, BLOCK_D: tl.constexpr):
    """This program's output row i, its columns (and which are inside d), its word w and w's pieces' span."""
    i = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    w = tl.load(rows + i)
    return i, cols, cols < d, w, tl.load(offsets + w), tl.load(offsets + w + 1)


@triton.jit
def _subword_embed_forward_kernel(E, Z, offsets, pieces, rows, out, d, BLOCK_D: tl.constexpr):
    i, cols, keep, w, start, stop = _program_word(offsets, rows, d, BLOCK_D)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for k in range(start, stop):
        p = tl.load(pieces + k)
        acc += tl.load(Z + p * d + cols, mask=keep, other=0.0).to(tl.float32)
    e = tl.load(E + w * d + cols, mask=keep, other=0.0).to(tl.float32)
    res = e + acc / (stop - start).to(tl.float32)
    tl.store(out + i * d + cols, res.to(out.dtype.element_ty), mask=keep)


@triton.jit
def _subword_embed_grad_pieces_kernel(g, offsets, pieces, rows, grad_Z, d, BLOCK_D: tl.constexpr):
    i, cols, keep, w, start, stop = _program_word(offsets, rows, d, BLOCK_D)
    share = tl.load(g + i * d + cols, mask=keep, other=0.0) / (stop - start).to(g.dtype.element_ty)
    for k in range(start, stop):
        p = tl.load(pieces + k)
        tl.atomic_add(grad_Z + p * d + cols, share, mask=keep)


def _block(d: int) -> int:
    return min(1024, triton.next_power_of_2(d))


class TritonSubwordEmbed(FusedBackend):
    name = "triton"

    def forward_into(self, E, Z, layout, ids, out):
        rows = layout.all_rows() if ids is None else ids
        n, d = out.shape
        if n == 0:
            return
        block = _block(d)
        _subword_embed_forward_kernel[(n, triton.cdiv(d, block))](E, Z, layout.offsets, layout.pieces, rows, out,
                                                                 d, BLOCK_D=block)

    def grad_pieces_into(self, g, layout, ids, grad_Z):
        rows = layout.all_rows() if ids is None else ids
        grad_Z.zero_()
        n, d = g.shape
        if n == 0:
            return
        block = _block(d)
        _subword_embed_grad_pieces_kernel[(n, triton.cdiv(d, block))](g, layout.offsets, layout.pieces, rows,
                                                                     grad_Z, d, BLOCK_D=block)
