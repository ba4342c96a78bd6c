"""Time to quality: the default `xlfast train` command as a user runs it, timed from process start to the
selected epoch, and the selected model's quality.

    .venv/bin/python benchmarks/time_to_quality.py --corpus grk-it
    .venv/bin/python benchmarks/time_to_quality.py --corpus shp-es --epochs 5 --softmax sampled --batch-size 64

Quality: grk-it 1−AER against the gold alignments (`xlfast align` + `xlfast eval aer`); shp-es BLI P@1
(CSLS) on `bli.dev.tsv` (`xlfast eval bli`); ne-en (dev + devtest, no gold dictionary) the run's own model
selection score, BLI P@1 on the Dice pseudo-dictionary (Wada et al. 2021, §4).

From the run's log.jsonl: the wall time to the selected evaluation (setup — tokenising, SentencePiece,
vocabularies — plus the training loop up to that evaluation, which may be within an epoch), the epochs
trained by then (fractional when it was within an epoch), and per epoch the training, model-selection
evaluation and checkpoint seconds (all of an epoch's evaluations); the export of the embeddings is the rest
of the loop's time. `--epochs`
bounds a run (the default command otherwise runs up to 60 epochs with patience 10, or 2 on corpora of at
least 4,000 pairs); the report says so.
Rows are appended to --csv.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from csv_rows import append_rows  # beside this script

from xlfast.paths import data_file
from xlfast.rundir import epoch_ends

XLFAST = [sys.executable, "-m", "xlfast.cli.main"]


def _concat(parts: list[Path], out: Path) -> Path:
    out.write_text("".join(p.read_text(encoding="utf-8") for p in parts), encoding="utf-8")
    return out


def train_args(corpus: str, work: Path) -> list[str]:
    """The default command on each corpus (tokenised files: `--tokenize auto` leaves them as they are)."""
    if corpus == "grk-it":
        return [str(data_file("grk-it", "align.gr")), str(data_file("grk-it", "align.it")),
                "--langs", "grk,it"]
    if corpus == "shp-es":
        return [str(data_file("shp-es", "train.tok.shp")), str(data_file("shp-es", "train.tok.es")),
                "--langs", "shp,es"]
    if corpus == "ne-en":  # FLoRes dev + devtest as one corpus: raw text, the default tokeniser
        ne = _concat([data_file("ne-en", "dev.ne"), data_file("ne-en", "devtest.ne")], work / "flores.ne")
        en = _concat([data_file("ne-en", "dev.en"), data_file("ne-en", "devtest.en")], work / "flores.en")
        return [str(ne), str(en), "--langs", "ne,en"]
    raise SystemExit(f"error: unknown corpus {corpus!r} (grk-it, shp-es, ne-en)")


def _xlfast(args: list[str]) -> None:
    subprocess.run(XLFAST + args, check=True, stdout=subprocess.DEVNULL)


def quality(corpus: str, run: Path, work: Path) -> tuple[str, float | None]:
    if corpus == "grk-it":
        pred, out = work / "grk-it.align", work / "aer.json"
        _xlfast(["align", str(run), str(data_file("grk-it", "align.gr")), str(data_file("grk-it", "align.it")),
                 "-o", str(pred)])
        _xlfast(["eval", "aer", "--gold", str(data_file("grk-it", "align.gr-it.gold")), "--pred", str(pred),
                 "--json", str(out)])
        return "1-AER", json.loads(out.read_text())["one_minus_aer"]
    if corpus == "shp-es":
        out = work / "bli.json"
        _xlfast(["eval", "bli", str(run), "--dict", str(data_file("shp-es", "bli.dev.tsv")), "--json", str(out)])
        return "BLI P@1 (bli.dev.tsv)", json.loads(out.read_text())["csls"]["p@1"]  # already in percent
    return "pseudo-dict P@1", None  # filled from the log by the caller


def measure(corpus: str, extra: list[str], work: Path) -> dict:
    run = work / "run"
    summary_path = work / "summary.json"
    cmd = XLFAST + ["train", *train_args(corpus, work), "-o", str(run), "--json", str(summary_path), *extra]
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = os.times()
    summary = json.loads(summary_path.read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    selected = next(r for r in log if (r["epoch"], r["step"]) == (summary["best_epoch"], summary["best_step"]))
    ends = epoch_ends(log)
    setup = wall - summary["seconds"]  # interpreter start, tokenising, SentencePiece, vocabularies, model
    metric, value = quality(corpus, run, work)
    if value is None:
        value = 100 * selected["dict_p1"]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "corpus": corpus, "extra_args": " ".join(extra),
        "epochs_run": summary["epochs"], "stop": summary["stop"],
        "selected_epoch": round(selected["epoch"] - 1 + selected["step"] / selected["epoch_steps"], 3),
        "metric": metric, "quality": round(value, 4),
        "seconds_to_selected": round(setup + selected["elapsed_seconds"], 1),
        "seconds_total": round(wall, 1), "setup_s": round(setup, 1),
        "train_s_per_epoch": round(statistics.median(r["seconds"] for r in ends), 2),
        "eval_s_per_epoch": round(statistics.median(_per_epoch(log, ends, "eval_seconds")), 3),
        "checkpoint_s_per_epoch": round(statistics.median(_per_epoch(log, ends, "checkpoint_seconds")), 3),
        "export_s": round(summary["seconds"] - log[-1]["elapsed_seconds"], 2),
        "cpu_user_s": round(after.children_user - before.children_user, 1),
        "cpu_sys_s": round(after.children_system - before.children_system, 1),
    }


def _per_epoch(log: list[dict], ends: list[dict], key: str) -> list[float]:
    """`key` summed over the evaluations of each finished epoch."""
    return [sum(r[key] for r in log if r["epoch"] == end["epoch"]) for end in ends]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", action="append", choices=["grk-it", "shp-es", "ne-en"],
                    help="Repeatable. Default: grk-it.")
    ap.add_argument("--epochs", type=int, help="Bound the run at this many epochs (default: the command's own).")
    ap.add_argument("--softmax", choices=["full", "sampled"], help="Passed to xlfast train (default: its own).")
    ap.add_argument("--seed", type=int, help="Passed to xlfast train (default: its own).")
    ap.add_argument("--batch-size", type=int, help="Passed to xlfast train (default: its own).")
    ap.add_argument("--subword", choices=["none", "ave", "cnn"], help="Passed to xlfast train (default: its own).")
    ap.add_argument("--threads", type=int, help="Passed to xlfast train (default: its own; 1 is bit-reproducible).")
    ap.add_argument("--lr-decay", type=float, help="Passed to xlfast train (default: its own).")
    ap.add_argument("--patience", type=int, help="Passed to xlfast train (default: its own).")
    ap.add_argument("--average", type=float, help="Passed to xlfast train (default: its own).")
    ap.add_argument("--bf16", choices=["on", "off"], help="--bf16 / --no-bf16 for xlfast train (default: its own).")
    ap.add_argument("--keep", type=Path, help="Keep the runs under this folder (default: a temporary one).")
    ap.add_argument("--csv", type=Path, default=Path(__file__).with_name("time_to_quality.csv"))
    args = ap.parse_args()
    extra = []
    for flag, value in (("--epochs", args.epochs), ("--softmax", args.softmax), ("--seed", args.seed),
                        ("--batch-size", args.batch_size), ("--subword", args.subword), ("--threads", args.threads),
                        ("--lr-decay", args.lr_decay), ("--average", args.average),
                        ("--patience", args.patience)):
        if value is not None:
            extra += [flag, str(value)]
    if args.bf16 is not None:
        extra.append("--bf16" if args.bf16 == "on" else "--no-bf16")
    rows = []
    for corpus in args.corpus or ["grk-it"]:
        with tempfile.TemporaryDirectory(prefix="ttq-") as tmp:
            work = Path(tmp) if args.keep is None else args.keep / corpus
            work.mkdir(parents=True, exist_ok=True)
            load = os.getloadavg()[0]
            row = measure(corpus, extra, work)
            row["load_before"] = round(load, 2)
            row["load_after"] = round(os.getloadavg()[0], 2)
            row["cpu"] = cpu_description()
            rows.append(row)
            print(json.dumps(row), flush=True)
    append_rows(args.csv, rows)


def cpu_description() -> str:
    """The CPU's model name and whether it computes bf16 natively: the same command runs 2x apart on
    CPUs with and without it (training takes bf16 autocast only where it is native)."""
    from xlfast.kernels.dispatch import bf16_native

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs, bf16 {'native' if bf16_native('cpu') else 'not native'}"

if __name__ == "__main__":
    main()
