"""Thin script around `xlfast bench csls`: runs it and appends one CSV row per method to
benchmarks/csls.csv (plot-ready: one row per method × size × run, with CPU state and BLAS setting).

    .venv/bin/python benchmarks/bench_csls.py --n 20000 --dim 300 [--mem 128M --repeats 2]
"""
from __future__ import annotations

import argparse
import csv
import datetime
from pathlib import Path

from xlfast.bench.csls import report, run_bench
from xlfast.cli.bench_cmd import render

FIELDS = ["when", "n", "m", "dim", "k", "knn", "mem", "cpu_state", "coretype", "gemm_peak", "method", "metric",
          "passes", "seconds", "gflops", "frac_peak", "extra_mib", "vs_faiss_cos", "speedup_vs_muse", "top1_agree"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--m", type=int, default=None)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--knn", type=int, default=10)
    ap.add_argument("--mem", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--csv", type=Path, default=Path(__file__).with_name("csls.csv"))
    a = ap.parse_args()
    res = run_bench(a.n, a.m, a.dim, a.k, a.knn, a.mem, a.repeats)
    render(report(res))
    new = not a.csv.exists()
    with a.csv.open("a", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        when = datetime.datetime.now().isoformat(timespec="seconds")
        for r in res["results"]:
            w.writerow({**r, "when": when, "n": res["n"], "m": res["m"], "dim": res["dim"], "k": res["k"],
                        "knn": res["knn"], "mem": res["mem"], "cpu_state": res["cpu_state"]["state"],
                        "coretype": res["env"]["OPENBLAS_CORETYPE"],
                        "gemm_peak": max(res["gemm_peak_gflops"].values())})
    print(f"appended {len(res['results'])} rows to {a.csv}")


if __name__ == "__main__":
    main()
