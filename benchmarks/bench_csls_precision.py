"""Where the certified bf16 path of `xlfast.kernels.csls.topk` starts to pay: fp32 vs bf16 at several sizes.

Clustered random unit vectors; each case alternates fp32 and bf16 (A B A B, 3 rounds) and prints the
median seconds, the ratio and the share of rows whose whole top-k index list is the same (the rest are
near-ties that fp32 rounding orders differently). The automatic strategy switches at AUTO_BF16_MIN_PAIRS.

    .venv/bin/python benchmarks/bench_csls_precision.py
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from xlfast.kernels import csls as C
from xlfast.kernels.csls.bf16 import AUTO_BF16_MIN_PAIRS
from xlfast.kernels.dispatch import bf16_native

STRATEGIES = {"fp32": C.Exact(), "bf16": C.Bf16()}

CASES = [(2000, 2000, None), (5000, 5000, None), (10000, 10000, None), (20000, 20000, None),
         (14000, 10000, 220)]  # the last: a BLI query set (rows=) against a whole vocabulary


def clustered(rng, n, d, centres=200):
    c = rng.standard_normal((centres, d), dtype=np.float32)
    return C.normalize(c[rng.integers(0, centres, n)] + 0.7 * rng.standard_normal((n, d), dtype=np.float32)).numpy()


def main(dim: int = 300, k: int = 10, rounds: int = 3) -> None:
    rng = np.random.default_rng(0)
    print(f"bf16 native: {bf16_native()}; auto switches at {AUTO_BF16_MIN_PAIRS:,} similarities per pass")
    for n, m, q in CASES:
        X, Y = clustered(rng, n, dim), clustered(rng, m, dim)
        rows = np.arange(q) if q else None
        for metric in ("cos", "csls"):
            t = {"fp32": [], "bf16": []}
            for _ in range(rounds):
                for p in ("fp32", "bf16"):
                    t0 = time.perf_counter()
                    out = C.topk(X, Y, k, metric=metric, normalized=True, strategy=STRATEGIES[p], rows=rows)
                    t[p].append(time.perf_counter() - t0)
                    if p == "fp32":
                        ref = out.indices
                    else:
                        same = float((out.indices == ref).all(1).double().mean())
            a, b = statistics.median(t["fp32"]), statistics.median(t["bf16"])
            print(f"{n}x{m}x{dim} rows={q or 'all'} {metric:>4}: fp32 {a:.3f} s  bf16 {b:.3f} s  "
                  f"fp32/bf16 {a / b:.2f}  same top-{k} {same:.4f}", flush=True)


if __name__ == "__main__":
    main()
