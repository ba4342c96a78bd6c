"""`xlfast bench csls|embed|train|load`: kernels and training side by side with their baselines.

The measuring lives in `xlfast.bench.<name>` (train and load are pure: results and a report spec); the
commands here parse options, run a benchmark and render its report (`--json` writes the results).
"""
from __future__ import annotations

from pathlib import Path
from string import Formatter
from typing import Annotated, Optional

import typer

from xlfast.bench import csls, embed, load, train
from xlfast.cli.common import ThreadsOption, XlfastGroup, apply_threads, console, err_console, table, write_json

app = typer.Typer(cls=XlfastGroup, no_args_is_help=True, rich_markup_mode="rich")


def _cell(template: str, row: dict) -> str:
    fields = [name for _, name, _, _ in Formatter().parse(template) if name]
    return "—" if any(row.get(name) is None for name in fields) else template.format(**row)


def render(report: dict) -> None:
    """Print a benchmark's report: summary line, table, notes."""
    console.print(report["summary"], highlight=False)
    headers = [header for header, _ in report["columns"]]
    rows = [[_cell(template, r) for _, template in report["columns"]] for r in report["rows"]]
    console.print(table(report["title"], headers, rows))
    if report["notes"]:
        console.print(report["notes"], highlight=False)


def _among(choices: tuple[str, ...], what: str):
    """A callback that checks every value of a repeatable option against `choices` (a usage error if not)."""

    def check(values: Optional[list[str]]) -> Optional[list[str]]:
        unknown = [v for v in values or [] if v not in choices]
        if unknown:
            raise typer.BadParameter(f"unknown {what} {', '.join(unknown)} (choose from {', '.join(choices)})")
        return values

    return check


def train_cmd(
    corpus: Annotated[Optional[list[str]], typer.Option(callback=_among(train.CORPORA, "corpus"), help="Corpora: grk-it, shp-es (repeatable). Default: grk-it.")] = None,
    subword: Annotated[Optional[list[str]], typer.Option(callback=_among(("none", "ave", "cnn"), "subword mode"), help="Subword modes: none, ave, cnn (repeatable). Default: all.")] = None,
    backend: Annotated[Optional[list[str]], typer.Option(help="Lookup backends to compare (default: torch and the automatic choice).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per round.")] = 5,
    rounds: Annotated[int, typer.Option(min=1, help="Alternating rounds.")] = 3,
    threads: ThreadsOption = None,
    dim: Annotated[Optional[int], typer.Option(min=2, help="Model size (default: the low preset, 500).")] = None,
    bf16: Annotated[Optional[bool], typer.Option("--bf16/--no-bf16", help="bf16 autocast (default: as training).", show_default=False)] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write rows as JSON ('-' for stdout).")] = None,
) -> None:
    """One full training step on real corpora, per lookup backend, with the lookup's share of step time."""
    apply_threads(threads)
    rows = train.run_bench(corpus or ["grk-it"], subword or ["none", "ave", "cnn"], backend or ["torch", "auto"], steps,
                           rounds, threads, dim, bf16, log=lambda m: err_console.print(f"[yellow]{m}[/]"))
    render(train.report(rows, rounds))
    if json_out:
        write_json(json_out, rows)


def _configs(values: Optional[list[str]]) -> Optional[list[tuple[str, dict]]]:
    try:
        return [load.parse_config(v) for v in values] if values else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def load_cmd(
    kind: Annotated[Optional[list[str]], typer.Option("--kind", callback=_among(load.KINDS, "kind"), help="train (a grk-it step), csls (20k×20k×300 top-10), demo (a step on the 600-pair synthetic pair at dim 32). Default: train and csls.")] = None,
    config: Annotated[Optional[list[str]], typer.Option("--config", help="Thread configurations: before (runtime defaults, fixed threads), after (xlfast's), passive (OMP_WAIT_POLICY=PASSIVE), or NAME:KEY=VALUE,... Default: before and after.")] = None,
    scenario: Annotated[Optional[list[str]], typer.Option("--scenario", callback=_among(load.SCENARIOS, "scenario"), help="alone, busy, two, three (repeatable). Default: all; alone is always run.")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Alternated rounds.")] = 2,
    seconds: Annotated[Optional[float], typer.Option(min=0.1, help="Timed seconds per scenario (default: train 4, csls 8).")] = None,
    warm: Annotated[float, typer.Option(min=0, help="Seconds of untimed work first, with the competitors already running.")] = 1.0,
    dim: Annotated[Optional[int], typer.Option(min=2, help="Training model size (default: the low preset, 500).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="CSLS vectors per side.")] = 20000,
    csls_dim: Annotated[int, typer.Option(min=1, help="CSLS vector dimension.")] = 300,
    threads: Annotated[Optional[int], typer.Option(min=1, help="--threads of each worker (default: its CPU budget).")] = None,
    wait_quiet_s: Annotated[float, typer.Option("--wait-quiet", min=0, help="Before each scenario, wait up to this many seconds for other work on the machine to stop.")] = 0.0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON ('-' for stdout).")] = None,
) -> None:
    """Speed beside other work: alone, beside a busy loop, beside a second xlfast, and all three."""
    configs = _configs(config) or [load.parse_config(c) for c in ("before", "after")]
    scenarios = ["alone"] + [s for s in (scenario or load.SCENARIOS) if s != "alone"]
    secs = {"train": seconds or 4.0, "csls": seconds or 8.0, "demo": seconds or 3.0}
    res = load.run_bench(kind or ["train", "csls"], configs, scenarios, rounds, warm, secs, dim, n, csls_dim, threads,
                         log=lambda m: err_console.print(m, highlight=False), quiet=wait_quiet_s)
    render(load.report(res, rounds))
    if json_out:
        write_json(json_out, res)


app.command("csls", help="Top-k cosine/CSLS retrieval: every backend beside faiss and a MUSE-style baseline.")(csls.cli)
app.command("embed", help="Fused subword-average lookup, forward+backward, against the torch reference.")(embed.cli)
app.command("train", help="One full training step on real corpora, per lookup backend.")(train_cmd)
app.command("load", help="Speed beside other work: alone, beside a busy loop, beside a second xlfast, and all three.")(load_cmd)
