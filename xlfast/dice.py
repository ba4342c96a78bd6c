"""Dice pseudo-dictionary: word pairs that co-occur in aligned sentences (model selection without gold).

For each source word s and target word t, `co(s,t)` is the number of sentence pairs containing both,
`df` the number of sentences containing the word; `Dice = 2·co / (df_s + df_t)`. A pair is kept when
`co ≥ min_count` and `Dice ≥ threshold`, ranked by co-occurrence (then Dice), at most `max_pairs`
(Wada et al. 2021, model selection without gold data; as the authors' code, twadada/multilingual-nlm,
does in generate_dice_dict, min_count applies to the co-occurrence count).

Counting is sparse: each sentence pair contributes the cartesian product of its *distinct, frequent
enough* words, encoded as one int64 key per pair and counted with one sort (np.unique) — never a V×V
matrix. Pairs whose document frequencies alone rule out the threshold are dropped before counting.
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
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    src_vocab, src_ids, src_df = _index_sentences(src_sents)
    tgt_vocab, tgt_ids, tgt_df = _index_sentences(tgt_sents)
    n_tgt = max(len(tgt_vocab), 1)

    # co ≤ min(df_s, df_t): a word seen in fewer than min_count sentences can never qualify.
    src_ok = src_df >= min_count
    tgt_ok = tgt_df >= min_count
    # Dice ≤ 2·min(df)/(df_s+df_t); with r = df_t/df_s this needs r ∈ [t/(2−t), (2−t)/t].
    ratio_lo = threshold / (2.0 - threshold)

    keys = []
    for s_ids, t_ids in zip(src_ids, tgt_ids):
        s_ids = s_ids[src_ok[s_ids]]
        t_ids = t_ids[tgt_ok[t_ids]]
        if s_ids.size == 0 or t_ids.size == 0:
            continue
        ds = src_df[s_ids][:, None].astype(np.float64)
        dt = tgt_df[t_ids][None, :].astype(np.float64)
        feasible = (np.minimum(ds, dt) >= ratio_lo * np.maximum(ds, dt))
        si, ti = np.nonzero(feasible)
        if si.size:
            keys.append(s_ids[si] * n_tgt + t_ids[ti])
    if not keys:
        return []
    pair_keys, co = np.unique(np.concatenate(keys), return_counts=True)
    s = pair_keys // n_tgt
    t = pair_keys % n_tgt
    dice = 2.0 * co / (src_df[s] + tgt_df[t])
    keep = (co >= min_count) & (dice >= threshold - 1e-12)
    s, t, co, dice = s[keep], t[keep], co[keep], dice[keep]
    rows = [(src_vocab[a], tgt_vocab[b], float(d), int(c)) for a, b, d, c in zip(s, t, dice, co)]
    rows.sort(key=lambda r: (-r[3], -r[2], r[0], r[1]))
    return [(a, b, d) for a, b, d, _ in rows[:max_pairs]]


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
