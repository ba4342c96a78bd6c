"""The classic dictionary-coverage sentence matcher, the baseline of xlfast's sentence mining.

A translation lexicon from eflomal (benchmarks/baselines.py) trained on a parallel corpus: the word pairs
of the links both directions agree on (intersection), seen at least `min_count` times, plus identical
strings. A candidate pair (x, y) scores the share of x's tokens that have a translation in y and the share
of y's tokens that have one in x, averaged; ratio margin over the k best scores of each side (Artetxe &
Schwenk 2019); pairs that are each other's best by margin (mutual best) at or above a threshold are kept.

    python benchmarks/dictionary_mining.py --train-src A --train-tgt B --src X --tgt Y -o mined.tsv

writes the TSV of `xlfast mine --level sentence` (score, line numbers, sentences), so
`xlfast eval mine` scores it like xlfast's own mining.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch

from baselines import eflomal_directions
from xlfast.io import atomic_write_text, read_mono, read_parallel
from xlfast.mine import SENTENCE_COLUMNS
from xlfast.tokenize import TokenizerSpec


def lexicon(src_sents, tgt_sents, min_count: int = 2) -> set[tuple[str, str]]:
    """(source word, target word) pairs linked by both eflomal directions at least `min_count` times."""
    fwd, rev, _ = eflomal_directions(src_sents, tgt_sents)
    counts = Counter((s[i], t[j]) for s, t, f, r in zip(src_sents, tgt_sents, fwd, rev) for i, j in f & r)
    return {pair for pair, c in counts.items() if c >= min_count}


def coverage(src_sents, tgt_sents, lex: set[tuple[str, str]]) -> np.ndarray:
    """[N, M]: for each pair, the share of source tokens translated in the target (a lexicon pair or the
    same string) and the share of target tokens translated in the source, averaged."""
    def one_way(a_sents, b_sents, pairs):
        translations: dict[str, set[str]] = {}
        for s, t in pairs:
            translations.setdefault(s, set()).add(t)
        types = sorted({w for s in a_sents for w in s})
        index = {w: k for k, w in enumerate(types)}
        # covered[y, s] = 1 when sentence y of b holds a translation of a-word s
        covered = torch.zeros(len(types), len(b_sents))
        by_target: dict[str, list[int]] = {}
        for w in types:
            for t in translations.get(w, set()) | {w}:
                by_target.setdefault(t, []).append(index[w])
        for y, sent in enumerate(b_sents):
            rows = {k for t in set(sent) for k in by_target.get(t, ())}
            covered[list(rows), y] = 1.0
        counts = torch.zeros(len(a_sents), len(types))
        for x, sent in enumerate(a_sents):
            for w, c in Counter(sent).items():
                counts[x, index[w]] = c
        lengths = torch.tensor([max(len(s), 1) for s in a_sents], dtype=torch.float32)[:, None]
        return (counts @ covered) / lengths

    forward = one_way(src_sents, tgt_sents, lex)
    backward = one_way(tgt_sents, src_sents, {(t, s) for s, t in lex})
    return (0.5 * (forward + backward.T)).numpy()


def mine(scores: np.ndarray, knn: int = 4, threshold: float = 1.0) -> list[tuple[int, int, float]]:
    """Ratio margin, mutual best, at or above the threshold; highest margin first."""
    k = min(knn, scores.shape[0], scores.shape[1])
    r_src = -np.sort(-scores, axis=1)[:, :k].mean(axis=1)
    r_tgt = -np.sort(-scores, axis=0)[:k].mean(axis=0)
    margin = scores / np.maximum(0.5 * (r_src[:, None] + r_tgt[None, :]), 1e-9)
    best_t, best_s = margin.argmax(axis=1), margin.argmax(axis=0)
    pairs = [(i, int(j), float(margin[i, j])) for i, j in enumerate(best_t)
             if best_s[j] == i and margin[i, j] >= threshold and scores[i, j] > 0]
    return sorted(pairs, key=lambda p: -p[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-src", required=True)
    ap.add_argument("--train-tgt", required=True)
    ap.add_argument("--src", required=True, help="sentences to mine, one a line")
    ap.add_argument("--tgt", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--knn", type=int, default=4)
    ap.add_argument("--threshold", type=float, default=1.0)
    args = ap.parse_args()
    tok = TokenizerSpec("default", lowercase=True)
    t0 = time.perf_counter()
    train = read_parallel(args.train_src, args.train_tgt)
    lex = lexicon([tok(s) for s in train.src], [tok(t) for t in train.tgt], args.min_count)
    src, tgt = read_mono(args.src), read_mono(args.tgt)
    scores = coverage([tok(s) for s in src], [tok(t) for t in tgt], lex)
    pairs = mine(scores, args.knn, args.threshold)
    rows = [f"{v:.4f}\t{src.lines[i]}\t{tgt.lines[j]}\t{src[i]}\t{tgt[j]}\n" for i, j, v in pairs]
    atomic_write_text(args.output, "\t".join(SENTENCE_COLUMNS) + "\n" + "".join(rows))
    print(f"lexicon {len(lex)} pairs; mined {len(pairs)} pairs -> {args.output} ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
