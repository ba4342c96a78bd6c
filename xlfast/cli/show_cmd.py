"""`xlfast show`: the similarity matrix of one sentence pair as a picture."""
from __future__ import annotations

from xlfast.cli.common import not_built


def show() -> None:
    """Draw the similarity matrix of one sentence pair with the chosen links marked."""
    not_built("xlfast show", 4)
