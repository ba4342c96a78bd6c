"""The subword_embed 'cpp' backend: csrc/cpu/subword_embed.cpp, built as xlfast._subword_embed_cpu when a
compiler is there. Same algorithm as the Numba backend, with the column sums blocked in registers and
`omp simd` scatters; the dropout masks are hashed in 32-bit lanes (vectorised: 2x faster than the Numba
kernel, whose 64-bit products are not), and the word-table and output masks applied inside the forward while
each row is written.
"""
from __future__ import annotations

import torch

from xlfast import _subword_embed_cpu as _ext  # ImportError when not built: the backend is unavailable
from xlfast.kernels.subword_embed.base import FusedBackend


class CppSubwordEmbed(FusedBackend):
    name = "cpp"

    def dropout_into(self, X, drop, out):
        if X.dtype == torch.bfloat16:  # bf16 activations under autocast; numpy has no bf16, the bits travel as int16
            _ext.dropout_bf16(X.detach().view(torch.int16).numpy(), drop, out.view(torch.int16).numpy())
        else:
            _ext.dropout(X.detach().numpy(), drop, out.numpy())

    def forward_dropout_into(self, E, Z, layout, ids, out, drop_words, drop_out):
        rows = layout.all_rows() if ids is None else ids
        _ext.forward(E.detach().numpy(), Z.detach().numpy(), layout.offsets.numpy(), layout.pieces.numpy(),
                     rows.numpy(), out.numpy(), drop_words, drop_out)

    def forward_into(self, E, Z, layout, ids, out):
        self.forward_dropout_into(E, Z, layout, ids, out, None, None)

    def grad_pieces_into(self, g, layout, ids, grad_Z):
        rows = layout.all_rows() if ids is None else ids
        _ext.grad_pieces(g.numpy(), layout.offsets.numpy(), layout.pieces.numpy(), rows.numpy(), grad_Z.numpy())
