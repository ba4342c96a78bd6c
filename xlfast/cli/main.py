"""The `xlfast` command. Each command lives in its own module; this file only assembles them."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from xlfast import __version__
from xlfast.cli import align_cmd, bench_cmd, demo_cmd, eval_cmd, map_cmd, mine_cmd, nn_cmd, show_cmd, train_cmd
from xlfast.cli.common import XlfastCommand, XlfastGroup, console, setup_logging

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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail (backend choices, thread counts).")] = False,
) -> None:
    setup_logging(verbose)


app.command("train", cls=XlfastCommand)(train_cmd.train)
app.command("align", cls=XlfastCommand)(align_cmd.align)
app.add_typer(eval_cmd.app, name="eval", help="Score alignments (AER) and lexicons (BLI).")
app.command("mine", cls=XlfastCommand)(mine_cmd.mine)
app.command("map", cls=XlfastCommand)(map_cmd.map_)
app.add_typer(bench_cmd.app, name="bench", help="Benchmarks: kernels and training, side by side with peers.")
app.command("nn", cls=XlfastCommand)(nn_cmd.nn)
app.command("show", cls=XlfastCommand)(show_cmd.show)
app.command("demo", cls=XlfastCommand)(demo_cmd.demo)


if __name__ == "__main__":  # pragma: no cover
    app()
