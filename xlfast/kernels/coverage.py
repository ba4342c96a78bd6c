"""Lexicon coverage of sentence pairs, the k best per sentence, through an inverted index.

score(s, t) = Σ over the distinct words w of sentence s of weight(w) × the largest lexicon weight of a
translation of w that occurs in sentence t (0 when none does). A dense score over every pair would cost
S_a × S_b; walking the postings of w's few translations touches only the sentences that share one, so
the cost follows the corpus's word statistics, not the square of its size. This is sparse, branchy
work over small integer arrays, so it runs as a Numba CPU kernel on every machine (the GPU would wait on
the transfers); `coverage_topk_reference` is the plain dense definition the tests compare against.

A translation found in more than `max_postings` sentences is skipped: a word that common cannot single
out a sentence's best k, and walking its postings from every sentence would make the cost quadratic in
the corpus size. Lexicon entries of one word are sorted by weight, descending: the first entry that reaches a sentence
is that word's best translation in it, and a per-(sentence, word) stamp keeps later ones from adding.
Ties in the top k go to the smaller sentence index.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange


@njit(inline="always")
def _insert(vals, idx, v, j):
    p = vals.shape[0] - 1
    while p > 0 and (vals[p - 1] < v or (vals[p - 1] == v and idx[p - 1] > j)):
        vals[p] = vals[p - 1]
        idx[p] = idx[p - 1]
        p -= 1
    vals[p] = v
    idx[p] = j


@njit(parallel=True, cache=True)
def _coverage_topk(sentence_offsets, sentence_words, word_weight, lex_offsets, lex_words, lex_weights,
                   posting_offsets, postings, n_other, k, max_postings, blocks):
    n = sentence_offsets.shape[0] - 1
    out = np.full((n, k), -1, np.int64)
    step = (n + blocks - 1) // blocks
    for b in prange(blocks):
        acc = np.zeros(n_other, np.float32)
        stamp = np.full(n_other, -1, np.int64)  # the (sentence, word) position that last reached a sentence
        seen = np.full(n_other, -1, np.int64)  # the sentence that last reached it
        touched = np.empty(n_other, np.int64)
        vals = np.empty(k, np.float32)
        idx = np.empty(k, np.int64)
        for s in range(b * step, min(n, (b + 1) * step)):
            count = 0
            for p in range(sentence_offsets[s], sentence_offsets[s + 1]):
                w = sentence_words[p]
                for e in range(lex_offsets[w], lex_offsets[w + 1]):
                    v = word_weight[w] * lex_weights[e]
                    u = lex_words[e]
                    if posting_offsets[u + 1] - posting_offsets[u] > max_postings:
                        continue
                    for q in range(posting_offsets[u], posting_offsets[u + 1]):
                        t = postings[q]
                        if stamp[t] == p:
                            continue
                        stamp[t] = p
                        if seen[t] != s:
                            seen[t] = s
                            acc[t] = 0.0
                            touched[count] = t
                            count += 1
                        acc[t] += v
            vals[:] = -1.0
            idx[:] = -1
            for c in range(count):
                t = touched[c]
                v = acc[t]
                if v > 0.0 and (v > vals[k - 1] or (v == vals[k - 1] and t < idx[k - 1])):
                    _insert(vals, idx, v, t)
            for c in range(k):
                out[s, c] = idx[c]
    return out


def coverage_topk(sentence_offsets: np.ndarray, sentence_words: np.ndarray, word_weight: np.ndarray,
                  lex_offsets: np.ndarray, lex_words: np.ndarray, lex_weights: np.ndarray,
                  posting_offsets: np.ndarray, postings: np.ndarray, n_other: int, k: int,
                  max_postings: int = 1 << 62) -> np.ndarray:
    """[S, k] indices of the best-covered sentences of the other corpus per sentence, descending (−1 where
    fewer than k score above 0). Sentence s's distinct words are sentence_words[sentence_offsets[s]:
    sentence_offsets[s+1]]; word w's translations lex_words[lex_offsets[w]:lex_offsets[w+1]] with
    lex_weights descending; word u of the other corpus occurs in postings[posting_offsets[u]:
    posting_offsets[u+1]]; translations found in more than `max_postings` sentences are skipped."""
    n = len(sentence_offsets) - 1
    if k <= 0 or n <= 0:
        return np.full((max(n, 0), max(k, 0)), -1, np.int64)
    blocks = max(1, min(n, 4 * get_num_threads()))
    return _coverage_topk(np.ascontiguousarray(sentence_offsets, np.int64),
                          np.ascontiguousarray(sentence_words, np.int64),
                          np.ascontiguousarray(word_weight, np.float32),
                          np.ascontiguousarray(lex_offsets, np.int64), np.ascontiguousarray(lex_words, np.int64),
                          np.ascontiguousarray(lex_weights, np.float32),
                          np.ascontiguousarray(posting_offsets, np.int64), np.ascontiguousarray(postings, np.int64),
                          int(n_other), int(k), int(max_postings), blocks)


def coverage_scores_reference(sentence_offsets, sentence_words, word_weight, lex_offsets, lex_words, lex_weights,
                              posting_offsets, postings, n_other: int, max_postings: int = 1 << 62) -> np.ndarray:
    """The dense [S, n_other] coverage scores, straight from the definition (for tests)."""
    n = len(sentence_offsets) - 1
    occurs = np.zeros((n_other, len(posting_offsets) - 1), bool)
    for u in range(len(posting_offsets) - 1):
        occurs[postings[posting_offsets[u]: posting_offsets[u + 1]], u] = True
    out = np.zeros((n, n_other), np.float64)
    for s in range(n):
        for w in sentence_words[sentence_offsets[s]: sentence_offsets[s + 1]]:
            entries = range(lex_offsets[w], lex_offsets[w + 1])
            best = np.zeros(n_other)
            for e in entries:
                if posting_offsets[lex_words[e] + 1] - posting_offsets[lex_words[e]] > max_postings:
                    continue
                best = np.maximum(best, lex_weights[e] * occurs[:, lex_words[e]])
            out[s] += word_weight[w] * best
    return out
