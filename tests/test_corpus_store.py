"""The memory-mapped corpus store: what goes in comes back as the same word ids, in bounded chunks."""
from collections import Counter

import numpy as np
import pytest

from xlfast import corpus_store
from xlfast.corpus_store import SideSpec, Store, TokenArrays
from xlfast.dice import dice_pairs, pseudo_dictionary
from xlfast.synthetic import make_pair

SPECIALS = ("<pad>", "<unk>")


def _vocabularies(min_count):
    def build(counts: dict[str, Counter]) -> dict[str, list[str]]:
        return {lang: list(SPECIALS) + sorted((w for w, n in c.items() if n >= min_count), key=lambda w: (-c[w], w))
                for lang, c in counts.items()}
    return build


def test_store_round_trips_word_ids_and_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_store, "CHUNK_TOKENS", 7)  # many chunks: the appends and remaps must join up
    pair = make_pair(n_sentences=120, vocab=30, seed=3)
    records = list(zip(pair.src_sents, pair.tgt_sents)) + [(["lonely"], [])]  # an empty side: dropped
    store, counts, vocabs = corpus_store.build(
        tmp_path / "store", [[SideSpec("c0.src", "aa"), SideSpec("c0.tgt", "bb")]], ((0, r) for r in records),
        _vocabularies(min_count=2), key={"k": 1}, unk=1)
    assert counts["aa"] == Counter(w for s in pair.src_sents for w in s)
    assert counts["bb"] == Counter(w for s in pair.tgt_sents for w in s)
    assert store.dropped == 1
    for name, lang, sents in (("c0.src", "aa", pair.src_sents), ("c0.tgt", "bb", pair.tgt_sents)):
        index = {w: i for i, w in enumerate(vocabs[lang])}
        want = [[index.get(w, 1) for w in s] for s in sents]
        arrays = store.sides[name]
        assert isinstance(arrays.ids, np.memmap)
        assert arrays.tolist() == want
        assert arrays.lengths().tolist() == [len(s) for s in sents]
    assert 1 in store.sides["c0.src"].ids  # words seen once became <unk>
    assert not list(tmp_path.glob("*.building"))


def test_reusable_only_with_the_same_key(tmp_path):
    groups = [[SideSpec("m.aa", "aa")], [SideSpec("m.bb", "bb")]]
    records = [(0, (["x", "y"],)), (1, (["u"],)), (0, (["y"],))]
    corpus_store.build(tmp_path / "s", groups, iter(records), _vocabularies(1), key={"a": 1}, unk=1)
    again = Store.reusable(tmp_path / "s", {"a": 1})
    assert again is not None and again.sides["m.aa"].tolist() == [[3, 2], [2]] and again.sides["m.bb"].tolist() == [[2]]
    again.keep_array("dice.0", np.array([[2, 3]]))
    assert Store.open(tmp_path / "s").array("dice.0").tolist() == [[2, 3]] and again.array("nothing") is None
    assert Store.reusable(tmp_path / "s", {"a": 2}) is None
    assert Store.reusable(tmp_path / "elsewhere", {"a": 1}) is None


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_dice_on_arrays_matches_any_chunking(chunk):
    pair = make_pair(n_sentences=300, vocab=40, seed=5)
    words = {}
    src = TokenArrays.from_lists([[words.setdefault(("s", w), len(words)) for w in s] for s in pair.src_sents])
    tgt = TokenArrays.from_lists([[words.setdefault(("t", w), len(words)) for w in s] for s in pair.tgt_sents])
    s, t, dice, co = dice_pairs(src, tgt, min_count=3, threshold=0.8, chunk=chunk)
    got = {(int(a), int(b)): (round(float(d), 9), int(c)) for a, b, d, c in zip(s, t, dice, co)}
    # the reference: the pairs by brute force over sets
    df_s = Counter(w for x in src.tolist() for w in set(x))
    df_t = Counter(w for y in tgt.tolist() for w in set(y))
    co_ref = Counter((a, b) for x, y in zip(src.tolist(), tgt.tolist()) for a in set(x) for b in set(y))
    want = {k: (round(2 * c / (df_s[k[0]] + df_t[k[1]]), 9), c) for k, c in co_ref.items()
            if c >= 3 and 2 * c / (df_s[k[0]] + df_t[k[1]]) >= 0.8 - 1e-12}
    assert got == want and len(want) > 20
    # the string interface gives the same pairs
    names = {v: k[1] for k, v in words.items()}
    by_words = {(a, b) for a, b, _ in pseudo_dictionary(pair.src_sents, pair.tgt_sents, max_pairs=10**6)}
    assert by_words == {(names[a], names[b]) for a, b in want}


def test_sentencepiece_trains_on_counts_of_any_size():
    """SentencePiece's memory follows the sum of the counts: past COUNTS_CAP they are scaled down (1.8e9
    tokens would not fit unscaled), and the proportions, so the pieces, stay."""
    from xlfast.subwords import Segmenter, train_sentencepiece

    counts = Counter(w for s in make_pair(n_sentences=200, vocab=30, seed=1).src_sents for w in s)
    huge = Counter({w: c * 10**6 for w, c in counts.items()})
    a, b = Segmenter(train_sentencepiece(huge, 60)), Segmenter(train_sentencepiece(counts, 60))
    assert all(a.pieces(w) == b.pieces(w) for w in counts)
