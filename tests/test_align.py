"""Alignment: grow-diag-final-and on hand-made cases, batched CSLS alignment, NULL heuristic, projection."""
from __future__ import annotations

import random

import pytest
import torch

from xlfast.align import (
    AlignOptions,
    align_batch,
    align_sentences,
    anchor_matrix,
    PairAlignment,
    align_lines,
    grow_diag_final_and,
    project_to_words,
    segment,
    symmetrise,
)
from xlfast.tokenize import TokenizerSpec
from xlfast.errors import XlfastError


def literal_gdfa(e2f, f2e, en, fn):
    """Koehn's pseudo-code transcribed line by line over the full grid (test reference)."""
    neighbouring = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
    union = set(e2f) | set(f2e)
    alignment = set(e2f) & set(f2e)

    def e_aligned(e):
        return any(a == e for a, _ in alignment)

    def f_aligned(f):
        return any(b == f for _, b in alignment)

    added = True
    while added:
        added = False
        for e in range(en):
            for f in range(fn):
                if (e, f) in alignment:
                    for de, df in neighbouring:
                        e_new, f_new = e + de, f + df
                        if (not e_aligned(e_new) or not f_aligned(f_new)) and (e_new, f_new) in union:
                            if (e_new, f_new) not in alignment:
                                alignment.add((e_new, f_new))
                                added = True
    for a in (e2f, f2e):
        for e_new in range(en):
            for f_new in range(fn):
                if not e_aligned(e_new) and not f_aligned(f_new) and (e_new, f_new) in a:
                    alignment.add((e_new, f_new))
    return alignment


# ------------------------------------------------------------------ symmetrisation, hand-made cases


def test_gdfa_grows_from_intersection_into_union_neighbours():
    # forward: 0→0, 1→1, 2→1 ; backward: 0←0, 1←1, 1←2 (target word 2 prefers source 1)
    forward = {(0, 0), (1, 1), (2, 1)}
    backward = {(0, 0), (1, 1), (1, 2)}
    # intersection {0-0, 1-1}; 2-1 and 1-2 touch 1-1 and each has one unaligned word → both grow in.
    assert grow_diag_final_and(forward, backward, 3, 3) == {(0, 0), (1, 1), (2, 1), (1, 2)}
    assert symmetrise(forward, backward, 3, 3, "intersect") == {(0, 0), (1, 1)}
    assert symmetrise(forward, backward, 3, 3, "union") == forward | backward
    assert symmetrise(forward, backward, 3, 3, "none") == forward


def test_gdfa_does_not_grow_when_both_words_aligned():
    # 3x3: intersection is the diagonal; union adds 0-1 whose words are both already aligned.
    forward = {(0, 1), (1, 1), (2, 2)}
    backward = {(0, 0), (1, 1), (2, 2)}
    # forward & backward = {1-1, 2-2}; 0-1 (union) is adjacent to 1-1, source 0 is unaligned → grows.
    # Then 0-0 (union, adjacent to 0-1) has target 0 unaligned → grows too.
    assert grow_diag_final_and(forward, backward, 3, 3) == {(0, 0), (0, 1), (1, 1), (2, 2)}
    # Now make source 0 and target 1 aligned first: 0-1 is in the union but both words are taken.
    forward = {(0, 0), (1, 1), (2, 1)}
    backward = {(0, 0), (1, 1), (2, 2)}
    # intersection {0-0, 1-1}; 2-1 neighbours 1-1 and source 2 is unaligned → grows; 2-2 neighbours
    # 2-1 … but source 2 is now aligned, target 2 is not → grows as well.
    assert grow_diag_final_and(forward, backward, 3, 3) == {(0, 0), (1, 1), (2, 1), (2, 2)}


def test_gdfa_final_and_adds_isolated_links_only_if_both_words_unaligned():
    # A 5x5 case: intersection {0-0}; 4-4 in forward only, far from everything → FINAL-AND adds it
    # (both words unaligned). 3-0 in backward only: target 0 is aligned → not added (that needs
    # grow-diag-final, not -and).
    forward = {(0, 0), (4, 4)}
    backward = {(0, 0), (3, 0)}
    assert grow_diag_final_and(forward, backward, 5, 5) == {(0, 0), (4, 4)}
    # Diagonal growth: 1-1 touches 0-0 diagonally.
    assert grow_diag_final_and({(0, 0), (1, 1)}, {(0, 0)}, 2, 2) == {(0, 0), (1, 1)}


def test_gdfa_sweep_order_matches_the_reference_on_random_cases():
    rng = random.Random(0)
    for _ in range(300):
        n, m = rng.randint(1, 9), rng.randint(1, 9)
        forward = {(i, rng.randrange(m)) for i in range(n) if rng.random() < 0.9}
        backward = {(rng.randrange(n), j) for j in range(m) if rng.random() < 0.9}
        assert grow_diag_final_and(forward, backward, n, m) == literal_gdfa(forward, backward, n, m)


def test_unknown_symmetrisation_is_an_error():
    with pytest.raises(XlfastError, match="unknown symmetrisation"):
        symmetrise(set(), set(), 1, 1, "grow-diag")


# ------------------------------------------------------------------ batched in-pair CSLS alignment


def _reference_pair(x, y, knn=3):
    """One pair at a time, full matrices (test reference): cos, CSLS, forward and backward argmax."""
    x = torch.nn.functional.normalize(x, dim=1)
    y = torch.nn.functional.normalize(y, dim=1)
    cos = x @ y.T
    r_t = cos.topk(min(knn, cos.shape[1]), dim=1).values.mean(1, keepdim=True)
    r_s = cos.topk(min(knn, cos.shape[0]), dim=0).values.mean(0, keepdim=True)
    csls = 2 * cos - r_t - r_s
    fwd = {(i, int(csls[i].argmax())) for i in range(cos.shape[0])}
    bwd = {(int(csls[:, j].argmax()), j) for j in range(cos.shape[1])}
    return cos, csls, fwd, bwd


def test_permutation_pairs_are_recovered():
    # Target = shuffled noisy copy of the source: the alignment must be the permutation.
    torch.manual_seed(0)
    srcs, tgts, perms = [], [], []
    for n in (1, 2, 5, 9, 4):
        x = torch.randn(n, 16)
        perm = torch.randperm(n)
        srcs.append(x)
        tgts.append(x[perm] + 0.05 * torch.randn(n, 16))
        perms.append(perm.tolist())
    for sym in ("grow-diag-final-and", "intersect", "union", "none"):
        out = align_batch(srcs, tgts, sym=sym)
        for res, perm in zip(out, perms):
            assert set(res.links) == {(perm[j], j) for j in range(len(perm))}


def test_batched_matches_one_pair_at_a_time_with_scores():
    torch.manual_seed(1)
    pairs = [(torch.randn(n, 8), torch.randn(m, 8)) for n, m in [(3, 7), (6, 2), (5, 5), (1, 4), (8, 9)]]
    out = align_batch([p[0] for p in pairs], [p[1] for p in pairs], sym="union")
    for (x, y), res in zip(pairs, out):
        cos, csls, fwd, bwd = _reference_pair(x, y)
        assert res.forward == fwd and res.backward == bwd
        assert set(res.links) == fwd | bwd
        for (i, j), (c, s) in zip(res.links, res.scores):
            assert c == pytest.approx(float(cos[i, j]), abs=1e-5)
            assert s == pytest.approx(float(csls[i, j]), abs=1e-5)


def test_empty_sentences_give_no_links():
    out = align_batch([torch.zeros(0, 4), torch.randn(2, 4)], [torch.randn(3, 4), torch.zeros(0, 4)])
    assert [r.links for r in out] == [[], []]


# ------------------------------------------------------------------ NULL heuristic


def _null_case():
    # Static space (dim 4), both BOS vectors along e3. Source word 1 and target word 1 resemble each
    # other only through their BOS-like component: cos(x1,y1) = 0.8 = cos(x1,BOS)·cos(y1,BOS) with
    # cos(·,BOS) = 0.894 each, so both rules drop 1-1 though it is each word's best match.
    e = torch.eye(4)
    src = torch.stack([e[0], 0.5 * e[1] + e[3]])
    tgt = torch.stack([e[0] + 0.1 * e[2], 0.5 * e[2] + e[3]])
    bos = e[3]
    return src, tgt, bos


def test_null_min_and_max_drop_links_closer_to_bos():
    src, tgt, bos = _null_case()
    plain = align_batch([src], [tgt], sym="union")[0]
    assert set(plain.links) == {(0, 0), (1, 1)}
    for rule in ("min", "max"):
        res = align_batch([src], [tgt], sym="union", null=rule, static_src=[src], static_tgt=[tgt],
                          src_bos=bos, tgt_bos=bos)[0]
        assert res.links == [(0, 0)], rule


def test_null_max_is_stricter_than_min():
    # cos(x,y)=0.6; cos(x,BOS_t)=0.5 (below), cos(y,BOS_s)=0.7 (above): min keeps, max drops.
    x = torch.tensor([[0.6, 0.5, (1 - 0.61) ** 0.5, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    bos_t = torch.tensor([0.0, 1.0, 0.0, 0.0])
    # BOS_s is chosen so that cos(y, BOS_s) = 0.7 while cos(x, y) = 0.6.
    bos_s = torch.tensor([0.7, 0.0, 0.0, (1 - 0.49) ** 0.5])
    cos_xy = float(torch.nn.functional.cosine_similarity(x, y))
    assert cos_xy == pytest.approx(0.6)
    assert float(torch.nn.functional.cosine_similarity(x, bos_t[None])) == pytest.approx(0.5)
    assert float(torch.nn.functional.cosine_similarity(y, bos_s[None])) == pytest.approx(0.7)
    # One-word sentences: CSLS = 2cos − cos − cos = 0, which the heuristic drops; add a distractor
    # target word orthogonal to x so the in-pair CSLS of the true link is positive.
    y2 = torch.cat([y, torch.tensor([[0.0, 0.0, 0.0, -1.0]])])
    kw = dict(sym="none", static_src=[x], static_tgt=[y2], src_bos=bos_s, tgt_bos=bos_t)
    assert align_batch([x], [y2], null="min", **kw)[0].links == [(0, 0)]
    assert align_batch([x], [y2], null="max", **kw)[0].links == []
    assert align_batch([x], [y2], null="none", **kw)[0].links == [(0, 0)]


def test_null_needs_static_vectors():
    with pytest.raises(XlfastError, match="NULL heuristic needs"):
        align_batch([torch.randn(2, 3)], [torch.randn(2, 3)], null="min")
    with pytest.raises(XlfastError, match="unknown NULL rule"):
        align_batch([torch.randn(2, 3)], [torch.randn(2, 3)], null="avg")


# ------------------------------------------------------------------ anchors: numbers and words spelt alike


def test_anchor_matrix_marks_numbers_in_any_script_and_words_spelt_alike():
    m = anchor_matrix(["Anna", "१९९०", "la", "casa", ".", "Venèzia", "Venèzia"],
                      ["anna", "1990", "la", "Haus", ".", "venezia", "VENEZIA", "Anna"])
    want = torch.zeros(7, 8, dtype=torch.bool)
    want[1, 1] = True  # 'la' is too short, '.' has no letter
    want[5, 5] = want[6, 6] = True  # twice on both sides: in order; 'Anna' once against twice: the vectors decide
    assert torch.equal(m, want)
    assert anchor_matrix([], ["x"]).shape == (0, 1)


def test_anchors_link_whatever_the_vectors_say_and_pass_the_null_heuristic():
    """Source word 0 is nearest target word 1 and source word 1 nearest target word 0; an anchor on
    (0, 0) makes that pair both words' best match (and the NULL heuristic, which drops the other links of
    this pair, keeps it); other words still choose by their vectors (target word 1 stays with source 0:
    other words may still link to an anchored word)."""
    e = torch.eye(4)
    src, tgt = torch.stack([e[0], e[1]]), torch.stack([e[1] + 0.1 * e[2], e[0] + 0.1 * e[2]])
    anchored = torch.tensor([[True, False], [False, False]])
    plain = align_batch([src], [tgt], sym="none")[0]
    assert plain.links == [(0, 1), (1, 0)]
    res = align_batch([src], [tgt], sym="union", anchors=[anchored])[0]
    assert res.forward == {(0, 0), (1, 0)} and res.backward == {(0, 0), (0, 1)}
    same = torch.stack([e[3], e[3]])  # static vectors all on <bos>: no link is nearer its partner than <bos>
    kw = dict(sym="union", static_src=[same], static_tgt=[same], src_bos=e[3], tgt_bos=e[3])
    assert align_batch([src], [tgt], null="max", **kw)[0].links == []
    assert align_batch([src], [tgt], null="max", anchors=[anchored], **kw)[0].links == [(0, 0)]


# ------------------------------------------------------------------ projection to the user's words


def test_segment_keeps_the_words_as_written():
    seg = segment("l'acqua  è\\' fredda.", TokenizerSpec("default"))
    assert seg.words == ["l'acqua", "è\\'", "fredda."]
    assert seg.tokens == ["l'", "acqua", "è", "\\", "'", "fredda", "."]
    # punctuation split off a word with letters carries no links; the word's letters do
    assert seg.word_of == [0, 0, 1, -1, -1, 2, -1]
    # a word made of punctuation only keeps its links, and `none` is the identity
    assert segment("« ok »", TokenizerSpec("default")).word_of == [0, 1, 2]
    plain = segment("l'acqua  è\\' fredda.", TokenizerSpec("none"))
    assert plain.tokens == plain.words and plain.word_of == [0, 1, 2]


def test_one_word_split_into_three_tokens_projects_back():
    # source words: "Kathmandu-based"(→ one token) "l'acqua"(→ l' acqua) "co-op's"(→ co-op, ', s: three tokens)
    src = segment("Kathmandu-based l'acqua co-op's", TokenizerSpec("default"))
    assert src.tokens == ["Kathmandu-based", "l'", "acqua", "co-op", "'", "s"]
    assert src.word_of == [0, 1, 1, 2, -1, 2]
    tgt = segment("a b c", TokenizerSpec("none"))
    token_links = [(0, 0), (1, 1), (2, 1), (3, 2), (4, 0), (5, 1)]
    scores = [(0.9, 0.5), (0.8, 0.2), (0.7, 0.4), (0.6, 0.3), (0.5, 0.9), (0.4, 0.1)]
    res = project_to_words(PairAlignment(token_links, scores, set(token_links), set()), src, tgt)
    # (4, 0) came from a bare apostrophe: dropped. Two tokens of word 1 hit word 1: one link, best score.
    assert res.links == [(0, 0), (1, 1), (2, 1), (2, 2)]
    assert res.scores == [(0.9, 0.5), (0.7, 0.4), (0.4, 0.1), (0.6, 0.3)]
    assert res.forward == {(0, 0), (1, 1), (2, 1), (2, 2)}


# ------------------------------------------------------------------ with a (stand-in) trained run


class FakeRun:
    """Same methods as xlfast.run.Run over a hand-made bilingual lexicon (static = contextual)."""

    def __init__(self):
        torch.manual_seed(3)
        self.concepts = {"cat": 0, "dog": 1, "eats": 2, "the": 3}
        self.words = {"en": {"the": 3, "cat": 0, "dog": 1, "eats": 2}, "it": {"il": 3, "gatto": 0, "cane": 1, "mangia": 2}}
        self.base = torch.randn(5, 12)

    def embed_words(self, lang, words):
        return torch.stack([self.base[self.words[lang].get(w, 4)] for w in words])

    def embed_sentences(self, lang, sentences, batch_size=64):
        return [self.embed_words(lang, s) for s in sentences]

    def bos_vector(self, lang):
        return self.base[4]


@pytest.mark.parametrize("emb", ["static", "contextual"])
def test_align_sentences_with_a_run_in_input_order(emb):
    run = FakeRun()
    src = [["the", "cat", "eats"], ["the", "dog"], ["dog", "eats", "the", "cat"]]
    tgt = [["il", "gatto", "mangia"], ["il", "cane"], ["il", "gatto", "mangia", "il", "cane"]]
    seen = []
    out = align_sentences(run, src, tgt, "en", "it", emb=emb, batch_size=2, on_batch=seen.append)
    assert sum(seen) == 3
    assert out[0].links == [(0, 0), (1, 1), (2, 2)]
    assert out[1].links == [(0, 0), (1, 1)]
    # "the" appears twice in the target; every other word has one exact match.
    assert {(0, 4), (1, 2), (3, 1)} <= set(out[2].links)


def test_mixed_vectors_average_the_two_cosines():
    from xlfast.align import mix_vectors

    g = torch.Generator().manual_seed(0)
    c1, c2, s1, s2 = (torch.randn(4, 6, generator=g) for _ in range(4))
    for w in (0.0, 0.3, 1.0):
        m1, m2 = mix_vectors([c1], [s1], w)[0], mix_vectors([c2], [s2], w)[0]
        cos = lambda a, b: torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
        assert torch.allclose(m1 @ m2.T, (1 - w) * cos(c1, c2) + w * cos(s1, s2), atol=1e-6)
        assert torch.allclose(m1.norm(dim=-1), torch.ones(4), atol=1e-6)


def test_align_lines_indexes_whitespace_tokens_whatever_the_tokenizer():
    run = FakeRun()
    src = ["the cat, eats", "the dog."]
    tgt = ["il gatto mangia", "il cane"]
    static = AlignOptions(emb="static")
    words, _ = align_lines(run, src, tgt, "en", "it", TokenizerSpec("default"), static)
    assert words[0].links == [(0, 0), (1, 1), (2, 2)]
    assert words[1].links == [(0, 0), (1, 1)]
    tokens, segs = align_lines(run, src, tgt, "en", "it", TokenizerSpec("default"), static, on="tokens")
    assert segs[0][0].tokens == ["the", "cat", ",", "eats"]
    assert max(i for i, _ in tokens[0].links) == 3  # token indices reach past the three words
    for res, (a, b) in zip(words, segs):
        assert all(i < len(a.words) and j < len(b.words) for i, j in res.links)
