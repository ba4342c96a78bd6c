"""Word alignment (1−AER) and BLI side by side: eflomal / Dice baselines and, given runs, xlfast.

    .venv/bin/python benchmarks/bench_align.py                       # eflomal on grk-it, en-fr, ro-en
    .venv/bin/python benchmarks/bench_align.py --run grk-it=runs/grk-it-word --run grk-it=runs/grk-it-swcnn
    .venv/bin/python benchmarks/bench_align.py --data none --bli-run runs/shp-es   # BLI vs the Dice baseline

Alignment data (../shared/data, README there): grk-it (330 pairs, 0-based sure gold), align-gold en-fr
(447) and ro-en (248) (1-based, sure + possible). Every system aligns exactly the gold's tokens
(whitespace tokens, no re-tokenisation) and is scored by xlfast.evaluate.aer. eflomal is stochastic:
each dataset is run --repeats times and the mean and spread printed. Rows are appended to --csv.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for baselines.py and csv_rows.py beside this script

from baselines import dice_bli, eflomal_align  # noqa: E402
from csv_rows import append_rows  # noqa: E402

from xlfast.evaluate import aer, bli  # noqa: E402
from xlfast.io import read_alignments, read_dictionary, read_parallel  # noqa: E402
from xlfast.paths import data_file  # noqa: E402

DATASETS = {
    # name: (parallel file, second file or None, gold, gold base, source lang, target lang)
    "grk-it": (("grk-it", "align.gr"), ("grk-it", "align.it"), ("grk-it", "align.gr-it.gold"), 0, "grk", "it"),
    "en-fr": (("align-gold", "enfr.src-tgt"), None, ("align-gold", "enfr.gold"), 1, "en", "fr"),
    "ro-en": (("align-gold", "roen.src-tgt"), None, ("align-gold", "roen.gold"), 1, "ro", "en"),
}


def load(name: str):
    par, second, gold_parts, base, src_lang, tgt_lang = DATASETS[name]
    corpus = read_parallel(data_file(*par), data_file(*second) if second else None)
    src = [s.split() for s in corpus.src]
    tgt = [t.split() for t in corpus.tgt]
    gold = read_alignments(data_file(*gold_parts), base=base, src_lens=[len(s) for s in src],
                           tgt_lens=[len(t) for t in tgt])
    return src, tgt, gold, src_lang, tgt_lang


def row(system, data, setting, scores, seconds, spread=None):
    return {
        "system": system, "data": data, "setting": setting,
        "precision": round(scores["precision"], 4), "recall": round(scores["recall"], 4),
        "aer": round(scores["aer"], 4), "one_minus_aer": round(1 - scores["aer"], 4),
        "spread": "" if spread is None else round(spread, 4), "seconds": round(seconds, 2),
    }


def bench_eflomal(name, src, tgt, gold, repeats):
    results = []
    for sym in ("grow-diag-final-and", "intersect"):
        scores, times = [], []
        for _ in range(repeats):
            links, seconds = eflomal_align(src, tgt, sym)
            scores.append(aer(links, gold))
            times.append(seconds)
        mean = {k: statistics.fmean(s[k] for s in scores) for k in ("precision", "recall", "aer")}
        spread = statistics.pstdev([1 - s["aer"] for s in scores]) if repeats > 1 else None
        results.append(row("eflomal", name, f"{sym} (x{repeats})", mean, statistics.fmean(times), spread))
    return results


def bench_run(name, run_dir, src, tgt, gold, src_lang, tgt_lang, batch_size):
    from xlfast.align import align_sentences
    from xlfast.run import Run

    run = Run.load(run_dir)
    if src_lang not in run.langs or tgt_lang not in run.langs:
        src_lang, tgt_lang = run.langs[0], run.langs[1]
    if run.tokenizer.lowercase:
        src = [[w.lower() for w in s] for s in src]
        tgt = [[w.lower() for w in t] for t in tgt]
    label = f"xlfast {Path(run_dir).name}"
    results = []
    for emb in ("mix", "contextual", "static"):
        for null in ("none", "min", "max"):
            start = time.perf_counter()
            out = align_sentences(run, src, tgt, src_lang, tgt_lang, emb=emb, null=null, batch_size=batch_size)
            seconds = time.perf_counter() - start
            scores = aer([r.links for r in out], gold)
            results.append(row(label, name, f"{emb} gdfa null={null}", scores, seconds))
    return results


def bench_bli(run_dirs):
    src_path, tgt_path = data_file("shp-es", "train.tok.shp"), data_file("shp-es", "train.tok.es")
    dictionary = read_dictionary(data_file("shp-es", "bli.dev.tsv"))
    src = [line.split() for line in src_path.read_text(encoding="utf-8").splitlines()]
    tgt = [line.split() for line in tgt_path.read_text(encoding="utf-8").splitlines()]
    rows = []
    start = time.perf_counter()
    r = dice_bli(src, tgt, dictionary)
    rows.append({"system": "Dice co-occurrence", "data": "shp-es bli.dev", **_bli_cols(r),
                 "seconds": round(time.perf_counter() - start, 2)})
    for run_dir in run_dirs:
        from xlfast.run import Run

        run = Run.load(run_dir)
        src_lang, tgt_lang = ("shp", "es") if {"shp", "es"} <= set(run.langs) else run.langs[:2]
        sw, sv = run.word_vectors(src_lang)
        tw, tv = run.word_vectors(tgt_lang)
        for method in ("csls", "nn"):
            start = time.perf_counter()
            r = bli(sw, sv, tw, tv, dictionary, method=method)
            rows.append({"system": f"xlfast {Path(run_dir).name} {method}", "data": "shp-es bli.dev",
                         **_bli_cols(r), "seconds": round(time.perf_counter() - start, 2)})
    return rows


def _bli_cols(r):
    return {k: round(r[k], 4) for k in ("p@1", "p@5", "p@10", "coverage")} | {"n_eval": r["n_eval"]}


def print_rows(rows, columns):
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="grk-it,en-fr,ro-en", help="datasets, comma separated, or 'none'")
    p.add_argument("--run", action="append", default=[], metavar="DATA=RUN_DIR",
                   help="score an xlfast run trained on DATA's sentences (repeatable)")
    p.add_argument("--no-eflomal", action="store_true", help="skip the eflomal baseline")
    p.add_argument("--repeats", type=int, default=3, help="eflomal runs per dataset (it samples); default 3")
    p.add_argument("--bli", action="store_true", help="shp-es BLI: the Dice baseline (and --bli-run runs)")
    p.add_argument("--bli-run", action="append", default=[], metavar="RUN_DIR", help="score BLI of a run")
    p.add_argument("--batch-size", type=int, default=256, help="sentence pairs per alignment batch; default 256")
    p.add_argument("--csv", default=None, help="append rows to this CSV")
    args = p.parse_args(argv)

    names = [] if args.data == "none" else args.data.split(",")
    runs = [r.split("=", 1) for r in args.run]
    rows = []
    for name in names:
        if name not in DATASETS:
            p.error(f"unknown dataset {name!r}: {', '.join(DATASETS)}")
        if not data_file(*DATASETS[name][0]).exists():
            print(f"skip {name}: data not found under {data_file()}")
            continue
        src, tgt, gold, src_lang, tgt_lang = load(name)
        print(f"{name}: {len(src)} pairs, {sum(len(s) for s in gold.sure)} sure links ({gold.how})", flush=True)
        if not args.no_eflomal:
            rows += bench_eflomal(name, src, tgt, gold, args.repeats)
        for data, run_dir in runs:
            if data == name:
                rows += bench_run(name, run_dir, src, tgt, gold, src_lang, tgt_lang, args.batch_size)
    if rows:
        print_rows(rows, ["system", "data", "setting", "precision", "recall", "aer", "one_minus_aer", "spread",
                          "seconds"])
    if args.csv:
        append_rows(args.csv, rows)
    if args.bli or args.bli_run:
        bli_rows = bench_bli(args.bli_run)
        print_rows(bli_rows, ["system", "data", "p@1", "p@5", "p@10", "coverage", "n_eval", "seconds"])
        if args.csv:
            append_rows(Path(args.csv).with_name(Path(args.csv).stem + "_bli.csv"), bli_rows)


if __name__ == "__main__":
    main()
