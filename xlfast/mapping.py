"""Mapping-based alignment: orthogonal Procrustes with iterative CSLS refinement (Conneau et al. 2018, §2.2).

Conventions: embeddings are row matrices (one word per row). The map `W` is a d×d orthogonal matrix
with `W x_i ≈ y_i`, so the mapped source space is `X @ W.T`. For paired rows X_D, Y_D the Procrustes
solution is `W = U Vᵀ` with `U Σ Vᵀ = SVD(Y_Dᵀ X_D)` — the row-matrix form of the column-matrix
`SVD(Y Xᵀ)` of Smith et al. (2017) and Conneau et al. (2018).

Refinement (MUSE / vecmap style): map, induce a dictionary of *mutual* nearest neighbours under CSLS
among the `max_vocab` most frequent words of each side (`.vec` files list words by frequency), solve
Procrustes on it, repeat. Each step is scored without gold data by MUSE's criterion — the mean cosine
between a frequent source word and its CSLS-nearest target — and the best step is kept by default.

The combined framework of Wang et al. (2020) is the same loop started from the identity map: the
jointly trained spaces of an xlfast run already share one space, so no seed dictionary is needed.

All nearest-neighbour search goes through `xlfast.kernels.csls.topk` (the project's only CSLS).
`map_spaces` is the whole of `xlfast map`: read, normalise, seed, refine, write.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from xlfast.errors import InputError, UsageError, XlfastError
from xlfast.normalization import apply_normalization, parse_normalization
from xlfast.rundir import RunDir

log = logging.getLogger("xlfast.mapping")
SELECTIONS = ("best", "last")  # which step's map is kept: the best by the unsupervised criterion, or the last


# ----------------------------------------------------------------------------------------------
# Procrustes


def procrustes(src_rows: np.ndarray, tgt_rows: np.ndarray) -> np.ndarray:
    """The orthogonal W minimising ||src_rows Wᵀ − tgt_rows||_F (rows paired), as float32 d×d."""
    if src_rows.shape != tgt_rows.shape or src_rows.ndim != 2:
        raise ValueError(f"paired rows must have one shape, got {src_rows.shape} and {tgt_rows.shape}")
    # float64 for the d×d cross-covariance: summing many float32 products loses digits W needs.
    cross = tgt_rows.astype(np.float64).T @ src_rows.astype(np.float64)
    u, _, vt = np.linalg.svd(cross)
    return (u @ vt).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# seed dictionaries


@dataclass
class SeedPairs:
    """Row indices of paired words, and how much of the requested dictionary the vocabularies cover."""

    src: np.ndarray
    tgt: np.ndarray
    source: str  # "dictionary", "identical" or "identity" (no pairs: start from W = I)
    requested: int = 0  # dictionary pairs asked for (identical: words in the smaller vocabulary)
    covered: int = 0  # of those, pairs with both words in the vocabularies

    def __len__(self) -> int:
        return int(self.src.shape[0])


def _first_index(words: Sequence[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w, i)  # a duplicated word keeps its first (most frequent) row
    return index


def seed_from_dictionary(
    src_words: Sequence[str], tgt_words: Sequence[str], pairs: Iterable[tuple[str, str]]
) -> SeedPairs:
    """Every dictionary pair whose two words are both in the vocabularies (a word may have several
    translations; each pair is one Procrustes row)."""
    src_index, tgt_index = _first_index(src_words), _first_index(tgt_words)
    seen: set[tuple[int, int]] = set()
    src_rows, tgt_rows = [], []
    requested = 0
    for s, t in pairs:
        requested += 1
        i, j = src_index.get(s), tgt_index.get(t)
        if i is None or j is None or (i, j) in seen:
            continue
        seen.add((i, j))
        src_rows.append(i)
        tgt_rows.append(j)
    return SeedPairs(
        np.asarray(src_rows, dtype=np.int64), np.asarray(tgt_rows, dtype=np.int64), "dictionary", requested, len(seen)
    )


def seed_from_identical(src_words: Sequence[str], tgt_words: Sequence[str]) -> SeedPairs:
    """Pairs of identically spelled words (numbers, names, punctuation, shared loanwords)."""
    tgt_index = _first_index(tgt_words)
    src_index = _first_index(src_words)
    src_rows = [i for w, i in src_index.items() if w in tgt_index]
    tgt_rows = [tgt_index[src_words[i]] for i in src_rows]
    return SeedPairs(
        np.asarray(src_rows, dtype=np.int64),
        np.asarray(tgt_rows, dtype=np.int64),
        "identical",
        min(len(src_index), len(tgt_index)),
        len(src_rows),
    )


def identity_start() -> SeedPairs:
    empty = np.zeros(0, dtype=np.int64)
    return SeedPairs(empty, empty.copy(), "identity")


# ----------------------------------------------------------------------------------------------
# CSLS-induced dictionaries


def _to_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


@dataclass
class InducedDictionary:
    src: np.ndarray  # mutual CSLS nearest neighbours, row indices into the source space
    tgt: np.ndarray
    criterion: float  # mean cosine of each frequent source word to its CSLS-nearest target (MUSE)
    mutual_csls: float = 0.0  # mean CSLS of the mutual pairs (Wada & Iwata's selection criterion)


def induce_dictionary(
    mapped_src: np.ndarray, tgt: np.ndarray, max_vocab: int = 20000, knn: int = 10, mem: int | None = None
) -> InducedDictionary:
    """Mutual nearest neighbours under CSLS among the first `max_vocab` rows of each side."""
    from xlfast.kernels import csls  # the project's one CSLS implementation

    n_src, n_tgt = min(max_vocab, mapped_src.shape[0]), min(max_vocab, tgt.shape[0])
    src_unit = csls.normalize(mapped_src[:n_src]).numpy()
    tgt_unit = csls.normalize(tgt[:n_tgt]).numpy()
    knn = max(1, min(knn, n_src, n_tgt))
    result = csls.topk(src_unit, tgt_unit, 1, metric="csls", knn=knn, both=True, normalized=True, mem=mem)
    fwd = _to_numpy(result.indices).reshape(n_src, -1)[:, 0].astype(np.int64)
    rev = _to_numpy(result.rev_indices).reshape(n_tgt, -1)[:, 0].astype(np.int64)
    src_rows = np.arange(n_src, dtype=np.int64)
    mutual = rev[fwd] == src_rows
    criterion = float(np.einsum("ij,ij->i", src_unit, tgt_unit[fwd], dtype=np.float64).mean()) if n_src else 0.0
    fwd_scores = _to_numpy(result.scores).reshape(n_src, -1)[:, 0].astype(np.float64)
    mutual_csls = float(fwd_scores[mutual].mean()) if mutual.any() else 0.0
    return InducedDictionary(src_rows[mutual], fwd[mutual], criterion, mutual_csls)


# ----------------------------------------------------------------------------------------------
# the refinement loop


@dataclass
class MapStep:
    step: str  # "seed" / "identity" for the start, then "refine 1", "refine 2", ...
    dictionary_size: int  # pairs W of this step was solved on (0 for the identity start)
    criterion: float  # unsupervised score of this W (higher is better)
    induced_size: int  # mutual CSLS pairs found with this W (the next step's dictionary)
    evaluation: dict | None = None  # BLI figures when an evaluation dictionary was given

    def as_dict(self) -> dict:
        out = {
            "step": self.step,
            "dictionary_size": self.dictionary_size,
            "criterion": round(self.criterion, 6),
            "induced_size": self.induced_size,
        }
        if self.evaluation is not None:
            out["evaluation"] = self.evaluation
        return out


@dataclass
class MapResult:
    W: np.ndarray  # selected map; mapped source = src @ W.T
    selected: int  # index into history
    history: list[MapStep] = field(default_factory=list)
    converged: bool = False  # the induced dictionary stopped changing before the last iteration

    def apply(self, src: np.ndarray) -> np.ndarray:
        return (src @ self.W.T).astype(np.float32)


def map_embeddings(
    src: np.ndarray,
    tgt: np.ndarray,
    seed: SeedPairs,
    *,
    iterations: int = 5,
    max_vocab: int = 20000,
    knn: int = 10,
    select: str = "best",
    keep_seed: bool = False,
    evaluate: Callable[[np.ndarray], dict] | None = None,
    on_step: Callable[[MapStep], None] | None = None,
    mem: int | None = None,
) -> MapResult:
    """Procrustes on the seed (or W = I for an identity start), then `iterations` refinements on
    CSLS-induced mutual nearest neighbours. `src`/`tgt` are already normalised. `select` is "best"
    (highest unsupervised criterion; ties go to the later step) or "last". With `keep_seed` every
    refinement solves on the seed pairs plus the induced ones (seed first; an induced pair whose source
    word the seed already translates is dropped), instead of the induced ones alone (MUSE)."""
    if src.ndim != 2 or tgt.ndim != 2 or src.shape[1] != tgt.shape[1]:
        raise XlfastError(f"the two spaces must have one dimension, got {src.shape[1]} and {tgt.shape[1]}")
    if select not in SELECTIONS:
        raise UsageError(f"--select must be {' or '.join(SELECTIONS)}, not '{select}'")
    if iterations < 0:
        raise UsageError("--iterations must be 0 or more")
    dim = src.shape[1]
    if seed.source == "identity":
        W = np.eye(dim, dtype=np.float32)
        label, dict_size = "identity", 0
    else:
        if len(seed) == 0:
            raise XlfastError(
                f"the seed ({seed.source}) has no pair with both words in the vocabularies; "
                "check the dictionary's direction (source word first) or use --identical"
            )
        W = procrustes(src[seed.src], tgt[seed.tgt])
        label, dict_size = "seed", len(seed)

    history: list[MapStep] = []
    maps: list[np.ndarray] = []
    previous: tuple[bytes, bytes] | None = None
    converged = False
    for t in range(iterations + 1):
        mapped = (src @ W.T).astype(np.float32)
        induced = induce_dictionary(mapped, tgt, max_vocab=max_vocab, knn=knn, mem=mem)
        step = MapStep(label, dict_size, induced.criterion, len(induced.src))
        if evaluate is not None:
            step.evaluation = evaluate(mapped)
        history.append(step)
        maps.append(W)
        if on_step is not None:
            on_step(step)
        if t == iterations:
            break
        key = (induced.src.tobytes(), induced.tgt.tobytes())
        if key == previous:
            converged = True  # the same dictionary gives the same W: further steps change nothing
            break
        previous = key
        pair_src, pair_tgt = induced.src, induced.tgt
        if keep_seed and len(seed):
            fresh = ~np.isin(pair_src, seed.src)
            pair_src = np.concatenate([seed.src, pair_src[fresh]])
            pair_tgt = np.concatenate([seed.tgt, pair_tgt[fresh]])
        if len(pair_src) == 0:
            break  # nothing mutual to solve on; keep what we have
        W = procrustes(src[pair_src], tgt[pair_tgt])
        label, dict_size = f"refine {t + 1}", len(pair_src)

    if select == "last":
        selected = len(history) - 1
    else:
        best = max(s.criterion for s in history)
        selected = max(i for i, s in enumerate(history) if s.criterion >= best - 1e-9)
    return MapResult(maps[selected], selected, history, converged)


# ----------------------------------------------------------------------------------------------
# the whole of `xlfast map`


@dataclass
class MapReport:
    """What `map_spaces` did: `summary` is map.json; `paths` the files written (source, target, W, summary)."""

    summary: dict
    result: MapResult
    seed: SeedPairs
    paths: dict[str, Path]


def parse_langs(spec: str) -> tuple[str, str]:
    """'src,tgt' -> ('src', 'tgt')."""
    chosen = [x.strip() for x in spec.split(",") if x.strip()]
    if len(chosen) != 2:
        raise UsageError(f"--langs needs exactly two languages (source,target), got '{spec}'")
    return chosen[0], chosen[1]


def _run_embeddings(run_dir: Path, langs: str | None) -> tuple[Path, Path]:
    """The static vectors of two languages of a run: --langs, else the run's two."""
    run = RunDir(run_dir)
    found = run.langs()
    if not found:
        raise XlfastError(f"{run_dir}: not an xlfast run directory (no config.json and no emb.<lang>.vec "
                          "files); give a run or two .vec files")
    chosen = list(parse_langs(langs)) if langs else found
    if len(chosen) != 2:
        raise UsageError(f"{run_dir}: pick two languages with --langs src,tgt (the run has: {', '.join(chosen)})")
    paths = tuple(run.vec_path(lang) for lang in chosen)
    for path, lang in zip(paths, chosen):
        if not path.is_file():
            raise XlfastError(f"{run_dir}: the run has no embeddings for '{lang}' ({path.name} is missing)")
    return paths  # type: ignore[return-value]


def _inputs(source: Path, target: Path | None, langs: str | None, out_dir: Path | None):
    """(src .vec, tgt .vec, output dir, src output name, tgt output name, run mode)."""
    if not source.exists():
        raise XlfastError(f"{source}: no such file or directory")
    if source.is_dir():
        if target is not None:
            raise UsageError(f"give either a run directory or two .vec files, not '{source}' and '{target}'")
        src_path, tgt_path = _run_embeddings(source, langs)
        return src_path, tgt_path, out_dir or source / "mapped", src_path.name, tgt_path.name, True
    if target is None:
        raise UsageError("give the target embeddings too: xlfast map SRC.vec TGT.vec -o OUT_DIR")
    if langs:
        raise UsageError("--langs only applies to a run directory")
    if out_dir is None:
        raise UsageError("give an output directory with -o OUT_DIR")
    if not target.is_file():
        raise XlfastError(f"{target}: no such file")
    src_name, tgt_name = source.name, target.name
    if src_name == tgt_name:  # e.g. a/emb.vec and b/emb.vec
        src_name, tgt_name = f"src.{src_name}", f"tgt.{tgt_name}"
    return source, target, out_dir, src_name, tgt_name, False


def map_spaces(source, target=None, out_dir=None, *, langs: str | None = None, seed_dict=None,
               identical: bool = False, normalize: str = "unit,center,unit", iterations: int = 5,
               max_vocab: int = 20000, knn: int = 10, select: str = "best", keep_seed: bool = False,
               max_words: int | None = None, eval_dict=None,
               on_step: Callable[[MapStep], None] | None = None) -> MapReport:
    """Map the source .vec onto the target .vec (seeded by `seed_dict` or `identical` spellings), or refine
    the two jointly trained spaces of a run directory from the identity (its two languages, or `langs`
    'src,tgt'; output by default in RUN/mapped). Writes to `out_dir` the mapped source and the normalised
    target (.vec), W.npy and map.json; with `eval_dict`, every step's BLI (CSLS, P@1/5/10 in percent)."""
    from xlfast import io
    from xlfast.evaluate import bli, in_percent

    started = time.perf_counter()
    source, target = Path(source), (Path(target) if target is not None else None)
    steps = parse_normalization(normalize)
    if seed_dict is not None and identical:
        raise UsageError("choose one seed: --dict SEED or --identical")
    src_path, tgt_path, out_dir, src_name, tgt_name, run_mode = _inputs(
        source, target, langs, Path(out_dir) if out_dir is not None else None)
    if seed_dict is None and not identical and not run_mode:
        raise UsageError("two independent spaces need a seed: --dict SEED or --identical")
    if out_dir.exists() and not out_dir.is_dir():
        raise XlfastError(f"{out_dir}: exists and is not a directory; -o names the output directory")
    for p in (seed_dict, eval_dict):
        if p is not None:
            io.check_input(p)

    src_words, src_vecs = io.read_vec(src_path, max_words=max_words)
    tgt_words, tgt_vecs = io.read_vec(tgt_path, max_words=max_words)
    if src_vecs.shape[1] != tgt_vecs.shape[1]:
        raise InputError(tgt_path, f"has {tgt_vecs.shape[1]} dimensions but {src_path.name} has "
                                   f"{src_vecs.shape[1]}; orthogonal mapping needs one dimension")
    src_vecs, tgt_vecs = apply_normalization(src_vecs, steps), apply_normalization(tgt_vecs, steps)
    if seed_dict is not None:
        seed = seed_from_dictionary(src_words, tgt_words, io.read_dictionary(seed_dict))
    elif identical:
        seed = seed_from_identical(src_words, tgt_words)
    else:
        seed = identity_start()
    if 0 < len(seed) < src_vecs.shape[1]:
        log.warning("%d seed pairs for %d dimensions: the first map is underdetermined; refinement has to do "
                    "the work", len(seed), src_vecs.shape[1])

    evaluate = None
    if eval_dict is not None:
        gold = io.read_dictionary(eval_dict)

        def evaluate(mapped: np.ndarray) -> dict:
            return in_percent(bli(src_words, torch.from_numpy(mapped), tgt_words, torch.from_numpy(tgt_vecs), gold,
                                  ks=(1, 5, 10), method="csls", knn=knn))

    result = map_embeddings(src_vecs, tgt_vecs, seed, iterations=iterations, max_vocab=max_vocab, knn=knn,
                            select=select, keep_seed=keep_seed, evaluate=evaluate, on_step=on_step)

    paths = {"source": out_dir / src_name, "target": out_dir / tgt_name, "W": out_dir / "W.npy",
             "summary": out_dir / "map.json"}
    io.write_vec(paths["source"], src_words, result.apply(src_vecs))
    io.write_vec(paths["target"], tgt_words, tgt_vecs)
    with io.atomic_open(paths["W"], "wb") as f:
        np.save(f, result.W)
    summary = {
        "mode": "run" if run_mode else "files",
        "source": os.fspath(src_path),
        "target": os.fspath(tgt_path),
        "source_words": len(src_words),
        "target_words": len(tgt_words),
        "dim": int(src_vecs.shape[1]),
        "normalize": list(steps),
        "seed": {"kind": seed.source, "pairs": len(seed), "requested": seed.requested, "covered": seed.covered,
                 "path": os.fspath(seed_dict) if seed_dict else None},
        "iterations": iterations,
        "max_vocab": max_vocab,
        "knn": knn,
        "select": select,
        "keep_seed": keep_seed,
        "selected_step": result.history[result.selected].step,
        "converged": result.converged,
        "history": [s.as_dict() for s in result.history],
        "eval_dict": os.fspath(eval_dict) if eval_dict else None,
        "outputs": {k: os.fspath(paths[k]) for k in ("source", "target", "W")},
        "seconds": round(time.perf_counter() - started, 3),
    }
    io.atomic_write_text(paths["summary"], json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return MapReport(summary, result, seed, paths)
