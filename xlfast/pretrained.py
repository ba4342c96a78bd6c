"""Pre-trained word vectors for one language of a run (Wada et al. 2021, §3.7).

`xlfast train --pretrained en=cc.en.300.vec.gz --pretrained-max 200000`: the first `max` words of the
file (fastText ships them most frequent first) join that language's vocabulary. Their vectors are frozen
and enter the model as `a ⊗ E_pre + b`, with trainable vectors a and b shared by all of them; the
language's other words keep subword-aware embeddings trained from scratch. The vocabulary is the corpus
words, then the pre-trained words the corpus never shows, so BLI, `nn`, alignment and mining can reach
words absent from the parallel text ("pre-training makes it possible to measure the similarities between
Na words and English words that are out-of-vocabulary in the parallel corpus", §3.7). Only corpus words
are classes of the tied output layer: the others are retrieval targets, never predicted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xlfast.errors import XlfastError
from xlfast.normalization import apply_normalization


def parse_options(values: list[str]) -> dict[str, str]:
    """`--pretrained LANG=FILE` (repeatable, one language each) → {lang: file}."""
    out: dict[str, str] = {}
    for value in values:
        lang, sep, path = value.partition("=")
        lang, path = lang.strip(), path.strip()
        if not sep or not lang or not path:
            raise XlfastError(f"--pretrained {value!r}: expected LANG=FILE (e.g. en=cc.en.300.vec.gz)")
        if lang in out:
            raise XlfastError(f"--pretrained: language '{lang}' given twice")
        out[lang] = path
    return out


@dataclass
class PretrainedRows:
    """Where a language's frozen vectors go: `ids[r]` is the word id that row r of `vectors` belongs to.
    `ids` ascend; the ids at or past the trained vocabulary (words only the vectors know) come last and
    run on consecutively after it."""

    ids: np.ndarray  # int64 [m]
    vectors: np.ndarray  # float32 [m, d]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def extend_vocabulary(vocab: list[str], words: list[str], vectors: np.ndarray,
                      reserved: tuple[str, ...]) -> tuple[list[str], PretrainedRows]:
    """`vocab` (the corpus words, specials first) followed by the pre-trained words it lacks, and the
    rows of the frozen table: corpus words that have a vector, then the added words. `reserved` words
    (the specials) never take a pre-trained vector."""
    index = {w: i for i, w in enumerate(vocab)}
    in_corpus: list[tuple[int, int]] = []  # (word id, vector row)
    added: list[int] = []  # vector rows of words the corpus lacks
    for row, word in enumerate(words):
        if word in reserved:
            continue
        if word in index:
            in_corpus.append((index[word], row))
        else:
            added.append(row)
    in_corpus.sort()
    full = list(vocab) + [words[r] for r in added]
    ids = np.array([i for i, _ in in_corpus] + list(range(len(vocab), len(full))), dtype=np.int64)
    rows = [r for _, r in in_corpus] + added
    return full, PretrainedRows(ids, np.ascontiguousarray(vectors[rows], dtype=np.float32))


def problem(path: str, dim: int) -> str | None:
    """Why `path` cannot give a model of `dim` dimensions its vectors (read from its first vector), or None.
    The vectors enter as they are (a ⊗ E_pre + b), so their dimension must be the model's."""
    from xlfast.errors import InputError
    from xlfast.io import read_vec

    try:
        _, first = read_vec(path, max_words=1)
    except InputError as exc:
        return str(exc)
    if first.shape[1] != dim:
        return f"the vectors have {first.shape[1]} dimensions but the model {dim}: give --dim {first.shape[1]}"
    return None


def load(path: str, max_words: int | None, vocab: list[str], reserved: tuple[str, ...]) -> tuple[list[str], PretrainedRows]:
    """Read word2vec text (`.vec` or `.vec.gz`, or '-' for standard input) and extend `vocab` with it (see
    `extend_vocabulary`)."""
    from xlfast.io import read_vec

    words, vectors = read_vec(path, max_words=max_words)
    return extend_vocabulary(vocab, words, normalise(vectors), reserved)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit length, mean-centred, unit length again (the embedding normalisation of Artetxe et al. 2018,
    "A robust self-learning method...", §3.1). Vectors trained on little text share one dominant direction
    (fastText on the 15k Spanish sentences of shp-es: mean pairwise cosine 0.90, on 330 Italian ones
    0.98); frozen as they are, every word looks alike to the model and retrieval fails."""
    return apply_normalization(vectors, ("unit", "center", "unit"))
