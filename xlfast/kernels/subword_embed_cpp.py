"""C++/OpenMP backend (csrc/cpu/subword_embed.cpp, built as xlfast._subword_embed_cpu when a compiler is there).

Same algorithm as the Numba backend, with the column sums blocked in registers and `omp simd` scatters.
"""
from __future__ import annotations

from xlfast import _subword_embed_cpu as _ext  # ImportError when not built: the backend is unavailable
from xlfast.kernels.subword_embed import FusedBackend
from xlfast.kernels.subword_embed_numba import NumbaSubwordEmbed


class CppSubwordEmbed(FusedBackend):
    name = "cpp"
    # Dropout comes from the Numba kernels (Numba is always installed; the same masks bit for bit): the
    # hash mask, and the forward with the word dropout fused in (measured 78 ms against 136 ms for a
    # separate masking pass plus the C++ forward, V=50k, d=500, one loaded run).
    dropout_into = NumbaSubwordEmbed.dropout_into
    forward_word_dropout_into = NumbaSubwordEmbed.forward_word_dropout_into

    def forward_into(self, E, Z, layout, ids, out):
        rows = layout.all_rows() if ids is None else ids
        _ext.forward(E.detach().numpy(), Z.detach().numpy(), layout.offsets.numpy(), layout.pieces.numpy(),
                     rows.numpy(), out.numpy())

    def grad_pieces_into(self, g, layout, ids, grad_Z):
        rows = layout.all_rows() if ids is None else ids
        _ext.grad_pieces(g.numpy(), layout.offsets.numpy(), layout.pieces.numpy(), rows.numpy(), grad_Z.numpy())


