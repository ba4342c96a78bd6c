"""Dice pseudo-dictionary: word pairs that co-occur in aligned sentences (model selection without gold).

For each source word s and target word t, `co(s,t)` is the number of sentence pairs containing both,
`df` the number of sentences containing the word; `Dice = 2·co / (df_s + df_t)`. A pair is kept when
`co ≥ min_count` and `Dice ≥ threshold`, ranked by co-occurrence (then Dice), at most `max_pairs`
(Wada et al. 2021, model selection without gold data; as the authors' code, twadada/multilingual-nlm,
does in generate_dice_dict, min_count applies to the co-occurrence count).

Counting is sparse: each sentence pair contributes the cartesian product of its *distinct, frequent
enough* words, encoded as one int64 key per pair and counted by sorting (np.unique) a chunk of sentences
at a time — never a V×V matrix, never the whole corpus at once. Pairs whose document frequencies alone
rule out the threshold are dropped before counting.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _as_tokens(sentence) -> Sequence[str]:
    return sentence.split() if isinstance(sentence, str) else sentence


def _index_sentences(sents: Sequence[Sequence[str]]) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """Distinct word ids per sentence, the vocabulary, and the document frequency of each id."""
    vocab: dict[str, int] = {}
    per_sentence: list[np.ndarray] = []
    for sent in sents:
        ids = {vocab.setdefault(w, len(vocab)) for w in _as_tokens(sent)}
        per_sentence.append(np.fromiter(ids, dtype=np.int64, count=len(ids)))
    flat = np.concatenate(per_sentence) if per_sentence else np.zeros(0, np.int64)
    df = np.bincount(flat, minlength=len(vocab))
    return list(vocab), per_sentence, df


def pseudo_dictionary(
    src_sents: Iterable[Sequence[str]],
    tgt_sents: Iterable[Sequence[str]],
    min_count: int = 3,
    threshold: float = 0.8,
    max_pairs: int = 5000,
) -> list[tuple[str, str, float]]:
    """Return `(src_word, tgt_word, dice)` for pairs with `co ≥ min_count` and `Dice ≥ threshold`.

    Sentences are token lists (a plain string is split on whitespace). Sorted by co-occurrence count,
    then Dice, both descending (ties broken alphabetically so the result is reproducible).
    """
    src_sents = list(src_sents)
    tgt_sents = list(tgt_sents)
    if len(src_sents) != len(tgt_sents):
        raise ValueError(f"source has {len(src_sents)} sentences, target {len(tgt_sents)}")
    src_vocab, src_arrays = _as_arrays(src_sents)
    tgt_vocab, tgt_arrays = _as_arrays(tgt_sents)
    s, t, dice, co = dice_pairs(src_arrays, tgt_arrays, min_count, threshold)
    rows = [(src_vocab[a], tgt_vocab[b], float(d), int(c)) for a, b, d, c in zip(s, t, dice, co)]
    rows.sort(key=lambda r: (-r[3], -r[2], r[0], r[1]))
    return [(a, b, d) for a, b, d, _ in rows[:max_pairs]]


def _as_arrays(sents: Sequence[Sequence[str]]):
    from xlfast.corpus_store import TokenArrays

    vocab: dict[str, int] = {}
    arrays = TokenArrays.from_lists([vocab.setdefault(w, len(vocab)) for w in _as_tokens(s)] for s in sents)
    return list(vocab), arrays


def _distinct(arrays, start: int, stop: int, n_words: int) -> tuple[np.ndarray, np.ndarray]:
    """(sentence − start, word id) of the distinct words of sentences [start, stop), by sentence then id."""
    lo, hi = int(arrays.offsets[start]), int(arrays.offsets[stop])
    sent = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(arrays.offsets[start : stop + 1]))
    keys = np.unique(sent * n_words + np.asarray(arrays.ids[lo:hi], dtype=np.int64))
    return keys // n_words, keys % n_words


def dice_pairs(src, tgt, min_count: int = 3, threshold: float = 0.8, first_word: int = 0,
               chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(source id, target id, Dice, co-occurrence) of every pair with `co ≥ min_count` and
    `Dice ≥ threshold`, unordered; ids below `first_word` (specials) never qualify. `src`, `tgt`:
    sentences as word ids (xlfast.corpus_store.TokenArrays), read `chunk` sentences at a time, so
    memory follows the number of candidate pairs, not the corpus."""
    if len(src) != len(tgt):
        raise ValueError(f"source has {len(src)} sentences, target {len(tgt)}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    n = len(src)
    n_src = int(src.ids.max()) + 1 if len(src.ids) else 1
    n_tgt = int(tgt.ids.max()) + 1 if len(tgt.ids) else 1
    src_df = np.zeros(n_src, dtype=np.int64)
    tgt_df = np.zeros(n_tgt, dtype=np.int64)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        src_df += np.bincount(_distinct(src, a, b, n_src)[1], minlength=n_src)
        tgt_df += np.bincount(_distinct(tgt, a, b, n_tgt)[1], minlength=n_tgt)
    # co ≤ min(df_s, df_t): a word seen in fewer than min_count sentences can never qualify.
    src_ok = src_df >= min_count
    tgt_ok = tgt_df >= min_count
    src_ok[:first_word] = False
    tgt_ok[:first_word] = False
    # Dice ≤ 2·min(df)/(df_s+df_t); with r = df_t/df_s this needs r ∈ [t/(2−t), (2−t)/t].
    ratio_lo = threshold / (2.0 - threshold)

    pair_keys = np.zeros(0, dtype=np.int64)
    co = np.zeros(0, dtype=np.int64)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        s_sent, s_ids = _distinct(src, a, b, n_src)
        keep = src_ok[s_ids]
        s_sent, s_ids = s_sent[keep], s_ids[keep]
        t_sent, t_ids = _distinct(tgt, a, b, n_tgt)
        keep = tgt_ok[t_ids]
        t_sent, t_ids = t_sent[keep], t_ids[keep]
        # every (source word, target word) of each sentence pair: source words repeated once per
        # target word of their sentence, target words gathered block by block
        t_count = np.bincount(t_sent, minlength=b - a)
        t_first = np.cumsum(t_count) - t_count
        partners = t_count[s_sent]
        src_rep = np.repeat(s_ids, partners)
        block = np.repeat(np.cumsum(partners) - partners, partners)
        tgt_rep = t_ids[np.repeat(t_first[s_sent], partners) + np.arange(len(src_rep)) - block]
        ds, dt = src_df[src_rep], tgt_df[tgt_rep]
        feasible = np.minimum(ds, dt) >= ratio_lo * np.maximum(ds, dt)
        keys, counts = np.unique(src_rep[feasible] * n_tgt + tgt_rep[feasible], return_counts=True)
        pair_keys, inverse = np.unique(np.concatenate([pair_keys, keys]), return_inverse=True)
        co = np.bincount(inverse, weights=np.concatenate([co, counts]), minlength=len(pair_keys)).astype(np.int64)
    s, t = pair_keys // n_tgt, pair_keys % n_tgt
    dice = 2.0 * co / np.maximum(src_df[s] + tgt_df[t], 1)
    keep = (co >= min_count) & (dice >= threshold - 1e-12)
    return s[keep], t[keep], dice[keep], co[keep]


def dice_dictionary(src, tgt, min_count: int = 3, threshold: float = 0.8, first_word: int = 0,
                    max_pairs: int = 5000) -> np.ndarray:
    """`dice_pairs` as an [n, 2] array of (source id, target id), ranked by co-occurrence, then Dice
    (ties by id), at most `max_pairs`: the pseudo-dictionary of a corpus held as word ids."""
    s, t, dice, co = dice_pairs(src, tgt, min_count, threshold, first_word)
    order = np.lexsort((t, s, -dice, -co))[:max_pairs]
    return np.stack([s[order], t[order]], axis=1).astype(np.int64).reshape(-1, 2)


def write_dictionary(path, pairs: Iterable[tuple[str, str, float]]) -> None:
    """Write `src tgt` lines (the MUSE dictionary format) atomically."""
    from xlfast.io import atomic_write_text

    atomic_write_text(path, "".join(f"{p[0]} {p[1]}\n" for p in pairs))


def dice_translations(
    src_sents: Iterable[Sequence[str]],
    tgt_sents: Iterable[Sequence[str]],
    query_words: Iterable[str],
    k: int = 10,
) -> dict[str, list[tuple[str, float]]]:
    """For each query source word, its k target words of highest Dice (the co-occurrence BLI baseline).

    Only sentences that contain a query word are counted, so this stays cheap on large corpora.
    Ties in Dice go to the more frequent co-occurrence, then alphabetical order.
    """
    src_vocab, src_ids, src_df = _index_sentences(list(src_sents))
    tgt_vocab, tgt_ids, tgt_df = _index_sentences(list(tgt_sents))
    src_index = {w: i for i, w in enumerate(src_vocab)}
    wanted = np.zeros(len(src_vocab), dtype=bool)
    queries = [w for w in dict.fromkeys(query_words)]
    for w in queries:
        if w in src_index:
            wanted[src_index[w]] = True
    n_tgt = max(len(tgt_vocab), 1)
    keys = []
    for s_ids, t_ids in zip(src_ids, tgt_ids):
        s_ids = s_ids[wanted[s_ids]]
        if s_ids.size and t_ids.size:
            keys.append((s_ids[:, None] * n_tgt + t_ids[None, :]).ravel())
    out: dict[str, list[tuple[str, float]]] = {w: [] for w in queries}
    if not keys:
        return out
    pair_keys, co = np.unique(np.concatenate(keys), return_counts=True)
    s, t = pair_keys // n_tgt, pair_keys % n_tgt
    dice = 2.0 * co / (src_df[s] + tgt_df[t])
    by_word: dict[int, list[tuple[float, int, str]]] = {}
    for a, b, d, c in zip(s.tolist(), t.tolist(), dice.tolist(), co.tolist()):
        by_word.setdefault(a, []).append((d, c, tgt_vocab[b]))
    for w in queries:
        cands = by_word.get(src_index.get(w, -1), [])
        cands.sort(key=lambda r: (-r[0], -r[1], r[2]))
        out[w] = [(name, d) for d, _, name in cands[:k]]
    return out
