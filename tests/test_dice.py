"""Dice pseudo-dictionary: a hand-counted case, a brute-force reference, and the real shp-es corpus."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from xlfast.dice import pseudo_dictionary
from xlfast.paths import data_file


def brute_force(src, tgt, min_count, threshold, max_pairs):
    df_s, df_t, co = Counter(), Counter(), Counter()
    for s, t in zip(src, tgt):
        s, t = set(s), set(t)
        df_s.update(s)
        df_t.update(t)
        co.update((a, b) for a in s for b in t)
    rows = []
    for (a, b), c in co.items():
        d = 2 * c / (df_s[a] + df_t[b])
        if c >= min_count and d >= threshold:
            rows.append((a, b, d, c))
    rows.sort(key=lambda r: (-r[3], -r[2], r[0], r[1]))
    return [(a, b, d) for a, b, d, _ in rows[:max_pairs]]


def test_hand_counted_case():
    # "cat" and "gatto" share all 4 sentences → Dice 1. "the"/"il" co-occur 3× but "the" is in 4
    # sentences: Dice = 2·3/(4+3) = 0.857. "dog"/"cane" co-occur only twice → below min_count 3.
    # "the"/"gatto": co 4, Dice 2·4/(4+4) = 1.0 (a frequent function word pairs with everything).
    src = [["the", "cat"], ["the", "cat", "dog"], ["the", "cat", "dog"], ["the", "cat"]]
    tgt = [["il", "gatto"], ["il", "gatto", "cane"], ["gatto", "cane"], ["il", "gatto"]]
    got = pseudo_dictionary(src, tgt, min_count=3, threshold=0.8)
    assert got == [
        ("cat", "gatto", 1.0),
        ("the", "gatto", 1.0),
        ("cat", "il", pytest.approx(6 / 7)),
        ("the", "il", pytest.approx(6 / 7)),
    ]
    assert all(p[0] != "dog" for p in got)
    # A stricter threshold keeps only the perfect pairs; max_pairs caps the list in rank order.
    assert [p[:2] for p in pseudo_dictionary(src, tgt, threshold=0.9)] == [("cat", "gatto"), ("the", "gatto")]
    assert len(pseudo_dictionary(src, tgt, max_pairs=1)) == 1


def test_strings_are_split_and_lengths_checked():
    assert pseudo_dictionary(["a b"] * 3, ["x"] * 3) == [("a", "x", 1.0), ("b", "x", 1.0)]
    with pytest.raises(ValueError):
        pseudo_dictionary([["a"]], [])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_corpora(seed):
    rng = random.Random(seed)
    src_words = [f"s{i}" for i in range(40)]
    tgt_words = [f"t{i}" for i in range(40)]
    src, tgt = [], []
    for _ in range(300):
        picks = rng.sample(range(40), rng.randint(1, 8))
        # Zipf-ish: low ids frequent; target mostly translates id→id with some noise.
        picks = [min(p, rng.randint(0, 39)) for p in picks]
        src.append([src_words[p] for p in picks])
        tgt.append([tgt_words[p if rng.random() < 0.9 else rng.randint(0, 39)] for p in picks])
    for min_count, thr in [(3, 0.8), (2, 0.5), (5, 0.3)]:
        got = pseudo_dictionary(src, tgt, min_count=min_count, threshold=thr, max_pairs=10_000)
        want = brute_force(src, tgt, min_count, thr, 10_000)
        assert [g[:2] for g in got] == [w[:2] for w in want]
        assert [g[2] for g in got] == pytest.approx([w[2] for w in want])
        assert got, "the random corpus should yield some pairs"


def test_real_corpus_shp_es():
    src_path, tgt_path = data_file("shp-es", "train.tok.shp"), data_file("shp-es", "train.tok.es")
    if not src_path.exists():
        pytest.skip("shared data not present")
    src = [line.split() for line in src_path.read_text(encoding="utf-8").splitlines()]
    tgt = [line.split() for line in tgt_path.read_text(encoding="utf-8").splitlines()]
    pairs = pseudo_dictionary(src, tgt)
    assert 50 < len(pairs) <= 5000
    assert all(d >= 0.8 for _, _, d in pairs)
    # Spanish function words are too frequent to reach Dice 0.8 with any Shipibo word.
    assert not any(t in {"de", "la", "que"} for _, t, _ in pairs)


def test_dice_translations_rank_by_dice():
    from xlfast.dice import dice_translations

    src = [["the", "cat"], ["the", "cat", "dog"], ["the", "cat", "dog"], ["the", "cat"]]
    tgt = [["il", "gatto"], ["il", "gatto", "cane"], ["gatto", "cane"], ["il", "gatto"]]
    got = dice_translations(src, tgt, ["dog", "cat", "zebra"], k=2)
    # dog: df 2; cane df 2, co 2 → 1.0; gatto df 4, co 2 → 4/6; il df 3, co 1 → 2/5.
    assert got["dog"] == [("cane", 1.0), ("gatto", pytest.approx(2 / 3))]
    assert got["cat"][0] == ("gatto", 1.0)
    assert got["zebra"] == []
