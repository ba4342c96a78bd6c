"""`xlfast bench csls|embed|train|load`: kernels and training side by side with their baselines.

The measuring lives in `xlfast.bench.<name>` (pure: it returns results, and for train and load a report
spec); the commands here parse options, run a benchmark and render its report (`--json` writes the results).
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from string import Formatter
from typing import Annotated, Optional

import typer
from rich.progress import Progress

from xlfast.bench import csls, embed, load, train
from xlfast.cli.common import (ThreadsOption, XlfastGroup, apply_threads, console, err_console, setup_logging, table,
                               write_json)
from xlfast.errors import XlfastError

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
    # SIGTERM (and SIGINT where a shell started us in the background with it ignored) must still run the
    # finally blocks that stop the workers and busy loops
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    secs = {"train": seconds or 4.0, "csls": seconds or 8.0, "demo": seconds or 3.0}
    res = load.run_bench(kind or ["train", "csls"], configs, scenarios, rounds, warm, secs, dim, n, csls_dim, threads,
                         log=lambda m: err_console.print(m, highlight=False), quiet=wait_quiet_s)
    render(load.report(res, rounds))
    if json_out:
        write_json(json_out, res)



# ------------------------------------------------------------------------------------------------ csls
def csls_report(res: dict) -> None:
    p, env = res["cpu_state"], res["env"]
    console.print(
        f"CPU state: [bold]{p['state']}[/] (torch GEMM {p['gflops_1']:.0f} GFLOP/s at 1 thread, "
        f"×{p['speedup']:.2f} at {p['threads']}); BLAS: OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}, "
        f"OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}; GEMM peak this run: "
        + ", ".join(f"{k} {v:.0f}" for k, v in res["gemm_peak_gflops"].items()) + " GFLOP/s",
        highlight=False,
    )
    cols = ["method", "metric", "pass", "sec", "GF/s", "%peak", "+MiB", "/faiss", "xMUSE", "top1=", "topk="]
    show_recall = any(r["method"].startswith("approx-") for r in res["results"])
    if show_recall:
        cols.append(f"rec@{res['k']}")
    rows = [[r["method"], r["metric"], r["passes"], r["seconds"], r["gflops"], f"{100 * r['frac_peak']:.0f}",
             "n/a" if r["extra_mib"] is None else f"{r['extra_mib']:.0f}",
             "—" if r["vs_faiss_cos"] is None else f"{r['vs_faiss_cos']:.2f}",
             "—" if r["speedup_vs_muse"] is None else f"{r['speedup_vs_muse']:.2f}",
             f"{100 * r['top1_agree']:.1f}%", f"{100 * r['topk_agree']:.1f}%"]
            + ([f"{r['recall']:.4f}"] if show_recall else []) for r in res["results"]]
    tile = res["tile"]
    console.print(table(f"top-{res['k']} retrieval, {res['n']:,}×{res['m']:,}×{res['dim']} (K={res['knn']}, "
                        f"tile {tile[0]}×{tile[1]}, median of {res['repeats']} alternated rounds)", cols, rows))
    console.print("sec: median seconds; GF/s: GEMM work done (passes × 2NMd) per second; %peak: of the best "
                  "GEMM rate above; +MiB: peak extra resident memory; /faiss: time ÷ faiss plain kNN time; "
                  "xMUSE: speed-up over MUSE-style, same metric; top1= / topk=: rows whose top-1 / whole top-k index "
                  "list equals the first backend's (fp32); +bf16: bf16 tiles, exact re-scoring, certified "
                  "(uncertified rows recomputed in fp32)."
                  + (f" rec@k: recall@k of the index lists vs the first backend (fp32, exact); approx-*: faiss "
                     f"IVF / IVF-PQ (index build included; nprobe {csls.C.APPROX_NPROBE['ivf']})." if show_recall else ""),
                  highlight=False)


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
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("csls bench")
        res = csls.run_bench(n, m, dim, k, knn, mem, repeats, backend, peers=not no_peers, approx=approx, data=data,
                             progress=lambda done, total, label: bar.update(task, completed=done, total=total,
                                                                            description=label))
    csls_report(res)
    if json_path:
        write_json(json_path, res)


# ----------------------------------------------------------------------------------------------- embed
def embed_report(res: dict) -> None:
    s = res["cpu_state"]
    console.print(f"CPU state: {s['state']} (GEMM 2-thread/1-thread ×{s['speedup']:.2f}); P={res['num_pieces']} "
                  f"pieces, {res['pieces_per_word']} per word, dropout {res['dropout']}, median of {res['repeats']} "
                  "alternated rounds",
                  highlight=False)
    rows = [[f"{r['vocab']}×{r['dim']}", r["backend"], r["fwd_ms"], r["bwd_ms"], r["speedup"],
             f"{r['fwd_gbs']:.1f} ({100 * r['fwd_of_copy']:.0f}%)", f"{r['bwd_gbs']:.1f} ({100 * r['bwd_of_copy']:.0f}%)",
             r["copy_gbs"], f"{r['max_abs_err']:.1e}"] for r in res["results"]]
    console.print(table("subword-average lookup, fp32", ["V×d", "backend", "fwd ms", "bwd ms", "×torch",
                                                         "fwd GB/s (of copy)", "bwd GB/s (of copy)", "copy GB/s",
                                                         "max|err|"], rows))
    console.print("numba-simple: the issue's baseline (row sum + finishing pass; transposed-CSR backward). "
                  "×torch: reference fwd+bwd time ÷ this one. GB/s: the least bytes the pass must move (rows "
                  "read/written once, piece table once) per second; copy GB/s: a copy of E into a reused "
                  "buffer (read+write) in the same rounds.", highlight=False)


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
    vs, ds = _ints(vocab, "vocab"), _ints(dim, "dim")
    if grid:
        sizes = [(v, d) for v in vs for d in ds]
    elif len(ds) == 1 or len(vs) == 1:
        sizes = [(v, d) for v in vs for d in ds]
    elif len(vs) == len(ds):
        sizes = list(zip(vs, ds))
    else:
        raise XlfastError("--vocab and --dim need the same number of values (or one of them a single value), "
                          "or --grid")
    if not 0.0 <= dropout < 1.0:
        raise XlfastError(f"--dropout must lie in [0, 1), got {dropout}")
    if pieces < 1 or num_pieces < 1 or repeats < 1:
        raise XlfastError("--pieces, --num-pieces and --repeats must be positive")
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("embed bench", total=len(sizes) * repeats)
        res = embed.run_bench(sizes, num_pieces, pieces, repeats, backend, not no_simple, dropout,
                        progress=lambda: bar.advance(task))
    embed_report(res)
    if json_path:
        write_json(json_path, res)


app.command("csls", help="Top-k cosine/CSLS retrieval: every backend beside faiss and a MUSE-style baseline.")(csls_cmd)
app.command("embed", help="Fused subword-average lookup, forward+backward, against the torch reference.")(embed_cmd)
app.command("train", help="One full training step on real corpora, per lookup backend.")(train_cmd)
app.command("load", help="Speed beside other work: alone, beside a busy loop, beside a second xlfast, and all three.")(load_cmd)
