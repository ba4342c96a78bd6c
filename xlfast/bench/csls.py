"""`xlfast bench csls`."""
from __future__ import annotations

from xlfast.cli.common import not_built


def cli() -> None:
    """Not built yet."""
    not_built("xlfast bench csls", 5)
