"""The lexicon-coverage kernel (stage 1's second source of mining candidates) against its dense
definition, and the lexicon it is fed."""
from __future__ import annotations

import numpy as np
import pytest

from xlfast.kernels.coverage import coverage_scores_reference, coverage_topk


def _random_problem(rng, n_a=40, n_b=60, words_a=30, words_b=25, per_sentence=5, lexicon=3):
    sets = [np.unique(rng.integers(0, words_a, rng.integers(0, per_sentence + 1))) for _ in range(n_a)]
    sentence_offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    sentence_words = np.concatenate(sets).astype(np.int64)
    word_weight = rng.random(words_a).astype(np.float32) + 0.1
    lex_words, lex_weights, lex_offsets = [], [], [0]
    for _ in range(words_a):
        k = rng.integers(0, lexicon + 1)
        lex_words.append(rng.choice(words_b, k, replace=False))
        lex_weights.append(np.sort(rng.random(k))[::-1])  # descending, as static_lexicons writes them
        lex_offsets.append(lex_offsets[-1] + k)
    b_sets = [np.unique(rng.integers(0, words_b, rng.integers(1, per_sentence + 1))) for _ in range(n_b)]
    postings = [[t for t in range(n_b) if u in b_sets[t]] for u in range(words_b)]
    posting_offsets = np.concatenate([[0], np.cumsum([len(p) for p in postings])])
    return (sentence_offsets, sentence_words, word_weight, np.array(lex_offsets), np.concatenate(lex_words),
            np.concatenate(lex_weights).astype(np.float32), posting_offsets,
            np.concatenate([np.asarray(p, np.int64) for p in postings]), n_b)


@pytest.mark.parametrize("seed,max_postings", [(0, 1 << 62), (1, 1 << 62), (2, 1 << 62), (3, 6)])
def test_coverage_topk_matches_the_dense_definition(seed, max_postings):
    """Each sentence's k best-covered sentences are the k largest of the dense scores, descending, ties
    to the smaller index, −1 past the sentences with any coverage; a word counts its best translation
    present once, not every translation present."""
    problem = _random_problem(np.random.default_rng(seed))
    k = 7
    got = coverage_topk(*problem, k, max_postings)
    dense = coverage_scores_reference(*problem, max_postings)
    if max_postings < 1 << 62:  # the cap leaves out the commonest translations: some scores must drop
        assert np.diff(problem[6]).max() > max_postings
        assert (dense < coverage_scores_reference(*problem)).any()
    assert got.shape == (len(dense), k)
    for s, row in enumerate(dense):
        order = np.lexsort((np.arange(len(row)), -row))
        want = [int(t) for t in order[:k] if row[t] > 0]
        assert got[s, :len(want)].tolist() == want
        assert (got[s, len(want):] == -1).all()


def test_a_word_counts_its_best_translation_once():
    """w0 translates to u0 (0.9), u1 (0.5) and u2 (0.45); target 0 holds u1 and u2, target 1 holds u0.
    Target 1 covers w0 better (0.9 against 0.5), though target 0's translations sum to more (0.95)."""
    args = (np.array([0, 1]), np.array([0]), np.array([2.0], np.float32), np.array([0, 3]), np.array([0, 1, 2]),
            np.array([0.9, 0.5, 0.45], np.float32), np.array([0, 1, 2, 3]), np.array([1, 0, 0]), 2)
    np.testing.assert_allclose(coverage_scores_reference(*args), [[1.0, 1.8]], rtol=1e-6)
    assert coverage_topk(*args, 3).tolist() == [[1, 0, -1]]
