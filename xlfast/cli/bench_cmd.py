"""`xlfast bench csls|embed|linear-ce|train|load`: kernels and training side by side with their baselines.

The measuring lives in `xlfast.bench.<name>` (pure: results and a report spec); each command here parses
its options, runs it under a progress bar and renders the report (`--json` writes the results).
"""
from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from string import Formatter
from typing import Annotated, Optional

import torch
import typer

from xlfast.bench import csls, embed, linear_ce, load, train
from xlfast.cli.common import (ThreadsOption, XlfastGroup, apply_threads, console, err_console, setup_logging, table,
                               write_json)
from xlfast.errors import XlfastError
from xlfast.kernels.dispatch import bf16_native

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


def _positive_list(text: str, what: str, kind: type = int) -> list:
    """'1,2,3' -> [1, 2, 3]: comma-separated positive integers (kind=int) or numbers (kind=float)."""
    noun = "integers" if kind is int else "numbers"
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise XlfastError(f"--{what}: expected comma-separated {noun}, got '{text}'") from None
    if not values or min(values) <= 0:
        raise XlfastError(f"--{what}: expected positive {noun}, got '{text}'")
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
    training: Annotated[bool, typer.Option(
        "--training", help="Time each backend as a training step calls it (forward, zero_grad, backward into "
        ".grad), with page faults and system time per step. Default: the kernels through autograd.grad.")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Fused subword-average lookup, forward+backward, against the torch reference."""
    apply_threads(threads)
    setup_logging()
    sizes = embed.sizes_of(_positive_list(vocab, "vocab"), _positive_list(dim, "dim"), grid)
    with _progress("embed bench") as tick:
        res = embed.run_bench(sizes, num_pieces, pieces, repeats, backend, not no_simple, dropout, progress=tick,
                              training=training)
    render(embed.report(res))
    if json_path:
        write_json(json_path, res)


def linear_ce_cmd(
    rows: Annotated[int, typer.Option("--rows", help="Rows (decoder positions) per step. Default 4096.")] = 4096,
    vocab: Annotated[int, typer.Option("--vocab", help="Classes. Default 20000.")] = 20000,
    dim: Annotated[int, typer.Option("--dim", help="Row size. Default 500.")] = 500,
    repeats: Annotated[int, typer.Option("--repeats", help="Alternated rounds. Default 5.")] = 5,
    backend: Annotated[Optional[list[str]], typer.Option(
        "--backend", help="Only these fused backends (repeatable). Default: all that run on the CPU.")] = None,
    chunk_mb: Annotated[Optional[str], typer.Option(
        "--chunk-mb", help="Logits chunk sizes to compare, MB, comma-separated. Default: the built-in one.")] = None,
    ignored: Annotated[float, typer.Option("--ignored", help="Share of rows that are padding. Default 0.")] = 0.0,
    bf16: Annotated[Optional[bool], typer.Option(
        "--bf16/--no-bf16", help="bf16 rows under autocast, as training runs them. Default: on where the CPU has "
        "bf16 arithmetic (as `xlfast train`).", show_default=False)] = None,
    training: Annotated[bool, typer.Option(
        "--training", help="Keep freed memory in the heap as `xlfast train` does, so a step's large blocks "
        "are reused instead of faulted in afresh.")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Fused linear cross-entropy against F.linear + F.cross_entropy: time, kernel time, memory."""
    apply_threads(threads)
    setup_logging()
    if min(rows, vocab, dim, repeats) < 1 or not 0.0 <= ignored < 1.0:
        raise XlfastError("--rows, --vocab, --dim and --repeats must be positive, --ignored in [0, 1)")
    sizes = _positive_list(chunk_mb, "chunk-mb", float) if chunk_mb else None
    with _progress("linear-ce bench") as tick:
        res = linear_ce.run_bench(rows, vocab, dim, repeats, backend, sizes, ignored, progress=tick,
                                  bf16=bf16_native("cpu") if bf16 is None else bf16, training=training)
    render(linear_ce.report(res))
    if json_path:
        write_json(json_path, res)


def train_cmd(
    corpus: Annotated[Optional[list[str]], typer.Option(help="Corpora: grk-it, shp-es (repeatable).")] = None,
    subword: Annotated[Optional[list[str]], typer.Option(help="Subword modes: none, ave, cnn (repeatable).")] = None,
    backend: Annotated[Optional[list[str]], typer.Option(help="Lookup backends to compare (default: torch and the automatic choice).")] = None,
    steps: Annotated[int, typer.Option(help="Timed steps per round.")] = 5,
    rounds: Annotated[int, typer.Option(help="Alternating rounds.")] = 3,
    threads: ThreadsOption = None,
    dim: Annotated[Optional[int], typer.Option(help="Model size (default: the low preset, 500).")] = None,
    bf16: Annotated[Optional[bool], typer.Option("--bf16/--no-bf16", help="bf16 autocast (default: as training).", show_default=False)] = None,
    output: Annotated[Optional[list[str]], typer.Option(help="Output layers to compare: torch (logits materialised), fused, sampled (repeatable; default fused).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write rows as JSON ('-' for stdout).")] = None,
) -> None:
    """One full training step on real corpora, per lookup backend, with the lookup's share of step time."""
    apply_threads(threads)
    unknown = set(output or []) - set(train.OUTPUTS)
    if unknown:
        raise typer.BadParameter(f"unknown output layer(s) {sorted(unknown)} (torch, fused, sampled)")
    rows = train.run_bench(corpus or ["grk-it"], subword or ["none", "ave", "cnn"], backend or ["torch", "auto"], steps,
                           rounds, threads, dim, bf16, output or ["fused"], log=lambda m: console.print(f"[yellow]{m}[/]"))
    cols = ["corpus", "subword", "backend", "output", "bf16", "ms/step", "sys ms/step", "page faults/step", "s/epoch",
            "lookup share", "checkpoint (waited / written)", "eval s", "× faster than authors"]
    console.print(table(
        f"xlfast bench train (threads {torch.get_num_threads()}, median of {rounds} alternated rounds)",
        cols,
        [[r["corpus"], r["subword"], r["backend"], r["output"], r["bf16"], r["step_ms"], r["sys_ms"], r["page_faults"],
          r["epoch_s"], f"{100 * r['lookup_share']:.1f}%",
          f"{1000 * r['ckpt_blocking_s']:.0f} / {1000 * r['ckpt_write_s']:.0f} ms ({100 * r['ckpt_share']:.1f}% of an epoch, "
          f"{r['ckpt_mb']:.0f} MB)", r["eval_s"], r.get("vs_authors", "–")] for r in rows],
    ))
    if json_out:
        write_json(json_out, rows)


def load_cmd(
    kind: Annotated[Optional[list[str]], typer.Option("--kind", help="train (a grk-it step), csls (20k×20k×300 top-10), demo (a step on the 600-pair synthetic pair at dim 32). Default: train and csls.")] = None,
    config: Annotated[Optional[list[str]], typer.Option("--config", help="Thread configurations: before (runtime defaults, fixed threads), after (xlfast's), passive (OMP_WAIT_POLICY=PASSIVE), or NAME:KEY=VALUE,... Default: before and after.")] = None,
    scenario: Annotated[Optional[list[str]], typer.Option("--scenario", help="alone, busy, two, three (repeatable). Default: all; alone is always run.")] = None,
    rounds: Annotated[int, typer.Option(help="Alternated rounds.")] = 2,
    seconds: Annotated[Optional[float], typer.Option(help="Timed seconds per scenario (default: train 4, csls 8).")] = None,
    warm: Annotated[float, typer.Option(help="Seconds of untimed work first, with the competitors already running.")] = 1.0,
    dim: Annotated[Optional[int], typer.Option(help="Training model size (default: the low preset, 500).")] = None,
    n: Annotated[int, typer.Option("--n", help="CSLS vectors per side.")] = 20000,
    csls_dim: Annotated[int, typer.Option(help="CSLS vector dimension.")] = 300,
    threads: Annotated[Optional[int], typer.Option(help="--threads of each worker (default: its CPU budget).")] = None,
    wait_quiet_s: Annotated[float, typer.Option("--wait-quiet", help="Before each scenario, wait up to this many seconds for other work on the machine to stop.")] = 0.0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON ('-' for stdout).")] = None,
) -> None:
    """Speed beside other work: alone, beside a busy loop, beside a second xlfast, and all three."""
    kinds = kind or ["train", "csls"]
    for k in kinds:
        if k not in load.KINDS:
            raise typer.BadParameter(f"unknown kind {k!r} ({', '.join(load.KINDS)})")
    scen = ["alone"] + [s for s in (scenario or load.SCENARIOS) if s != "alone"]
    for s in scen:
        if s not in load.SCENARIOS:
            raise typer.BadParameter(f"unknown scenario {s!r} ({', '.join(load.SCENARIOS)})")
    if threads is not None and threads < 1:
        raise typer.BadParameter("--threads must be at least 1")
    cfgs = [load.parse_config(c) for c in (config or ["before", "after"])]
    # SIGTERM (and SIGINT where a shell started us in the background with it ignored) must still run the
    # finally blocks that stop the workers and busy loops
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    secs = {"train": seconds or 4.0, "csls": seconds or 8.0, "demo": seconds or 3.0}
    res = load.run_bench(kinds, cfgs, scen, rounds, warm, secs, dim, n, csls_dim, threads,
                         log=lambda m: err_console.print(m, highlight=False), quiet=wait_quiet_s)
    cols = ["work", "config", "beside", "ms per unit", "× alone", "s/epoch", "rounds (ms)", "background", "threads used"]
    console.print(table(
        f"xlfast bench load ({res['online_cpus']} CPUs, budget {res['cpu_budget']}; median of {rounds} alternated rounds)",
        cols,
        [[r["kind"], r["config"], load.SCENARIO_HELP[r["scenario"]], r["ms_per_unit"],
          "–" if r["vs_alone"] is None else f"{r['vs_alone']:.2f}", r.get("epoch_s", "–"), " ".join(f"{x:.0f}" for x in r["rounds"]),
          f"{r['background']:.1f}", _threads_used(r)] for r in res["rows"]],
    ))
    if any(r["background"] >= 0.3 for r in res["rows"]):
        err_console.print("[yellow]other work ran on this machine during some scenarios (background ≥ 0.3 runnable "
                          "tasks besides the benchmark): those figures are not clean; see --wait-quiet[/]")
    if json_out:
        write_json(json_out, res)


def _threads_used(row: dict) -> str:
    """Thread counts the timed units ran with, over all rounds and workers: '2', '1', '1-2'."""
    seen = sorted({int(t) for rnd in row["threads_used"] for w in rnd for t in w})
    return "-".join(str(t) for t in (seen[0], seen[-1])) if len(seen) > 1 else (str(seen[0]) if seen else "–")


app.command("csls", help="Top-k cosine/CSLS retrieval: every backend beside faiss and a MUSE-style baseline.")(csls_cmd)
app.command("embed", help="Fused subword-average lookup, forward+backward, against the torch reference.")(embed_cmd)
app.command("linear-ce", help="Fused output layer (projection + cross-entropy) against F.linear + F.cross_entropy.")(linear_ce_cmd)
app.command("train", help="One full training step on real corpora, per lookup backend and output layer.")(train_cmd)
app.command("load", help="Speed beside other work: alone, beside a busy loop, beside a second xlfast, and all three.")(load_cmd)
