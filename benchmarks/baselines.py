"""Baselines that xlfast's alignment and BLI are compared against, run on the same data.

- eflomal (`pip install eflomal`, the `bench` extra): a strong statistical aligner. Both directions
  from `eflomal-align`, symmetrised by xlfast.align.symmetrise (the same gdfa code as ours), so the
  only difference between the rows is where the directional links come from.
- Dice co-occurrence BLI: each dictionary source word's target words ranked by sentence-level Dice.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xlfast.align import symmetrise
from xlfast.dice import dice_translations
from xlfast.io import parse_pharaoh_line


def eflomal_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("eflomal-align")
    return str(beside_python) if beside_python.exists() else shutil.which("eflomal-align")


def eflomal_directions(src_sents, tgt_sents, extra_args=()) -> tuple[list[set], list[set], float]:
    """(forward, reverse) links per sentence from eflomal (both src→tgt oriented) and the seconds taken."""
    exe = eflomal_binary()
    if exe is None:
        raise RuntimeError("eflomal-align not found: pip install eflomal (the 'bench' extra)")
    with tempfile.TemporaryDirectory(prefix="xlfast-eflomal-") as tmp:
        src_file, tgt_file = os.path.join(tmp, "src"), os.path.join(tmp, "tgt")
        fwd_file, rev_file = os.path.join(tmp, "fwd"), os.path.join(tmp, "rev")
        # eflomal cannot take an empty line; a lone placeholder token keeps line numbers aligned.
        Path(src_file).write_text("".join((" ".join(s) or "<empty>") + "\n" for s in src_sents), encoding="utf-8")
        Path(tgt_file).write_text("".join((" ".join(t) or "<empty>") + "\n" for t in tgt_sents), encoding="utf-8")
        start = time.perf_counter()
        subprocess.run(
            [exe, "-s", src_file, "-t", tgt_file, "-f", fwd_file, "-r", rev_file, "--overwrite", *extra_args],
            check=True, capture_output=True,
        )
        seconds = time.perf_counter() - start
        fwd = [parse_pharaoh_line(line)[0] for line in Path(fwd_file).read_text(encoding="utf-8").splitlines()]
        rev = [parse_pharaoh_line(line)[0] for line in Path(rev_file).read_text(encoding="utf-8").splitlines()]
    return fwd, rev, seconds


def eflomal_align(src_sents, tgt_sents, sym="grow-diag-final-and") -> tuple[list[set], float]:
    fwd, rev, seconds = eflomal_directions(src_sents, tgt_sents)
    links = [symmetrise(f, r, len(s), len(t), sym) for f, r, s, t in zip(fwd, rev, src_sents, tgt_sents)]
    return links, seconds


def dice_bli(src_sents, tgt_sents, dictionary, ks=(1, 5, 10)) -> dict:
    """P@k of the Dice ranking, counted like xlfast.evaluate.bli (queries = dictionary words found in
    the source corpus with at least one translation in the target corpus)."""
    src_vocab = {w for s in src_sents for w in s}
    tgt_vocab = {w for t in tgt_sents for w in t}
    gold: dict[str, set[str]] = {}
    dict_words = dict.fromkeys(s for s, _ in dictionary)
    for s, t in dictionary:
        if s in src_vocab and t in tgt_vocab:
            gold.setdefault(s, set()).add(t)
    ranked = dice_translations(src_sents, tgt_sents, gold, k=max(ks))
    out = {}
    for k in ks:
        hits = sum(any(w in gold[s] for w, _ in ranked[s][:k]) for s in gold)
        out[f"p@{k}"] = hits / len(gold) if gold else 0.0
    out.update(n_eval=len(gold), n_dict_words=len(dict_words), coverage=len(gold) / max(len(dict_words), 1))
    return out
