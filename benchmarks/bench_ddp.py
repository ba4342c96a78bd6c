"""Training throughput on 1 vs N processes (DistributedDataParallel, gloo), alternated A B A B in one run.

    .venv/bin/python benchmarks/bench_ddp.py --data grk-it --epochs 10 --rounds 2

Each configuration is a real `python -m xlfast train` (with --nproc N for N > 1) on the same corpus;
tokens/s is the tokens of all ranks over the seconds of the training steps (log.jsonl: evaluation and
checkpoints excluded). Scaling efficiency = (tokens/s on N processes) / (N × tokens/s on 1 process at
1 thread) — and, on a machine of N cores, the ratio to 1 process using all N threads is what a user gains.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xlfast.paths import data_dir
from xlfast.rundir import epoch_ends

CORPORA = {
    "grk-it": ["align.gr+align.it", "--langs", "grk,it"],
    "shp-es": ["train.tok.shp+train.tok.es", "--langs", "shp,es", "--tokenize", "none"],
}


def run(data: str, nproc: int, threads: int, epochs: int, extra: list[str]) -> dict:
    first, *rest = CORPORA[data]
    root = data_dir() / data
    corpus = "+".join(str(root / p) for p in first.split("+"))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "xlfast", "train", corpus, *rest, "-o", f"{tmp}/run", "--epochs", str(epochs),
               "--patience", str(epochs), "--threads", str(threads), *extra]
        if nproc > 1:
            cmd += ["--nproc", str(nproc)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, XLFAST_GOVERNOR="0"))
        wall = time.perf_counter() - t0
        log = epoch_ends([json.loads(line) for line in Path(f"{tmp}/run/log.jsonl").read_text().splitlines()])
    tokens = sum(r["tokens"] for r in log)
    seconds = sum(r["seconds"] for r in log)
    return {"nproc": nproc, "threads": threads, "steps_per_epoch": log[0].get("steps"), "tokens": tokens,
            "train_seconds": round(seconds, 1), "tok_s": round(tokens / seconds), "wall": round(wall, 1),
            "loss_last": log[-1]["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=sorted(CORPORA), default="grk-it")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--no-threads-config", action="store_true", help="skip 1 process with N threads")
    ap.add_argument("extra", nargs="*", help="more `xlfast train` options (after --)")
    args = ap.parse_args()
    print("uptime:", open("/proc/loadavg").read().strip(), flush=True)
    configs = [(1, 1), (1, args.nproc), (args.nproc, 1)]  # (processes, threads per process)
    if args.no_threads_config:
        configs.remove((1, args.nproc))
    results: dict = {c: [] for c in configs}
    for _ in range(args.rounds):
        for nproc, threads in configs:
            r = run(args.data, nproc, threads, args.epochs, args.extra)
            results[(nproc, threads)].append(r)
            print(json.dumps(r), "| load", open("/proc/loadavg").read().split()[0], flush=True)
    best = {c: max(r["tok_s"] for r in rs) for c, rs in results.items()}
    one = best[(1, 1)]
    summary = {"tok_s_best": {f"{n}p x {t}t": v for (n, t), v in best.items()},
               "efficiency_vs_1p1t": round(best[(args.nproc, 1)] / (args.nproc * one), 3)}
    if (1, args.nproc) in best:
        summary["speedup_vs_1p_all_threads"] = round(best[(args.nproc, 1)] / best[(1, args.nproc)], 3)
    print(json.dumps(summary))
    print("uptime:", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
