"""The hot paths on a GPU, each beside its plain-torch baseline, alternated A B A B in one run (CUDA events).

    python benchmarks/bench_gpu.py [--json out.json] [--repeats 5]

- csls: top-10 CSLS of N×N unit vectors (d=300, N=20k unless --csls-n): each GPU backend against the MUSE-style search (torch.mm
  of 4,096-row blocks + torch.topk, once for the neighbourhood means and once for the scores).
- subword_embed: `E[w] + mean(Z[pieces(w)])` for V=50k, d=500, 3 pieces a word, forward + backward,
  against `F.embedding_bag(mode="mean")` + add; the bytes each pass must move, over its time.
- linear_ce: the output layer at N rows, V=20k, d=500, bf16, forward + backward, against `F.linear` +
  `F.cross_entropy`; the peak memory each needs beyond its inputs.
- copy: a device-to-device copy, the bandwidth ceiling measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

from xlfast.kernels import csls as C
from xlfast.kernels.linear_ce import linear_cross_entropy
from xlfast.kernels.linear_ce import registry as ce_registry
from xlfast.kernels.subword_embed import PieceLayout, subword_embed
from xlfast.kernels.subword_embed import registry as embed_registry


def timed(fn, inner: int = 1) -> float:
    """Milliseconds of one call of `fn` (mean of `inner` calls), by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(inner):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / inner


def peak_extra_mb(fn) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def alternate(methods: dict, repeats: int, inner: int = 1) -> dict:
    """Median milliseconds of each method, the methods taken in turn `repeats` times after one warm-up each."""
    for fn in methods.values():
        fn()
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(timed(fn, inner))
    return {name: statistics.median(t) for name, t in times.items()}


def muse_csls(X, Y, k: int, knn: int, block: int = 4096):
    def mean_knn(A, B):
        return torch.cat([(A[i:i + block] @ B.T).topk(knn, dim=1).values.mean(1) for i in range(0, len(A), block)])

    r_T, r_S = mean_knn(X, Y), mean_knn(Y, X)
    out = [(2 * (X[i:i + block] @ Y.T) - r_T[i:i + block, None] - r_S[None]).topk(k, dim=1)
           for i in range(0, len(X), block)]
    return torch.cat([o.values for o in out]), torch.cat([o.indices for o in out])


def bench_csls(n: int, repeats: int) -> list[dict]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    X = F.normalize(torch.randn(n, 300, device="cuda", generator=gen), dim=1)
    Y = F.normalize(torch.randn(n, 300, device="cuda", generator=gen), dim=1)
    methods = {"muse-style torch": lambda: muse_csls(X, Y, 10, 10)}
    for name in C.registry.available("cuda"):
        methods[name] = lambda name=name: C.topk(X, Y, 10, metric="csls", knn=10, normalized=True, backend=name)
    ms = alternate(methods, repeats)
    base = ms["muse-style torch"]
    return [{"op": "csls", "size": f"{n}x{n}x300 k=10", "method": m, "ms": round(t, 2),
             "speedup": round(base / t, 2)} for m, t in ms.items()]


def bench_subword_embed(repeats: int) -> list[dict]:
    V, P, d, per_word = 50_000, 8_000, 500, 3
    gen = torch.Generator().manual_seed(1)
    offsets = torch.arange(0, V * per_word + 1, per_word)
    layout = PieceLayout(offsets, torch.randint(0, P, (V * per_word,), generator=gen), P).to("cuda")
    E = torch.randn(V, d, device="cuda", requires_grad=True)
    Z = torch.randn(P, d, device="cuda", requires_grad=True)
    g = torch.randn(V, d, device="cuda")

    def step(name):
        E.grad = Z.grad = None
        subword_embed(E, Z, layout, backend=name).backward(g)

    def baseline():
        E.grad = Z.grad = None
        (E + F.embedding_bag(layout.pieces, Z, layout.offsets, mode="mean", include_last_offset=True)).backward(g)

    methods = {"embedding_bag + add": baseline}
    for name in embed_registry.available("cuda"):
        if name != "torch":
            methods[name] = lambda name=name: step(name)
    ms = alternate(methods, repeats, inner=5)
    src, dst = torch.empty(V * d * 4, dtype=torch.uint8, device="cuda"), torch.empty(V * d * 4, dtype=torch.uint8,
                                                                                       device="cuda")
    copy_ms = statistics.median(timed(lambda: dst.copy_(src), 10) for _ in range(repeats))
    # Forward reads E, the pieces' rows of Z and writes the output; backward reads g once per piece use and
    # writes grad_Z (grad_E is g itself): the least traffic a fused pass can have, 4 bytes an element.
    moved = 4 * d * (3 * V + V * per_word + V * per_word + P)
    base = ms["embedding_bag + add"]
    rows = [{"op": "subword_embed", "size": f"V={V} d={d} fwd+bwd", "method": m, "ms": round(t, 3),
             "speedup": round(base / t, 2), "GB/s": round(moved / t / 1e6, 1)} for m, t in ms.items()]
    rows.append({"op": "copy", "size": f"{V * d * 4 / 2**20:.0f} MiB", "method": "device copy",
                 "ms": round(copy_ms, 3), "GB/s": round(2 * V * d * 4 / copy_ms / 1e6, 1)})
    return rows


def bench_linear_ce(rows: int, repeats: int) -> list[dict]:
    V, d = 20_000, 500
    gen = torch.Generator(device="cuda").manual_seed(2)
    x = (torch.randn(rows, d, device="cuda", generator=gen) / 8).bfloat16().requires_grad_()
    W = (torch.randn(V, d, device="cuda", generator=gen) / 8).bfloat16().requires_grad_()
    t = torch.randint(0, V, (rows,), device="cuda", generator=gen)

    def baseline():
        x.grad = W.grad = None
        F.cross_entropy(F.linear(x, W).float(), t, reduction="sum").backward()

    def fused(name):
        x.grad = W.grad = None
        linear_cross_entropy(x, W, t, backend=name).backward()

    methods = {"F.linear + F.cross_entropy": baseline}
    for name in ce_registry.available("cuda"):
        if name != "torch":
            methods[name] = lambda name=name: fused(name)
    ms = alternate(methods, repeats, inner=3)
    mem = {name: peak_extra_mb(fn) for name, fn in methods.items()}
    base = ms["F.linear + F.cross_entropy"]
    flops = 6 * rows * V * d
    return [{"op": "linear_ce", "size": f"N={rows} V={V} d={d} bf16 fwd+bwd", "method": m, "ms": round(t, 3),
             "speedup": round(base / t, 2), "TFLOP/s": round(flops / t / 1e9, 1),
             "extra MiB": round(mem[m], 1)} for m, t in ms.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--csls-n", type=int, default=20_000)
    ap.add_argument("--json", help="Also write the rows as JSON here.")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device (this benchmark times the GPU backends)")
    print(f"# {torch.cuda.get_device_name()} · torch {torch.__version__}")
    rows = []
    for section in (lambda: bench_csls(args.csls_n, args.repeats), lambda: bench_subword_embed(args.repeats),
                    lambda: bench_linear_ce(4096, args.repeats), lambda: bench_linear_ce(16384, args.repeats)):
        try:
            new = section()
        except Exception as exc:  # noqa: BLE001 - one broken backend must not hide the other sections
            new = [{"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}]
        for r in new:  # printed as each section ends: a run cut short keeps what it measured
            print("  ".join(f"{k}={v}" for k, v in r.items()), flush=True)
        rows += new
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
