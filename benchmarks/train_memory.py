"""Peak memory and time of a short training run, per oneDNN primitive-cache capacity.

    .venv/bin/python benchmarks/train_memory.py --corpus grk-it --epochs 4 --rounds 3
    .venv/bin/python benchmarks/train_memory.py --corpus ne-en --epochs 1 --rounds 1 --capacity 1024 --capacity 128

Each run is a process of its own (the capacity is read once, when torch first uses oneDNN): it trains the
default model (`Trainer`, the corpus's tokenizer, patience off) for `--epochs` and reports its peak resident
memory (`ru_maxrss`) and wall time. Capacities alternate A B A B (this CPU's speed drifts); the table gives
medians and the ratios against the first capacity given, the baseline (default: oneDNN's own 1,024 against
128). Short runs understate the time a bound costs: the shapes a long run meets again are rebuilt every
epoch under the bound, but only once without it. ne-en is FLoRes dev + devtest (5,394 pairs, batch 64 by the corpus-size rule).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, tempfile, time
t0 = time.perf_counter()
from xlfast.corpora import CorpusSpec
from xlfast.tokenize import TokenizerSpec
from xlfast.train import TrainConfig, Trainer
src, tgt, langs, tok, epochs = json.loads(sys.argv[1])
cfg = TrainConfig(corpora=[CorpusSpec(src, tgt, tuple(langs))], out=tempfile.mkdtemp() + "/run", epochs=epochs,
                  patience=10**6, tokenizer=TokenizerSpec(tok))
Trainer.new(cfg, log=lambda m: None).fit()
print(json.dumps(dict(peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      seconds=time.perf_counter() - t0)))
"""


def corpus_files(name: str, work: str) -> tuple[str, str, list[str], str]:
    from xlfast.paths import data_file

    if name == "grk-it":
        return str(data_file("grk-it", "align.gr")), str(data_file("grk-it", "align.it")), ["grk", "it"], "none"
    parts = {}
    for lang in ("ne", "en"):
        path = os.path.join(work, f"flores.{lang}")
        with open(path, "w", encoding="utf-8") as out:
            for split in ("dev", "devtest"):
                out.write(data_file("ne-en", f"{split}.{lang}").read_text(encoding="utf-8"))
        parts[lang] = path
    return parts["ne"], parts["en"], ["ne", "en"], "default"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=["grk-it", "ne-en"], default="grk-it")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--capacity", type=int, action="append", help="Repeatable; the first is the baseline. "
                                                                    "Default: 1024 (oneDNN's) and 128.")
    args = ap.parse_args()
    capacities = args.capacity or [1024, 128]
    with tempfile.TemporaryDirectory() as work:
        spec = json.dumps([*corpus_files(args.corpus, work), args.epochs])
        results = {c: [] for c in capacities}
        for r in range(args.rounds):
            for c in capacities:
                env = dict(os.environ, ONEDNN_PRIMITIVE_CACHE_CAPACITY=str(c))
                out = subprocess.run([sys.executable, "-c", CHILD, spec], env=env, capture_output=True, text=True,
                                     check=True)
                results[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1}, capacity {c}: {results[c][-1]}", flush=True)
    base = capacities[0]

    def median(c, key):
        return statistics.median(x[key] for x in results[c])

    print(f"\n{args.corpus}, {args.epochs} epoch(s), medians of {args.rounds}: capacity | peak MB | seconds | "
          f"× memory and × time against capacity {base}")
    for c in capacities:
        print(f"{c} | {median(c, 'peak_mb'):.0f} | {median(c, 'seconds'):.1f} | "
              f"{median(c, 'peak_mb') / median(base, 'peak_mb'):.2f} | {median(c, 'seconds') / median(base, 'seconds'):.2f}")


if __name__ == "__main__":
    main()
