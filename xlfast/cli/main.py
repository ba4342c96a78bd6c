"""The `xlfast` command. Each command lives in its own module; this file only assembles them."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from xlfast import __version__
from xlfast.cli import align_cmd, bench_cmd, demo_cmd, eval_cmd, mine_cmd, nn_cmd, show_cmd, train_cmd
from xlfast.cli import map_cmd, sentence_cmd
from xlfast.cli.common import XlfastGroup, console, setup_logging

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    cls=XlfastGroup,
    name="xlfast",
    help="Cross-lingual word embeddings, word alignment and bitext mining for low-resource languages.",
    rich_markup_mode="rich",
    context_settings=CONTEXT,
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"xlfast {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail (backend choices, timings).")] = False,
) -> None:
    setup_logging(verbose)


app.command("train")(train_cmd.train)
app.command("train-sent")(sentence_cmd.train_sent)
app.command("align")(align_cmd.align)
eval_cmd.app.command("mine")(sentence_cmd.eval_mine)
eval_cmd.app.command("retrieval")(sentence_cmd.eval_retrieval)
app.add_typer(eval_cmd.app, name="eval", help="Score alignments (AER), lexicons (BLI), mined pairs and retrieval.")
app.command("mine")(mine_cmd.mine)
app.command("map")(map_cmd.map_)
app.add_typer(bench_cmd.app, name="bench", help="Benchmarks: kernels and training, side by side with peers.")
app.command("nn")(nn_cmd.nn)
app.command("show")(show_cmd.show)
app.command("demo")(demo_cmd.demo)


if __name__ == "__main__":  # pragma: no cover
    app()
