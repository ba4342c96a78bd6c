"""Benchmarks for `xlfast map` (orthogonal Procrustes + CSLS refinement).

  speed   one refinement step (CSLS mutual nearest neighbours + Procrustes) through xlfast's tiled
          csls.topk against a MUSE-style dense torch step (full similarity matrix), correctness first,
          then timings alternating A B A B with ratios.
  vec     map two .vec files (seed dictionary or identical strings), BLI per step on a gold dictionary.
  shp-es  real data without a trained model: count-based (PPMI + SVD) spaces built *separately* from each
          side of shp-es train.tok.*, mapped with identical strings or with the Dice pseudo-dictionary of
          the parallel corpus; BLI on bli.dev.tsv (CSLS, K=10). A floor for trained spaces, not a model.

  .venv/bin/python benchmarks/bench_map.py speed --n 10000 --dim 300
  .venv/bin/python benchmarks/bench_map.py vec SRC.vec TGT.vec --identical --eval-dict D.txt
  .venv/bin/python benchmarks/bench_map.py shp-es --save-vec /tmp/shp-es-vec
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xlfast import io, mapping
from xlfast.evaluate import bli
from xlfast.kernels import csls


def cpu_state_probe() -> str:
    """The machine switches between 'full' and 'degraded' states without notice: one GEMM at 1 vs 2 threads."""
    a, b = torch.randn(2048, 512), torch.randn(512, 2048)
    rates = {}
    before = torch.get_num_threads()
    for threads in (1, 2, 1, 2):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        rates.setdefault(threads, []).append(5 * 2 * 2048 * 512 * 2048 / (time.perf_counter() - t0) / 1e9)
    torch.set_num_threads(before)
    one, two = max(rates[1]), max(rates[2])
    state = "full" if two > 1.5 * one else "degraded"
    return f"{state} (GEMM 1 thread {one:.0f} GFLOP/s, 2 threads {two:.0f} GFLOP/s)"


# ---------------------------------------------------------------------------------------------- speed


def muse_style_step(mapped: np.ndarray, tgt: np.ndarray, knn: int):
    """The dense reference: whole N×M similarity matrix in torch, r_T / r_S by topk on each axis."""
    x = torch.nn.functional.normalize(torch.from_numpy(mapped), dim=1)
    y = torch.nn.functional.normalize(torch.from_numpy(tgt), dim=1)
    sims = x @ y.T
    r_t = sims.topk(knn, dim=1).values.mean(1)
    r_s = sims.topk(knn, dim=0).values.mean(0)
    scores = 2 * sims - r_t[:, None] - r_s[None, :]
    fwd, rev = scores.argmax(1), scores.argmax(0)
    src_rows = torch.arange(x.shape[0])
    mutual = rev[fwd] == src_rows
    return src_rows[mutual].numpy(), fwd[mutual].numpy()


def bench_speed(args) -> list[dict]:
    rng = np.random.default_rng(0)
    src = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((args.dim, args.dim)))
    tgt = src @ q.T.astype(np.float32) + 0.05 * rng.standard_normal(src.shape).astype(np.float32)
    # a half-learned map: a noisy mapped source, so that only part of the neighbours are mutual
    W0 = mapping.procrustes(src[:2000], tgt[:2000])
    mapped = (src @ W0.T + args.noise * rng.standard_normal(src.shape)).astype(np.float32)

    def ours():
        induced = mapping.induce_dictionary(mapped, tgt, max_vocab=args.n, knn=args.knn)
        mapping.procrustes(src[induced.src], tgt[induced.tgt])
        return induced.src, induced.tgt

    def dense():
        s, t = muse_style_step(mapped, tgt, args.knn)
        mapping.procrustes(src[s], tgt[t])
        return s, t

    a, b = ours(), dense()  # correctness before timing
    same = set(zip(a[0].tolist(), a[1].tolist())) == set(zip(b[0].tolist(), b[1].tolist()))
    print(f"mutual pairs: xlfast {len(a[0]):,}, MUSE-style dense {len(b[0]):,}; identical sets: {same}")
    if not same:
        diff = set(zip(a[0].tolist(), a[1].tolist())) ^ set(zip(b[0].tolist(), b[1].tolist()))
        print(f"  {len(diff)} pairs differ (float ties between near-equal CSLS scores)")
    times = collections.defaultdict(list)
    for _ in range(args.repeats):
        for name, fn in (("xlfast", ours), ("muse-dense", dense)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    rows = []
    base = statistics.median(times["muse-dense"])
    for name, ts in times.items():
        med = statistics.median(ts)
        q20, q80 = np.quantile(ts, [0.2, 0.8])
        rows.append({"bench": "refine-step", "provider": name, "n": args.n, "dim": args.dim, "median_s": med,
                     "q20_s": q20, "q80_s": q80, "speedup_vs_dense": base / med})
        print(f"{name:>11}: median {med:.3f} s  (20% {q20:.3f}, 80% {q80:.3f})  speed-up vs dense {base / med:.2f}x")
    dense_bytes = args.n * args.n * 4
    print(f"dense step holds {args.n}x{args.n} float32 = {dense_bytes / 2**20:.0f} MiB at least (×3 with the CSLS "
          f"temporaries); xlfast tiles it to csls' memory budget")
    return rows


# ---------------------------------------------------------------------------------------------- BLI runs


def run_mapping(name, src_words, src, tgt_words, tgt, seed, gold, args) -> list[dict]:
    def evaluate(mapped):
        return bli(src_words, torch.from_numpy(mapped), tgt_words, torch.from_numpy(tgt), gold,
                   ks=(1, 5, 10), method="csls", knn=10)

    t0 = time.perf_counter()
    result = mapping.map_embeddings(src, tgt, seed, iterations=args.iterations, max_vocab=args.max_vocab,
                                    evaluate=evaluate)
    seconds = time.perf_counter() - t0
    print(f"\n{name}: seed {seed.source}, {len(seed)} pairs; {seconds:.1f} s; kept step "
          f"'{result.history[result.selected].step}'")
    print(f"  {'step':<10} {'dict':>6} {'criterion':>9} {'mutual':>6} {'P@1':>6} {'P@5':>6} {'P@10':>6} {'cov':>5}")
    rows = []
    for i, s in enumerate(result.history):
        e = s.evaluation
        mark = "*" if i == result.selected else " "
        print(f" {mark}{s.step:<10} {s.dictionary_size:>6} {s.criterion:>9.4f} {s.induced_size:>6} "
              f"{100 * e['p@1']:>6.1f} {100 * e['p@5']:>6.1f} {100 * e['p@10']:>6.1f} {100 * e['coverage']:>5.1f}")
        rows.append({"bench": name, "provider": seed.source, "step": s.step, "kept": i == result.selected,
                     "dict": s.dictionary_size, "criterion": s.criterion, "p@1": e["p@1"], "p@5": e["p@5"],
                     "p@10": e["p@10"], "coverage": e["coverage"]})
    return rows


def bench_vec(args) -> list[dict]:
    steps = mapping.parse_normalization(args.normalize)
    src_words, src = io.read_vec(args.src, max_words=args.max_words)
    tgt_words, tgt = io.read_vec(args.tgt, max_words=args.max_words)
    src, tgt = mapping.apply_normalization(src, steps), mapping.apply_normalization(tgt, steps)
    gold = io.read_dictionary(args.eval_dict)
    seeds = []
    if args.dict:
        seeds.append(mapping.seed_from_dictionary(src_words, tgt_words, io.read_dictionary(args.dict)))
    if args.identical or not args.dict:
        seeds.append(mapping.seed_from_identical(src_words, tgt_words))
    rows = []
    for seed in seeds:
        rows += run_mapping(f"{Path(args.src).name}->{Path(args.tgt).name}", src_words, src, tgt_words, tgt,
                            seed, gold, args)
    return rows


def ppmi_svd(sentences: list[list[str]], min_count: int, window: int, dim: int):
    """Count-based word vectors: symmetric window co-occurrence, PPMI (context counts ^0.75), truncated SVD.
    Words ordered by frequency, as in a .vec file."""
    counts = collections.Counter(w for s in sentences for w in s)
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
    index = {w: i for i, w in enumerate(words)}
    rows, cols = [], []
    for s in sentences:
        ids = [index.get(w, -1) for w in s]
        for i, a in enumerate(ids):
            if a < 0:
                continue
            for j in range(max(0, i - window), min(len(ids), i + window + 1)):
                if j != i and ids[j] >= 0:
                    rows.append(a)
                    cols.append(ids[j])
    v = len(words)
    flat = np.bincount(np.asarray(rows, np.int64) * v + np.asarray(cols, np.int64), minlength=v * v)
    C = torch.from_numpy(flat.reshape(v, v).astype(np.float32))
    row = C.sum(1, keepdim=True)
    ctx = C.sum(0, keepdim=True).pow(0.75)
    pmi = torch.log(C * ctx.sum() / (row * ctx).clamp_min(1e-12)).nan_to_num(neginf=0.0)
    ppmi = pmi.clamp_min(0.0)
    torch.manual_seed(0)
    u, s, _ = torch.svd_lowrank(ppmi, q=dim, niter=4)
    vecs = (u * s.sqrt()).numpy().astype(np.float32)  # eigenvalue weighting 0.5 (Levy et al.)
    return words, vecs


def bench_shp_es(args) -> list[dict]:
    from xlfast.dice import pseudo_dictionary
    from xlfast.paths import data_file

    base = data_file("shp-es")
    if not (base / "train.tok.shp").is_file():
        print(f"no data at {base} (set XLFAST_DATA)")
        return []
    shp = [line.split() for line in (base / "train.tok.shp").read_text(encoding="utf-8").splitlines()]
    es = [line.split() for line in (base / "train.tok.es").read_text(encoding="utf-8").splitlines()]
    gold = io.read_dictionary(base / "bli.dev.tsv")
    t0 = time.perf_counter()
    shp_words, shp_vecs = ppmi_svd(shp, args.min_count, args.window, args.dim)
    es_words, es_vecs = ppmi_svd(es, args.min_count, args.window, args.dim)
    print(f"PPMI-SVD spaces (min count {args.min_count}, window {args.window}, dim {args.dim}): shp {len(shp_words):,} "
          f"words, es {len(es_words):,} words, {time.perf_counter() - t0:.1f} s")
    if args.save_vec:
        out = Path(args.save_vec)
        out.mkdir(parents=True, exist_ok=True)
        io.write_vec(out / "ppmi.shp.vec", shp_words, shp_vecs)
        io.write_vec(out / "ppmi.es.vec", es_words, es_vecs)
        print(f"wrote {out / 'ppmi.shp.vec'} and {out / 'ppmi.es.vec'}")
    steps = mapping.parse_normalization(args.normalize)
    src, tgt = mapping.apply_normalization(shp_vecs, steps), mapping.apply_normalization(es_vecs, steps)
    dice = [(s, t) for s, t, _ in pseudo_dictionary(shp, es)]
    rows = []
    rows += run_mapping("shp-es identical", shp_words, src, es_words, tgt,
                        mapping.seed_from_identical(shp_words, es_words), gold, args)
    rows += run_mapping("shp-es dice-seed", shp_words, src, es_words, tgt,
                        mapping.seed_from_dictionary(shp_words, es_words, dice), gold, args)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--n", type=int, default=8000, help="words per side (default 8000)")
    p.add_argument("--dim", type=int, default=300, help="dimension (default 300)")
    p.add_argument("--knn", type=int, default=10)
    p.add_argument("--noise", type=float, default=1.5, help="noise on the mapped source (default 1.5)")
    p.add_argument("--repeats", type=int, default=3, help="A B rounds (default 3)")
    p = sub.add_parser("vec")
    p.add_argument("src")
    p.add_argument("tgt")
    p.add_argument("--dict")
    p.add_argument("--identical", action="store_true")
    p.add_argument("--eval-dict", required=True)
    p.add_argument("--max-words", type=int)
    p = sub.add_parser("shp-es")
    p.add_argument("--dim", type=int, default=100, help="dimension (default 100)")
    p.add_argument("--min-count", type=int, default=3, help="(default 3)")
    p.add_argument("--window", type=int, default=2, help="(default 2)")
    p.add_argument("--save-vec", help="also write the two spaces as .vec files here")
    for name in ("vec", "shp-es"):
        q = sub.choices[name]
        q.add_argument("--normalize", default="unit,center,unit", help="(default unit,center,unit)")
        q.add_argument("--iterations", type=int, default=5, help="(default 5)")
        q.add_argument("--max-vocab", type=int, default=20000, help="(default 20000)")
    parser.add_argument("--csv", help="append result rows to this CSV")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; CPU state: {cpu_state_probe()}")
    rows = {"speed": bench_speed, "vec": bench_vec, "shp-es": bench_shp_es}[args.what](args)
    if args.csv and rows:
        path = Path(args.csv)
        fields = sorted({k for r in rows for k in r})
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
