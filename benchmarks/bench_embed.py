"""Thin script around `xlfast bench embed`: runs it and appends one CSV row per backend × size to
benchmarks/embed.csv, or with --training to benchmarks/embed_training.csv (plot-ready, with the CPU state and
load average of the run).

    .venv/bin/python benchmarks/bench_embed.py --vocab 1000,50000,200000 --dim 256,500,768 [--repeats 3 --dropout 0.5]
    .venv/bin/python benchmarks/bench_embed.py --vocab 50000 --dim 500 --training [--threads 1]
"""
from __future__ import annotations

import argparse
import csv
import datetime
from pathlib import Path

from xlfast.bench.embed import report, run_bench, sizes_of
from xlfast.cli.bench_cmd import render
from xlfast.threads import configure

FIELDS = ["when", "cpu_state", "threads", "num_pieces", "pieces_per_word", "dropout", "vocab", "dim", "backend", "fwd_ms",
          "bwd_ms", "total_ms", "speedup", "fwd_q20_ms", "fwd_q80_ms", "fwd_gbs", "bwd_gbs", "copy_gbs",
          "fwd_of_copy", "bwd_of_copy", "max_abs_err"]
TRAINING_FIELDS = FIELDS + ["load_avg", "sys_ms", "faults"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", default="1000,50000,200000")
    ap.add_argument("--dim", default="256,500,768")
    ap.add_argument("--pieces", type=int, default=3)
    ap.add_argument("--num-pieces", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--training", action="store_true", help="steps as train_step makes them (xlfast bench embed "
                    "--training)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--csv", type=Path, default=None, help="default: embed.csv, or embed_training.csv with --training")
    a = ap.parse_args()
    if a.threads:
        configure(a.threads)
    sizes = sizes_of([int(x) for x in a.vocab.split(",")], [int(x) for x in a.dim.split(",")])
    res = run_bench(sizes, a.num_pieces, a.pieces, a.repeats, dropout=a.dropout, training=a.training)
    render(report(res))
    path = a.csv or Path(__file__).with_name("embed_training.csv" if a.training else "embed.csv")
    new = not path.exists()
    when = datetime.datetime.now().isoformat(timespec="seconds")
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, TRAINING_FIELDS if a.training else FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in res["results"]:
            w.writerow({**r, "when": when, "cpu_state": res["cpu_state"]["state"], "threads": res["threads"],
                        "num_pieces": res["num_pieces"], "pieces_per_word": res["pieces_per_word"],
                        "dropout": res["dropout"], "load_avg": "%.2f-%.2f" % tuple(res["load_avg"])})


if __name__ == "__main__":
    main()
