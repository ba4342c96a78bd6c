"""Mapping-based alignment: orthogonal Procrustes with iterative CSLS refinement (METHOD.md §6).

Conventions: embeddings are row matrices (one word per row). The map `W` is a d×d orthogonal matrix
with `W x_i ≈ y_i`, so the mapped source space is `X @ W.T`. For paired rows X_D, Y_D the Procrustes
solution is `W = U Vᵀ` with `U Σ Vᵀ = SVD(Y_Dᵀ X_D)` — the row-matrix form of METHOD.md's column-matrix
`SVD(Y Xᵀ)`.

Refinement (MUSE / vecmap style): map, induce a dictionary of *mutual* nearest neighbours under CSLS
among the `max_vocab` most frequent words of each side (`.vec` files list words by frequency), solve
Procrustes on it, repeat. Each step is scored without gold data by MUSE's criterion — the mean cosine
between a frequent source word and its CSLS-nearest target — and the best step is kept by default.

The combined framework of Wang et al. (2020) is the same loop started from the identity map: the
jointly trained spaces of an xlfast run already share one space, so no seed dictionary is needed.

All nearest-neighbour search goes through `xlfast.kernels.csls.topk` (the project's only CSLS).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from xlfast.errors import XlfastError

NORMALIZATION_STEPS = ("unit", "center", "none")


# ----------------------------------------------------------------------------------------------
# normalisation


def parse_normalization(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """'unit,center,unit' -> ('unit', 'center', 'unit'); '' or 'none' -> ()."""
    if spec is None:
        return ()
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    steps = []
    for raw in parts:
        step = raw.strip().lower()
        if not step:
            continue
        if step not in NORMALIZATION_STEPS:
            raise XlfastError(
                f"unknown normalisation step '{raw.strip()}' (choose from {', '.join(NORMALIZATION_STEPS)}, "
                "comma separated, e.g. unit,center,unit)"
            )
        if step != "none":
            steps.append(step)
    return tuple(steps)


def apply_normalization(vectors: np.ndarray, steps: Iterable[str]) -> np.ndarray:
    """Apply vecmap-style steps in order to a float32 copy: 'unit' scales rows to length 1 (zero rows
    stay zero), 'center' subtracts the mean word vector (dimension-wise)."""
    out = np.array(vectors, dtype=np.float32, copy=True)
    for step in steps:
        if step == "unit":
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        elif step == "center":
            out -= out.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        elif step != "none":
            raise XlfastError(f"unknown normalisation step '{step}'")
    return out


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
    if select not in ("best", "last"):
        raise XlfastError(f"--select must be 'best' or 'last', not '{select}'")
    if iterations < 0:
        raise XlfastError("--iterations must be 0 or more")
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
