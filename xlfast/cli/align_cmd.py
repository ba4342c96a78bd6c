"""`xlfast align`: word alignments from a trained run."""
from __future__ import annotations

from xlfast.cli.common import not_built


def align() -> None:
    """Align the words of parallel sentences with a trained run (Pharaoh i-j output)."""
    not_built("xlfast align", 4)
