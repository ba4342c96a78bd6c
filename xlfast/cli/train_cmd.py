"""`xlfast train`: learn cross-lingual embeddings from parallel corpora."""
from __future__ import annotations

from xlfast.cli.common import not_built


def train() -> None:
    """Train the cross-lingual encoder-decoder on one or more parallel corpora."""
    not_built("xlfast train", 3)
