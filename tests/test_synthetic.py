"""The synthetic pair: deterministic, learnable by design (lexicon, NULL words, reordering), reads back."""
from __future__ import annotations

from collections import Counter

import pytest

from xlfast.errors import XlfastError
from xlfast.io import read_alignments, read_dictionary, read_parallel
from xlfast.synthetic import MAX_LEN, MIN_LEN, SRC_DETERMINERS, TGT_OBJECT_MARKER, make_pair


@pytest.fixture(scope="module")
def pair():
    return make_pair()


def test_deterministic_by_seed(pair):
    again = make_pair()
    assert again.src_sents == pair.src_sents and again.tgt_sents == pair.tgt_sents and again.gold == pair.gold
    assert make_pair(seed=1).src_sents != pair.src_sents


def test_shape_and_lengths(pair):
    assert len(pair) == 600
    for s, t in zip(pair.src_sents, pair.tgt_sents):
        assert MIN_LEN <= len(s) <= MAX_LEN and MIN_LEN <= len(t) <= MAX_LEN


def test_gold_is_the_generating_alignment(pair):
    lexicon = set(pair.lexicon)
    for s, t, links in zip(pair.src_sents, pair.tgt_sents, pair.gold):
        assert all((s[i], t[j]) in lexicon for i, j in links)
        # NULL words: determiners and the object marker are never linked; every other word is
        assert {i for i, _ in links} == {i for i, w in enumerate(s) if w not in SRC_DETERMINERS}
        assert {j for _, j in links} == {j for j, w in enumerate(t) if w != TGT_OBJECT_MARKER}


def test_languages_are_disjoint_and_zipfian(pair):
    src = Counter(w for s in pair.src_sents for w in s)
    tgt = Counter(w for t in pair.tgt_sents for w in t)
    assert not set(src) & set(tgt)  # nothing to learn from identical strings
    content = [c for w, c in src.most_common() if w not in SRC_DETERMINERS]
    assert content[0] > 20 * content[len(content) // 2]  # a long tail, like real text
    assert 150 < len(src) < 300


def test_learnable_structure(pair):
    links = [(i, j) for g in pair.gold for i, j in g]
    # local reordering: far from the diagonal, but links stay local
    assert sum(i == j for i, j in links) / len(links) < 0.5
    assert sum(abs(i - j) <= 3 for i, j in links) / len(links) > 0.9
    # one-to-many words: some source words have two target translations in every occurrence
    per_src = Counter(s for s, _ in pair.lexicon)
    assert 3 <= sum(n == 2 for n in per_src.values()) and all(n <= 2 for n in per_src.values())
    # shared stems: plural/past forms extend a stem that also occurs bare or with another suffix
    src_words = {w for s in pair.src_sents for w in s}
    assert sum(w[:-2] in src_words or w[:-2] + "ra" in src_words for w in src_words if w.endswith(("si", "tu"))) > 20


def test_write_reads_back_through_io(pair, tmp_path):
    files = pair.write(tmp_path / "demo")
    corpus = read_parallel(files["corpus"])
    assert corpus.fmt == "tsv" and corpus.src[0].split() == pair.src_sents[0]
    assert read_dictionary(files["lexicon"]) == pair.lexicon
    assert read_alignments(files["gold"]).sure == pair.gold
    with pytest.raises(XlfastError, match="not a directory"):
        pair.write(files["corpus"])


def test_bad_arguments():
    with pytest.raises(XlfastError):
        make_pair(n_sentences=0)
    assert len(make_pair(n_sentences=5, vocab=10)) == 5
