"""Thin script around `xlfast bench embed`: runs it and appends one CSV row per backend × size to
benchmarks/embed.csv (plot-ready, with the CPU state of the run).

    .venv/bin/python benchmarks/bench_embed.py --vocab 1000,50000,200000 --dim 256,500,768 [--repeats 3 --dropout 0.5]
"""
from __future__ import annotations

import argparse
import csv
import datetime
from pathlib import Path

from xlfast.bench.embed import report, run_bench, sizes_of
from xlfast.cli.bench_cmd import render

FIELDS = ["when", "cpu_state", "threads", "num_pieces", "pieces_per_word", "dropout", "vocab", "dim", "backend", "fwd_ms",
          "bwd_ms", "total_ms", "speedup", "fwd_q20_ms", "fwd_q80_ms", "fwd_gbs", "bwd_gbs", "copy_gbs",
          "fwd_of_copy", "bwd_of_copy", "max_abs_err"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", default="1000,50000,200000")
    ap.add_argument("--dim", default="256,500,768")
    ap.add_argument("--pieces", type=int, default=3)
    ap.add_argument("--num-pieces", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--csv", type=Path, default=Path(__file__).with_name("embed.csv"))
    a = ap.parse_args()
    sizes = sizes_of([int(x) for x in a.vocab.split(",")], [int(x) for x in a.dim.split(",")])
    res = run_bench(sizes, a.num_pieces, a.pieces, a.repeats, dropout=a.dropout)
    render(report(res))
    new = not a.csv.exists()
    when = datetime.datetime.now().isoformat(timespec="seconds")
    with a.csv.open("a", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in res["results"]:
            w.writerow({**r, "when": when, "cpu_state": res["cpu_state"]["state"], "threads": res["threads"],
                        "num_pieces": res["num_pieces"], "pieces_per_word": res["pieces_per_word"],
                        "dropout": res["dropout"]})


if __name__ == "__main__":
    main()
