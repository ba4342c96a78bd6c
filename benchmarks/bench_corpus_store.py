"""Preprocessing a large parallel corpus into the memory-mapped store: time and peak RSS.

    .venv/bin/python benchmarks/bench_corpus_store.py --pairs 2000000 --work /tmp/xlfast-store

Writes a synthetic corpus (xlfast.synthetic, streamed) of --pairs / 10 distinct sentence pairs, and one of
--pairs pairs that repeats it ten times (generating 2M distinct pairs takes the pure-Python generator over
half an hour; preprocessing reads and tokenises every line whether it repeats or not, only the vocabulary
stops growing). Then prepares each in a fresh process as `xlfast train` does at the start of a run
(tokenise, count, vocabularies, SentencePiece, word-id arrays, Dice pseudo-dictionary) and reports seconds,
the process's peak RSS and the size of the arrays, so the growth of RSS with the corpus shows.

    .venv/bin/python benchmarks/bench_corpus_store.py --plan --pairs 2000000 --work /tmp/xlfast-plan

--plan measures one epoch's batches instead (`xlfast.train.epoch_plan`, batch 16) over --pairs synthetic
sentence pairs stored as the corpus store keeps them (memory-mapped offsets, 3-60 words a side): the
RSS before, the peak while the plan is built, the RSS while it is held, seconds, and a digest of the
batches (the same seed must give the same batches whatever the implementation).
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


def write_arrays(work: Path, pairs: int, seed: int = 0) -> None:
    """Two sides of `pairs` sentences as the store lays them out; the word ids are left unwritten (a sparse
    file): an epoch's plan reads only the offsets."""
    import numpy as np

    rng = np.random.default_rng(seed)
    work.mkdir(parents=True, exist_ok=True)
    for side in ("src", "tgt"):
        offsets = np.zeros(pairs + 1, dtype=np.int64)
        np.cumsum(rng.integers(3, 61, pairs), out=offsets[1:])
        np.lib.format.open_memmap(work / f"{side}.ids.npy", mode="w+", dtype=np.int32, shape=(int(offsets[-1]),))
        np.save(work / f"{side}.offsets.npy", offsets)


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def plan_once(work: Path, batch_size: int = 16, seed: int = 1) -> dict:
    """One epoch plan over the arrays in `work`, in this process (the child)."""
    import hashlib
    import random

    import numpy as np

    import xlfast
    from xlfast.corpora import PairData
    from xlfast.corpus_store import TokenArrays
    from xlfast.train import epoch_plan

    data = PairData(("src", "tgt"), TokenArrays.load(work, "src"), TokenArrays.load(work, "tgt"), [], "src-tgt")
    before, peak_before = _rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    plan = epoch_plan([data], batch_size, random.Random(seed))
    secs = time.perf_counter() - t0
    held, peak = _rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = hashlib.sha1()
    for k, idx in plan:
        digest.update(np.asarray(idx, dtype=np.int64).tobytes() + bytes([k]))
    return {"pairs": len(data), "batches": len(plan), "seconds": round(secs, 2), "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(peak, 1), "peak_before_mib": round(peak_before, 1), "rss_held_mib": round(held, 1),
            "digest": digest.hexdigest()[:16], "xlfast": str(Path(xlfast.__file__).parent)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/xlfast-store"))
    ap.add_argument("--child", nargs=2, metavar=("CORPUS", "OUT"))
    ap.add_argument("--plan", action="store_true", help="measure an epoch's plan instead of the preparation")
    ap.add_argument("--plan-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(prepare_once(Path(args.child[0]), Path(args.child[1]))))
        return
    if args.plan_child:
        print(json.dumps(plan_once(args.work)))
        return
    if args.plan:
        arrays = args.work / f"arrays.{args.pairs}"
        if not (arrays / "tgt.offsets.npy").exists():
            write_arrays(arrays, args.pairs)
        out = subprocess.run([sys.executable, __file__, "--plan-child", "--work", str(arrays)],
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        print(out, flush=True)
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
