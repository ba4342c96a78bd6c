"""The sentence-mining benchmark protocol (BUCC-style, on the shared data):

- ne-en: train on FLoRes dev (2,559 pairs); mine devtest.ne against devtest.en shuffled (2,835 each);
- shp-es: train on train (14,550 pairs); mine dev.shp against dev.es shuffled (996 each).

    python benchmarks/bench_sentence_mining.py prepare -o WORK      # shuffled targets and gold, per pair
    python benchmarks/bench_sentence_mining.py score -o WORK --pair ne-en --run NAME=RUN_DIR ...

`prepare` writes WORK/<pair>/{train.*, mine.src, mine.tgt, gold.src, gold.tgt} (the target side shuffled
with seed 0; the gold is the unshuffled test pair). `score` mines with each run through `xlfast mine
--level sentence`, once with one stage (--word-weight 0) and once with two (the defaults), scores each
TSV with `xlfast eval mine`, and also scores WORK/<pair>/baseline.tsv when present (written by
benchmarks/dictionary_mining.py). Every command it runs is printed, so each figure can be reproduced.

`--keep F` (prepare, score, sweep) makes and uses WORK/<pair>-keep<F·100>: a random share F of the test
sources against an independent random share F of the targets, so that only about F² of the pairs are
parallel (the gold) and the rest have no partner, as in comparable corpora.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from xlfast.io import read_parallel
from xlfast.paths import data_file

PAIRS = {
    "ne-en": dict(train=("ne-en", "dev.ne", "dev.en"), test=("ne-en", "devtest.ne", "devtest.en")),
    "shp-es": dict(train=("shp-es", "train.shp", "train.es"), test=("shp-es", "dev.shp", "dev.es")),
}
XLFAST = [sys.executable, "-m", "xlfast.cli.main"]


def pair_dir(out: Path, pair: str, keep: float = 1.0) -> Path:
    """WORK/<pair>, or WORK/<pair>-keep<percent> for a partly parallel version (`prepare --keep`)."""
    return out / (pair if keep >= 1.0 else f"{pair}-keep{round(100 * keep)}")


def prepare(out: Path, seed: int = 0, keep: float = 1.0) -> None:
    """`keep` < 1: a random share `keep` of the test sources is mined against an independent random share
    `keep` of the test targets, so that only the pairs both drew (about keep², the gold) are parallel and
    the rest of each side has no partner, as in comparable corpora (BUCC)."""
    for name, spec in PAIRS.items():
        d = pair_dir(out, name, keep)
        d.mkdir(parents=True, exist_ok=True)
        folder, a, b = spec["train"]
        train = read_parallel(data_file(folder, a), data_file(folder, b), skip_bad_lines=True)
        (d / "train.src").write_text("".join(s + "\n" for s in train.src), encoding="utf-8")
        (d / "train.tgt").write_text("".join(t + "\n" for t in train.tgt), encoding="utf-8")
        folder, a, b = spec["test"]
        test = read_parallel(data_file(folder, a), data_file(folder, b), skip_bad_lines=True)
        rng = np.random.default_rng(seed)
        n = len(test)
        targets = rng.permutation(n)[: round(keep * n)]  # in shuffled order (all of them: the full protocol)
        sources = np.sort(rng.permutation(n)[: round(keep * n)])
        gold = sorted(set(sources.tolist()) & set(targets.tolist()))
        (d / "gold.src").write_text("".join(test.src[i] + "\n" for i in gold), encoding="utf-8")
        (d / "gold.tgt").write_text("".join(test.tgt[i] + "\n" for i in gold), encoding="utf-8")
        (d / "mine.src").write_text("".join(test.src[i] + "\n" for i in sources), encoding="utf-8")
        (d / "mine.tgt").write_text("".join(test.tgt[i] + "\n" for i in targets), encoding="utf-8")
        print(f"{name}: {len(train)} training pairs, {len(sources)} / {len(targets)} test sentences to mine, "
              f"{len(gold)} of them parallel ({test.skipped} pairs with an empty side left out) -> {d}")


def run(cmd: list[str]) -> None:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


def evaluate(d: Path, tsv: Path) -> dict:
    out = tsv.with_suffix(".eval.json")
    run(XLFAST + ["eval", "mine", "--gold-src", str(d / "gold.src"), "--gold-tgt", str(d / "gold.tgt"),
                  "--pred", str(tsv), "--json", str(out)])
    return json.loads(out.read_text())


def score(out: Path, pair: str, runs: list[str], extra: list[str], keep: float = 1.0) -> None:
    d = pair_dir(out, pair, keep)
    rows = []
    for spec in runs:
        name, run_dir = spec.split("=", 1)
        for label, flags in (("one stage", ["--word-weight", "0"]), ("two stages", [])):
            tsv = d / f"{name}.{'two' if not flags else 'one'}.tsv"
            run(XLFAST + ["mine", "--model", run_dir, "--src", str(d / "mine.src"), "--tgt", str(d / "mine.tgt"),
                          "--level", "sentence", "-o", str(tsv), "--json", str(tsv.with_suffix(".json"))]
                + flags + extra)
            rows.append((name, label, evaluate(d, tsv)))
    if (d / "baseline.tsv").exists():
        rows.append(("dictionary coverage (eflomal)", "", evaluate(d, d / "baseline.tsv")))
    print(f"\n{pair}: system | mining | P | R | F1 | mined")
    for name, label, r in rows:
        print(f"{name} | {label} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['mined']}")


def sweep(out: Path, pair: str, tsv: Path, thresholds: list[float], keep: float = 1.0) -> None:
    """P/R/F1 of a mined TSV cut at each threshold: the selection is greedy in score order, so a higher
    threshold keeps a prefix of what a lower one mined (mine once with --threshold -9 to see the curve)."""
    from xlfast import evaluate
    from xlfast.mine import read_sentence_pairs

    d = pair_dir(out, pair, keep)
    test = read_parallel(d / "gold.src", d / "gold.tgt")
    gold = list(zip(test.src, test.tgt))
    scores = [float(line.split("\t", 1)[0]) for line in tsv.read_text(encoding="utf-8").splitlines()[1:]]
    pairs = read_sentence_pairs(tsv)
    for t in thresholds:
        r = evaluate.mining([p for p, v in zip(pairs, scores) if v >= t], gold)
        print(f"threshold {t:6.3f}: P {r['precision']:.3f}  R {r['recall']:.3f}  F1 {r['f1']:.3f}  mined {r['mined']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["prepare", "score", "sweep"])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--pair", choices=sorted(PAIRS))
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR, once per system")
    ap.add_argument("--mine-args", default="", help="extra `xlfast mine` options, e.g. '--threads 1'")
    ap.add_argument("--keep", type=float, default=1.0,
                    help="prepare / score a partly parallel version: this share of each side, drawn apart")
    ap.add_argument("--tsv", type=Path, help="sweep: a mined TSV")
    ap.add_argument("--thresholds", default="0,0.02,0.04,0.06,0.08,0.1,0.12,0.15,0.2")
    args = ap.parse_args()
    if not 0.0 < args.keep <= 1.0:
        ap.error("--keep must lie in (0, 1]")
    if args.action == "prepare":
        prepare(args.out, keep=args.keep)
    elif args.action == "sweep":
        sweep(args.out, args.pair, args.tsv, [float(t) for t in args.thresholds.split(",")], args.keep)
    else:
        score(args.out, args.pair, args.run, shlex.split(args.mine_args), args.keep)


if __name__ == "__main__":
    main()
