"""`xlfast bench csls|embed|linear-ce|train|load`: kernels and training side by side with their baselines.

Each benchmark lives in its own module under `xlfast.bench`; this file only names them.
"""
from __future__ import annotations

import typer

from xlfast.bench import csls, embed, linear_ce, load, train
from xlfast.cli.common import XlfastGroup

app = typer.Typer(cls=XlfastGroup, no_args_is_help=True, rich_markup_mode="rich")
app.command("csls", help="Top-k cosine/CSLS retrieval: every backend beside faiss and a MUSE-style baseline.")(csls.cli)
app.command("embed", help="Fused subword-average lookup, forward+backward, against the torch reference.")(embed.cli)
app.command("linear-ce", help="Fused output layer (projection + cross-entropy) against F.linear + F.cross_entropy.")(linear_ce.cli)
app.command("train", help="One full training step on real corpora, per lookup backend.")(train.cli)
app.command("load", help="Speed beside other work: alone, beside a busy loop, beside a second xlfast, and all three.")(load.cli)
