"""Benchmark `xlfast mine` word level: tokens mined per second, time split by stage, the search stage next
to a bare `csls.topk` call on the same shapes, and 1 vs N processes (identical output checked first).

    .venv/bin/python benchmarks/bench_mine.py                      # 20k x 20k tokens, d=512, synthetic
    .venv/bin/python benchmarks/bench_mine.py --tokens 100000 --metric csls --nproc 2

The synthetic encoder makes token vectors from a word table plus noise (encode = tokenise + vector
production + streaming float16 rows to the memmap); with --model RUN_DIR the encode stage is the run's
real bi-LSTM on ne-en devtest instead. Timings are noisy while others use the machine: every comparison
alternates A B A B inside this run and prints ratios; the CPU state is probed (one GEMM, 1 vs 2 threads).
Rows are appended to benchmarks/bench_mine.csv.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlfast import evaluate, mine  # noqa: E402
from xlfast.kernels.csls import topk  # noqa: E402
from xlfast.search import Rows, search  # noqa: E402

CSV = Path(__file__).with_name("bench_mine.csv")


class SyntheticEncoder:
    """V word types, each a random unit vector; target word i = source word i under a small rotation."""

    name = "synthetic"

    def __init__(self, vocab=5000, dim=512, noise=0.05, seed=0):
        rng = np.random.default_rng(seed)
        self.dim, self.noise, self.rng = dim, noise, np.random.default_rng(seed + 1)
        table = rng.normal(size=(vocab, dim)).astype(np.float32)
        table /= np.linalg.norm(table, axis=1, keepdims=True)
        q, r = np.linalg.qr(np.eye(dim) + 0.05 * rng.normal(size=(dim, dim)))
        q *= np.sign(np.diag(r))  # QR's sign convention could flip columns; keep q near the identity
        self.tables = {"src": table, "tgt": (table @ q.T).astype(np.float32)}
        self.vocab = vocab

    def tokenize(self, side, text):
        return text.split()

    def embed(self, side, sentences):
        table = self.tables[side]
        out = []
        for s in sentences:
            ids = np.fromiter((int(w[1:]) for w in s), dtype=np.int64, count=len(s))
            out.append(table[ids] + self.noise * self.rng.standard_normal((len(s), self.dim), dtype=np.float32))
        return out

    def corpus(self, side, tokens, length=20, seed=0):
        rng = np.random.default_rng(seed)
        prefix = "s" if side == "src" else "t"
        # Zipf-like word frequencies, as in real text
        ranks = np.minimum(rng.zipf(1.2, tokens), self.vocab) - 1
        return [" ".join(f"{prefix}{w}" for w in ranks[i: i + length]) for i in range(0, tokens, length)]


def cpu_state() -> str:
    a, b = torch.randn(2048, 512), torch.randn(512, 4096)
    times = {}
    for threads in (1, 2, 1, 2):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        times.setdefault(threads, []).append(time.perf_counter() - t0)
    torch.set_num_threads(2)
    speedup = min(times[1]) / min(times[2])
    return f"{'full' if speedup > 1.5 else 'degraded'} (2 threads = {speedup:.2f}x 1 thread)"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def evaluate_ne_en(run_dir: str, thresholds=(1.0, 1.02, 1.05, 1.1, 1.15, 1.2), knn=4, seed=0) -> None:
    """BUCC-style: devtest.ne and a shuffled devtest.en as two monolingual corpora; P/R/F1 of the
    recovered sentence pairs at several margin thresholds (one encoding, one search)."""
    from xlfast.encoders import RunEncoder
    from xlfast.io import read_mono
    from xlfast.paths import data_file

    encoder = RunEncoder.load(run_dir, "ne", "en")
    ne = list(read_mono(data_file("ne-en", "devtest.ne")))
    en = list(read_mono(data_file("ne-en", "devtest.en")))
    order = np.random.default_rng(seed).permutation(len(en))  # shuffled position p holds English line order[p]
    en_shuffled = [en[i] for i in order]
    gold = [(int(i), p) for p, i in enumerate(order)]
    work = Path(tempfile.mkdtemp(prefix="bench-mine-eval-"))
    t_enc, (src, tgt) = timed(lambda: (mine.encode_corpus(encoder, "src", ne, work),
                                      mine.encode_corpus(encoder, "tgt", en_shuffled, work)))
    print(f"ne-en devtest: {len(ne)} x {len(en)} sentences, {src.n_tokens:,} x {tgt.n_tokens:,} tokens; "
          f"encode {t_enc:.1f}s")
    for center in (False, True):
        print(f" sentence level, {'centred' if center else 'raw'} mean vectors, K={knn}:")
        for thr in thresholds:
            pairs = mine.mine_sentences(src, tgt, threshold=thr, knn=knn, center=center)
            prf = evaluate.pair_prf(list(zip(pairs.src.tolist(), pairs.tgt.tolist())), gold)
            print(f"  margin > {thr:.2f}: mined {prf['mined']:5d}  P {prf['precision']:.3f}  R {prf['recall']:.3f}  "
                  f"F1 {prf['f1']:.3f}  (search {pairs.seconds['search']:.2f}s)")
        # Top-1 accuracy of the search itself (every ne sentence's best English candidate), for reference.
        xs, xt = src.sentence_vectors, tgt.sentence_vectors
        if center:
            xs, xt = xs - xs.mean(0), xt - xt.mean(0)
        best = search(xs, xt, "margin", knn)
        acc = float(np.mean(order[best.fwd_indices] == np.arange(len(ne))))
        print(f"  best-candidate accuracy ne->en (no threshold): {acc:.3f}")

    # Word level: precision of mined word pairs against a lexicon read off `xlfast align` on the TRUE pairs
    # (every gdfa link of the run's contextual alignment of devtest ne-en counts as a translation pair).
    from xlfast.align import align_sentences

    ne_tok = [encoder.tokenize("src", s) for s in ne]
    en_tok = [encoder.tokenize("tgt", s) for s in en]
    links = align_sentences(encoder.run, ne_tok, en_tok, "ne", "en", emb="contextual")
    lexicon = {(ne_tok[k][i], en_tok[k][j]) for k, a in enumerate(links) for i, j in a.links}
    print(f" word level: alignment lexicon of {len(lexicon):,} (ne, en) pairs from xlfast align on the true pairs")
    for metric, iterations, fit_on in (("cos", 0, "-"), ("cos", 2, "mutual"), ("cos", 2, "all"), ("csls", 0, "-")):
        res = mine.mine_words(src, tgt, metric=metric, threshold=0.2, iterations=iterations, sample=1000,
                              fit_on=fit_on if iterations else "mutual")
        hits = np.array([(s, t) in lexicon for s, t in zip(res.pairs.src, res.pairs.tgt)])
        top = {n: float(hits[:n].mean()) for n in (100, 1000) if len(hits) >= n}
        identical = float(np.mean([s == t for s, t in zip(res.pairs.src, res.pairs.tgt)])) if len(hits) else 0.0
        print(f"  {metric} iterations {iterations} (maps fit on {fit_on}): {len(hits):,} word pairs, precision {hits.mean() if len(hits) else 0:.3f}"
              f" (top-100 {top.get(100, float('nan')):.3f}, top-1000 {top.get(1000, float('nan')):.3f});"
              f" identical strings {identical:.3f}; search {res.seconds['search']:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20000, help="tokens per side (default 20000)")
    ap.add_argument("--dim", type=int, default=512, help="vector size for the synthetic encoder (default 512)")
    ap.add_argument("--metric", default="cos", choices=["cos", "csls"], help="default cos")
    ap.add_argument("--nproc", type=int, default=2, help="processes for the distributed comparison (default 2; 1 skips)")
    ap.add_argument("--repeats", type=int, default=2, help="A/B rounds (default 2)")
    ap.add_argument("--model", default=None, help="an xlfast run: encode ne-en devtest with it instead")
    ap.add_argument("--eval-ne-en", metavar="RUN_DIR", default=None,
                    help="instead: sentence mining P/R/F1 on ne-en devtest with a trained run")
    args = ap.parse_args()
    if args.eval_ne_en:
        return evaluate_ne_en(args.eval_ne_en)

    state = cpu_state()
    print(f"CPU state: {state}; torch threads {torch.get_num_threads()}")
    work = Path(tempfile.mkdtemp(prefix="bench-mine-"))
    if args.model:
        from xlfast.encoders import RunEncoder
        from xlfast.io import read_mono
        from xlfast.paths import data_file

        encoder = RunEncoder.load(args.model)
        src_lines = list(read_mono(data_file("ne-en", "devtest.ne")))
        tgt_lines = list(read_mono(data_file("ne-en", "devtest.en")))
        label = f"run {args.model} on ne-en devtest"
    else:
        encoder = SyntheticEncoder(dim=args.dim)
        src_lines = encoder.corpus("src", args.tokens, seed=1)
        tgt_lines = encoder.corpus("tgt", args.tokens, seed=2)
        label = f"synthetic d={args.dim}"

    t_enc, (src, tgt) = timed(lambda: (mine.encode_corpus(encoder, "src", src_lines, work),
                                      mine.encode_corpus(encoder, "tgt", tgt_lines, work)))
    n, m = src.n_tokens, tgt.n_tokens
    print(f"{label}: {n:,} x {m:,} tokens, dim {encoder.dim}, metric {args.metric}")

    # End-to-end word mining (stage split) against a bare kernel call on the same shapes, alternating.
    mined, bare = [], []
    result = None
    for _ in range(args.repeats):
        t, result = timed(lambda: mine.mine_words(src, tgt, metric=args.metric, threshold=0.2))
        mined.append((t, result.seconds))
        xs = torch.from_numpy(Rows(src.vectors).all())
        xt = torch.from_numpy(Rows(tgt.vectors).all())
        t, _ = timed(lambda: topk(xs, xt, 1, metric=args.metric, knn=10, both=True, normalized=True))
        bare.append(t)
    search_s = statistics.median(s["search"] for _, s in mined)
    aggregate = statistics.median(s["aggregate"] for _, s in mined)
    kernel = statistics.median(bare)
    total = t_enc + search_s + aggregate
    print(f"stages: encode {t_enc:.2f}s  search {search_s:.2f}s  aggregate {aggregate:.3f}s  "
          f"-> {(n + m) / total:,.0f} tokens/s end to end ({(n + m) / search_s:,.0f} tokens/s search only)")
    print(f"search stage / bare csls.topk (same shapes, same run): {search_s:.2f}s / {kernel:.2f}s = {search_s / kernel:.2f}x")
    print(f"mined {len(result.pairs):,} word pairs from {result.token_pairs:,} token pairs")
    rows = [dict(label=label, n=n, m=m, dim=encoder.dim, metric=args.metric, nproc=1, encode_s=round(t_enc, 3),
                 search_s=round(search_s, 3), aggregate_s=round(aggregate, 4), kernel_s=round(kernel, 3),
                 cpu_state=state)]

    if args.nproc > 1:
        xs, xt = Rows(src.vectors).all(), Rows(tgt.vectors).all()
        one_t, many_t = [], []
        for _ in range(args.repeats):
            t1, one = timed(lambda: search(xs, xt, args.metric))
            tn, many = timed(lambda: search(xs, xt, args.metric, nproc=args.nproc, work_dir=work / "dist"))
            one_t.append(t1)
            many_t.append(tn)
        same = (np.array_equal(one.fwd_indices, many.fwd_indices) and np.array_equal(one.bwd_indices, many.bwd_indices)
                and np.allclose(one.fwd_scores, many.fwd_scores, atol=1e-6))
        a, b = statistics.median(one_t), statistics.median(many_t)
        print(f"search 1 process {a:.2f}s vs {args.nproc} processes {b:.2f}s (incl. spawn) = {a / b:.2f}x; "
              f"identical output: {same}")
        rows.append(dict(rows[0], nproc=args.nproc, search_s=round(b, 3), kernel_s=round(a, 3)))

    new = not CSV.exists()
    with CSV.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
    print(f"appended {len(rows)} rows to {CSV}")


if __name__ == "__main__":
    main()
