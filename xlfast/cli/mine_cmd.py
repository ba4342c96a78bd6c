"""`xlfast mine`: translation pairs from two monolingual corpora."""
from __future__ import annotations

from xlfast.cli.common import not_built


def mine() -> None:
    """Mine word pairs or parallel sentences from two monolingual corpora."""
    not_built("xlfast mine", 7)
