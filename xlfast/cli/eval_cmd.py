"""`xlfast eval aer|bli`: score alignments and bilingual lexicons."""
from __future__ import annotations

import typer

from xlfast.cli.common import XlfastGroup, not_built

app = typer.Typer(cls=XlfastGroup, no_args_is_help=True, rich_markup_mode="rich")


@app.command("aer")
def aer() -> None:
    """Precision, recall and AER of predicted alignments against gold sure/possible links."""
    not_built("xlfast eval aer", 4)


@app.command("bli")
def bli() -> None:
    """Bilingual lexicon induction: P@1/P@5/P@10 with CSLS and nearest neighbour."""
    not_built("xlfast eval bli", 4)
