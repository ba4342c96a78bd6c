"""BLI P@1 after every epoch of one shp-es training run, in one process (on a GPU several settings can run
side by side). Each epoch resumes the run (`Trainer.resume`, as `xlfast train --resume --epochs E` does)
and scores the model the run keeps with `bli.dev.tsv` (as `xlfast eval bli` does). One JSON line an epoch.

    python benchmarks/bli_curve.py --out /tmp/b64s --epochs 7 --set batch_size=64 --set softmax=sampled
    python benchmarks/bli_curve.py --out /tmp/b16f --epochs 7 --set batch_size=16 --set softmax=full --set seed=2

`--set NAME=VALUE` takes any `xlfast.train.TrainConfig` setting (numbers and JSON literals parsed);
`--deadline S` stops after the epoch that ends past S seconds.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from xlfast.corpora import parallel_specs
from xlfast.evaluate import lexicon_induction
from xlfast.paths import data_file
from xlfast.rundir import RunDir
from xlfast.train import TrainConfig, Trainer


def setting(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="The run directory (new).")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--deadline", type=float, default=float("inf"))
    ap.add_argument("--set", type=setting, action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args()
    specs = parallel_specs([str(data_file("shp-es", "train.tok.shp")), str(data_file("shp-es", "train.tok.es"))],
                           ["shp,es"])
    quiet = lambda message: None  # noqa: E731
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        if epoch == 1:
            cfg = TrainConfig(corpora=specs, out=str(args.out), epochs=1, patience=args.epochs, **dict(args.set))
            trainer = Trainer.new(cfg, log=quiet)
        else:
            trainer = Trainer.resume(args.out, {"epochs": epoch}, log=quiet)
        trainer.fit()
        bli = lexicon_induction(args.out, dictionary=data_file("shp-es", "bli.dev.tsv"))["csls"]
        last = json.loads(RunDir(args.out).log_path.read_text().splitlines()[-1])
        print(json.dumps({"epoch": epoch, "p@1": round(bli["p@1"], 1), "p@5": round(bli["p@5"], 1),
                          "dict_p1": round(last["dict_p1"], 3), "loss": last["loss"],
                          "epoch_s": round(time.time() - t0, 1), "wall_s": round(time.time() - start, 1)}),
              flush=True)
        if time.time() - start > args.deadline:
            break


if __name__ == "__main__":
    main()
