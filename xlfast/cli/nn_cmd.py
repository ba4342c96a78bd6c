"""`xlfast nn`: nearest neighbours of a word in another language."""
from __future__ import annotations

from xlfast.cli.common import not_built


def nn() -> None:
    """Show the nearest words of WORD in another language."""
    not_built("xlfast nn", 4)
