"""`xlfast bench csls|embed|train|load`: kernels and training side by side with their baselines.

The measuring lives in `xlfast.bench.<name>` (pure: results and a report spec); each command here parses
its options, runs it under a progress bar and renders the report (`--json` writes the results).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from string import Formatter
from typing import Annotated, Optional

import typer

from xlfast.bench import csls, embed, load, train
from xlfast.cli.common import ThreadsOption, XlfastGroup, apply_threads, console, setup_logging, table, write_json
from xlfast.errors import XlfastError

app = typer.Typer(cls=XlfastGroup, no_args_is_help=True, rich_markup_mode="rich")


@contextmanager
def _progress(label: str):
    """A transient progress bar; yields the `progress(done, total, what)` callback the benchmarks take."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def tick(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield tick


def _cell(template: str, row: dict) -> str:
    fields = [name for _, name, _, _ in Formatter().parse(template) if name]
    return "—" if any(row.get(name) is None for name in fields) else template.format(**row)


def render(report: dict) -> None:
    """Print a benchmark's report: summary line, table, notes (see `xlfast.bench.csls.report`)."""
    console.print(report["summary"], highlight=False)
    headers = [header for header, _ in report["columns"]]
    rows = [[_cell(template, r) for _, template in report["columns"]] for r in report["rows"]]
    console.print(table(report["title"], headers, rows))
    console.print(report["notes"], highlight=False)


def csls_cmd(
    n: Annotated[int, typer.Option("--n", help="Source vectors (rows of X). Default 20000.")] = 20000,
    m: Annotated[Optional[int], typer.Option("--m", help="Target vectors (rows of Y). Default: same as --n.")] = None,
    dim: Annotated[int, typer.Option("--dim", help="Vector dimension. Default 300.")] = 300,
    k: Annotated[int, typer.Option("--k", help="Neighbours returned per row. Default 10.")] = 10,
    knn: Annotated[int, typer.Option("--knn", help="CSLS neighbourhood size K. Default 10.")] = 10,
    mem: Annotated[Optional[str], typer.Option("--mem", help="Tile memory budget, e.g. 256M. Default 128M.")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Alternated rounds per method. Default 2.")] = 2,
    backend: Annotated[Optional[list[str]], typer.Option(
        "--backend", help="Only these xlfast backends (repeatable). Default: every available one but torch.")] = None,
    no_peers: Annotated[bool, typer.Option("--no-peers", help="Skip faiss and MUSE-style. Default: run them.")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    approx: Annotated[bool, typer.Option(
        "--approx", help="Also time approximate search (faiss IVF, IVF-PQ) with a recall@k column. Default: off.")] = False,
    data: Annotated[str, typer.Option(
        "--data", help="gaussian or clustered (random centres; what IVF relies on). Default gaussian.")] = "gaussian",
    threads: ThreadsOption = None,
) -> None:
    """Top-k cosine/CSLS retrieval: every backend beside faiss and a MUSE-style baseline."""
    apply_threads(threads)
    setup_logging()
    with _progress("csls bench") as tick:
        res = csls.run_bench(n, m, dim, k, knn, mem, repeats, backend, peers=not no_peers, progress=tick,
                             approx=approx, data=data)
    render(csls.report(res))
    if json_path:
        write_json(json_path, res)


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise XlfastError(f"--{what}: expected comma-separated integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise XlfastError(f"--{what}: expected positive integers, got '{text}'")
    return values


def embed_cmd(
    vocab: Annotated[str, typer.Option("--vocab", help="Vocabulary sizes, comma-separated. "
                                       "Default 1000,50000,200000.")] = "1000,50000,200000",
    dim: Annotated[str, typer.Option("--dim", help="Embedding sizes, paired with --vocab in order (one value "
                                     "applies to all). Default 256,500,768.")] = "256,500,768",
    grid: Annotated[bool, typer.Option("--grid", help="Every vocab × every dim instead of pairs. Default off.")]
    = False,
    pieces: Annotated[int, typer.Option("--pieces", help="Pieces per word. Default 3.")] = 3,
    num_pieces: Annotated[int, typer.Option("--num-pieces", help="Rows of the piece table. Default 8000.")] = 8000,
    repeats: Annotated[int, typer.Option("--repeats", help="Alternated rounds per size. Default 3.")] = 3,
    backend: Annotated[Optional[list[str]], typer.Option(
        "--backend", help="Only these backends beside the reference (repeatable). Default: all that run.")] = None,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout on Z and on the table, as the model does: "
                                           "F.dropout for the reference, fused for the others. Default 0.")] = 0.0,
    no_simple: Annotated[bool, typer.Option("--no-simple", help="Skip the simple-Numba baseline. Default: run it.")]
    = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Fused subword-average lookup, forward+backward, against the torch reference."""
    apply_threads(threads)
    setup_logging()
    sizes = embed.sizes_of(_ints(vocab, "vocab"), _ints(dim, "dim"), grid)
    with _progress("embed bench") as tick:
        res = embed.run_bench(sizes, num_pieces, pieces, repeats, backend, not no_simple, dropout, progress=tick)
    render(embed.report(res))
    if json_path:
        write_json(json_path, res)


app.command("csls", help="Top-k cosine/CSLS retrieval: every backend beside faiss and a MUSE-style baseline.")(csls_cmd)
app.command("embed", help="Fused subword-average lookup, forward+backward, against the torch reference.")(embed_cmd)
app.command("train", help="One full training step on real corpora, per lookup backend.")(train.cli)
app.command("load", help="Speed beside other work: alone, beside a busy loop, beside a second xlfast, and all three.")(load.cli)
