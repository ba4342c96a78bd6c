"""`xlfast bench csls|embed|train`: kernels and training side by side with their baselines."""
from __future__ import annotations

import typer

from xlfast.cli.common import XlfastGroup, not_built

app = typer.Typer(cls=XlfastGroup, no_args_is_help=True, rich_markup_mode="rich")


@app.command("csls")
def csls() -> None:
    """Top-k cosine/CSLS retrieval: every backend beside faiss and a MUSE-style baseline."""
    not_built("xlfast bench csls", 5)


@app.command("embed")
def embed() -> None:
    """Fused subword-average embedding lookup, forward and backward, against the torch reference."""
    not_built("xlfast bench embed", 6)


@app.command("train")
def train() -> None:
    """One full training step on real corpora, per lookup backend."""
    not_built("xlfast bench train", 6)
