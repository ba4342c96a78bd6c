"""Preprocessing a large parallel corpus into the memory-mapped store: time and peak RSS.

    .venv/bin/python benchmarks/bench_corpus_store.py --pairs 2000000 --work /tmp/xlfast-store

Writes a synthetic corpus (xlfast.synthetic, streamed) of --pairs / 10 distinct sentence pairs, and one of
--pairs pairs that repeats it ten times (generating 2M distinct pairs takes the pure-Python generator over
half an hour; preprocessing reads and tokenises every line whether it repeats or not, only the vocabulary
stops growing). Then prepares each in a fresh process as `xlfast train` does at the start of a run
(tokenise, count, vocabularies, SentencePiece, word-id arrays, Dice pseudo-dictionary) and reports seconds,
the process's peak RSS and the size of the arrays, so the growth of RSS with the corpus shows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def write_corpus(path: Path, pairs: int, seed: int = 0) -> float:
    from xlfast.synthetic import sentence_pairs

    t0 = time.perf_counter()
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as f:
        for src, tgt, _, _ in sentence_pairs(pairs, vocab=2000, seed=seed):
            f.write(" ".join(src) + "\t" + " ".join(tgt) + "\n")
    os.replace(tmp, path)
    return time.perf_counter() - t0


def prepare_once(corpus: Path, out: Path) -> dict:
    """One preparation in this process (the child): seconds, peak RSS, array bytes."""
    from xlfast.train import TrainConfig, TASKS
    from xlfast.corpora import CorpusSpec
    from xlfast.tokenize import TokenizerSpec

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = TrainConfig(corpora=[CorpusSpec(str(corpus), None, ("src", "tgt"))], out=str(out),
                      tokenizer=TokenizerSpec("none")).resolved()  # the run directory receives the store
    t0 = time.perf_counter()
    prep = TASKS["parallel"].prepare(cfg, None, lambda m: None)
    secs = time.perf_counter() - t0
    arrays = sum(d.nbytes() for d in prep.datasets)
    return {"pairs": len(prep.datasets[0]), "seconds": round(secs, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_mib": round(base / 1024, 1), "arrays_mib": round(arrays / 2**20, 1),
            "vocab": {lang: len(v) for lang, v in prep.vocabs.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/xlfast-store"))
    ap.add_argument("--child", nargs=2, metavar=("CORPUS", "OUT"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(prepare_once(Path(args.child[0]), Path(args.child[1]))))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    for pairs in (args.pairs // 10, args.pairs):
        corpus = args.work / f"synthetic.{pairs}.src-tgt.tsv"
        if not corpus.exists() and pairs < args.pairs:
            print(f"writing {corpus}: {write_corpus(corpus, pairs):.1f} s", flush=True)
        elif not corpus.exists():
            unique = (args.work / f"synthetic.{args.pairs // 10}.src-tgt.tsv").read_bytes()
            with open(corpus, "wb") as f:
                for _ in range(10):
                    f.write(unique)
        out = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(args.work / f"run.{pairs}")],
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        print(out, flush=True)


if __name__ == "__main__":
    main()
