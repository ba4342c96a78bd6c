"""The plain-torch definition of the subword-average lookup — what every other backend is tested against —
and the 'torch' backend built on it (any device; autograd does the backward)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xlfast.kernels.subword_embed.base import PieceLayout, SubwordEmbedBackend, dropout_keep


def reference_subword_embed(E: torch.Tensor, Z: torch.Tensor, layout: PieceLayout,
                            ids: torch.Tensor | None = None) -> torch.Tensor:
    """`E[w] + mean(Z[pieces(w)])` with `embedding_bag(mode="mean")`: every word, or the rows `ids`."""
    if ids is None:
        offsets, pieces, rows = layout.offsets, layout.pieces, E
    else:
        offsets, pieces = layout.gather(ids)
        rows = E.index_select(0, ids)
    return rows + F.embedding_bag(pieces, Z, offsets, mode="mean", include_last_offset=True)


def _dropped(X: torch.Tensor, drop) -> torch.Tensor:
    return X if drop is None else X * dropout_keep(tuple(X.shape), drop, X.device, X.dtype)


class TorchReference(SubwordEmbedBackend):
    """The reference with the hashed dropout masks applied as tensors."""

    name = "torch"

    def __call__(self, E, Z, layout, ids, drop=None, drop_words=None, drop_out=None):
        return _dropped(reference_subword_embed(_dropped(E, drop_words), _dropped(Z, drop), layout, ids), drop_out)

    def table_dropout(self, X, drop):
        return _dropped(X, drop)
