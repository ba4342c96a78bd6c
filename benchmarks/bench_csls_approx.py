"""Thin script: approximate search (faiss IVF / IVF-PQ via `topk(strategy=Approx(...))`) against the exact fp32 path
and the certified bf16 path, recall@k and time, methods alternated A B A B in one process (`run_bench`); appends
one CSV row per method to benchmarks/csls_approx.csv.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_csls_approx.py --n 100000 --m 20000 --dim 300
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_csls_approx.py --vec /tmp/run-ave/emb.grk.vec /tmp/run-ave/emb.it.vec
"""
from __future__ import annotations

import argparse
import csv
import datetime
from pathlib import Path

from xlfast.bench.csls import report, run_bench
from xlfast.cli.bench_cmd import render
from xlfast.io import read_vec
from xlfast.kernels.csls.approx import APPROX_NPROBE

FIELDS = ["when", "data", "n", "m", "dim", "k", "knn", "threads", "cpu_state", "method", "metric", "seconds",
          "seconds_all", "extra_mib", "recall", "top1_agree", "nprobe"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--m", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--knn", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backend", default="cpp", help="the exact fp32 backend (its bf16 rows come with it)")
    ap.add_argument("--vec", nargs=2, type=Path, help="two .vec files (X, Y) instead of clustered random data")
    ap.add_argument("--csv", type=Path, default=Path(__file__).with_name("csls_approx.csv"))
    a = ap.parse_args()
    X = Y = None
    if a.vec:
        X, Y = read_vec(a.vec[0])[1], read_vec(a.vec[1])[1]
    res = run_bench(a.n, a.m, a.dim, a.k, a.knn, None, a.repeats, [a.backend], peers=False, approx=True,
                    data="clustered", X=X, Y=Y)
    if a.vec:
        res["data"] = f"{a.vec[0].name}×{a.vec[1].name}"
    render(report(res))

    new = not a.csv.exists()
    with a.csv.open("a", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        when = datetime.datetime.now().isoformat(timespec="seconds")
        for r in res["results"]:
            w.writerow({**r, "when": when, "data": res["data"], "n": res["n"], "m": res["m"], "dim": res["dim"],
                        "k": res["k"], "knn": res["knn"], "threads": res["cpu_state"]["threads"],
                        "cpu_state": res["cpu_state"]["state"],
                        "seconds_all": " ".join(f"{t:.3f}" for t in r["seconds_all"]),
                        "nprobe": APPROX_NPROBE["ivf"] if r["method"].startswith("approx-") else ""})
    print(f"appended {len(res['results'])} rows to {a.csv}")


if __name__ == "__main__":
    main()
