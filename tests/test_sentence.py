"""Sentence embeddings and bitext mining: retrieval accuracy and mining P/R/F1 on known answers, stage-2
re-scoring on a hand-made case, and WACSE training (TR) on the synthetic pair."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xlfast import anchors, evaluate, mine
from xlfast.cli.main import app


# ---------------------------------------------------------------------------------- evaluation
def test_retrieval_accuracy_both_directions_known_answer():
    eye = np.eye(4, dtype=np.float32)
    # source 3 lies nearest target 0: source 3 is wrong; target 3 still finds source 3 (its only neighbour)
    src = eye.copy()
    src[3] = [1.0, 0.0, 0.0, 0.5]
    res = evaluate.retrieval(src, eye)
    assert res["src2tgt"] == 0.75 and res["tgt2src"] == 1.0 and res["mean"] == 0.875
    # the same sentence written twice on the target side: retrieving either copy is correct
    res = evaluate.retrieval(src, eye, ["a", "b", "c", "d"], ["x", "y", "z", "x"])
    assert res["src2tgt"] == 1.0


def test_mining_prf_normalises_whitespace_and_counts_pairs_once():
    gold = [("a b", "x y"), ("c", "z"), ("d", "w"), ("e", "v")]
    pred = [("a  b", " x y"), ("c", "z"), ("c", "z"), ("d", "v")]
    res = evaluate.mining(pred, gold)
    assert res["correct"] == 2 and res["mined"] == 3 and res["gold"] == 4
    assert res["precision"] == pytest.approx(2 / 3) and res["recall"] == 0.5


def test_eval_mine_cli_known_pairs(write, tmp_path):
    src = write("gold.src", "uno dos\ntres\ncuatro\ncinco\n")
    tgt = write("gold.tgt", "one two\nthree\nfour\nfive\n")
    pred = write("mined.tsv", "score\tsrc_line\ttgt_line\tsrc\ttgt\n"
                              "0.9\t1\t3\tuno  dos\tone two\n0.5\t2\t1\ttres\tfour\n0.4\t4\t2\tcinco\tfive\n")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["eval", "mine", "--gold-src", str(src), "--gold-tgt", str(tgt), "--pred", str(pred),
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert (got["correct"], got["mined"], got["gold"]) == (2, 3, 4)
    assert got["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    bad = write("bad.tsv", "0.9\tuno dos\tone two\n")
    res = CliRunner().invoke(app, ["eval", "mine", "--gold-src", str(src), "--gold-tgt", str(tgt), "--pred", str(bad)])
    assert res.exit_code == 1 and "bad.tsv:1: expected the header" in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------------------------- two-stage mining
class HandEncoder:
    """Word vectors given by hand (contextual = static): token vectors are exactly these."""

    name, dim = "hand-made", 4

    def __init__(self, vectors):
        self.vectors = {w: np.asarray(v, np.float32) / np.linalg.norm(v) for w, v in vectors.items()}

    def tokenize(self, side, text):
        return text.split()

    def embed(self, side, sentences):
        return [np.stack([self.vectors[w] for w in s]) for s in sentences]


class StaticHandEncoder(HandEncoder):
    """HandEncoder whose words also have context-free vectors (as an xlfast run's table): `static` by hand."""

    def __init__(self, vectors, static):
        super().__init__(vectors)
        self.static = {w: np.asarray(v, np.float32) for w, v in static.items()}

    def word_vectors(self, side, words):
        return np.stack([self.static[w] for w in words])


def test_static_vectors_are_unit_and_sentences_sum_them_by_idf(tmp_path):
    e = np.eye(4)
    enc = StaticHandEncoder({w: e[0] for w in "abc"}, {"a": 2 * e[0], "b": 3 * e[1], "c": e[2] + e[1]})
    corpus = mine.encode_corpus(enc, "src", ["a b", "a c", "a"], tmp_path)
    assert corpus.words == ["a", "b", "c"]
    np.testing.assert_allclose(np.linalg.norm(corpus.word_vectors, axis=1), 1.0, rtol=1e-6)
    # 'a' is in every sentence: IDF log(3/3) = 0; 'b' and 'c' in one of three: log 3
    c = (e[2] + e[1]) / np.sqrt(2)
    np.testing.assert_allclose(corpus.static_sentence_vectors, [np.log(3) * e[1], np.log(3) * c, 0 * e[0]],
                               atol=1e-6)


def test_length_penalty_is_the_squared_robust_z_of_the_log_length_ratio(tmp_path):
    enc = HandEncoder({w: [1, 0, 0, 0] for w in ("x" * n for n in (10, 12, 20, 24, 40, 48))})
    src = mine.encode_corpus(enc, "src", ["x" * n for n in (10, 20, 40, 10)], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", ["x" * n for n in (12, 24, 48, 40)], tmp_path)
    pair_s, pair_t = np.array([0, 1, 2, 3, 0]), np.array([0, 1, 2, 3, 2])
    # each side's best candidates (the score ranks (0, 0) above (0, 2)) have character-length ratios
    # 1.2, 1.2, 1.2 and 4: median log 1.2, MAD 0, so the spread takes its floor of 0.05
    score = np.array([1, 1, 1, 1, 0.5], np.float32)
    pen = mine.length_penalty(src, tgt, pair_s, pair_t, score)
    z = lambda ratio: ((np.log(ratio) - np.log(1.2)) / 0.05) ** 2
    np.testing.assert_allclose(pen, [0, 0, 0, z(4), z(4.8)], rtol=1e-5, atol=1e-6)


def test_csls_word_evidence_stops_a_hub_from_matching_every_sentence(tmp_path):
    """Target word 'H' lies equally close (cosine 0.577) to every source word: a hub. 'A' translates 'a'
    but its cosine to it is a little lower (0.555). With cosines s0 = 'a' is closer to t1 = 'H'; with CSLS
    (H's neighbourhood term, 0.577 over its 2 nearest source words, against A's 0.277) to t0 = 'A'."""
    e = np.eye(4)
    static = {"a": e[0], "b": e[1], "c": e[2], "A": e[0] + 1.5 * e[3], "H": e[0] + e[1] + e[2],
              "B": e[1] + 1.5 * e[3]}
    enc = StaticHandEncoder({w: e[0] for w in static}, static)
    src = mine.encode_corpus(enc, "src", ["a", "b", "c"], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", ["A", "H", "B"], tmp_path)
    pair_s, pair_t = np.array([0, 0]), np.array([0, 1])
    cos = mine.word_evidence(src, tgt, pair_s, pair_t, static=True)
    np.testing.assert_allclose(cos, [1 / np.sqrt(3.25), 1 / np.sqrt(3)], rtol=1e-5)
    hub = mine.static_hubness(src, tgt, knn=2)
    csls = mine.word_evidence(src, tgt, pair_s, pair_t, static=True, hubness=hub)
    v = lambda w: static[w] / np.linalg.norm(static[w])
    r = lambda w, others: np.mean(sorted(v(w) @ v(o) for o in others)[-2:])
    r_a = r("a", "AHB")
    np.testing.assert_allclose(csls, [2 * v("a") @ v("A") - r_a - r("A", "abc"),
                                      2 * v("a") @ v("H") - r_a - r("H", "abc")], rtol=1e-5)
    assert csls[0] > csls[1]


def test_number_keys_match_across_scripts():
    assert anchors.number_key("१९९०") == anchors.number_key("1990") == anchors.number_key("1,990") == "1990"
    assert anchors.number_key("१२") == "12" and anchors.number_key("12a") is None and anchors.number_key(",") is None


def test_stage_two_word_evidence_overrides_a_misleading_sentence_vector(tmp_path):
    """s0 = 'a b' translates t0 = 'A B'; t2 = 'P Q' has two words halfway between a and b, so its MEAN is
    exactly s0's mean (cosine 1) while t0's mean is a little off (cosine 0.98). One stage pairs s0 with t2;
    word evidence (each word's best match: 1 and 0.96 for t0, 0.71 and 0.71 for t2) pairs it with t0.
    s1 = 'c d' translates t1 = 'C D' and is not in doubt."""
    e = np.eye(4)
    enc = HandEncoder({"a": e[0], "b": e[1], "c": e[2], "d": e[3], "A": e[0], "B": e[1] + 0.3 * e[2],
                       "C": e[2], "D": e[3], "P": e[0] + e[1], "Q": e[0] + e[1]})
    src = mine.encode_corpus(enc, "src", ["a b", "c d"], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", ["A B", "C D", "P Q"], tmp_path)
    words = mine.word_evidence(src, tgt, np.array([0, 0, 1]), np.array([0, 2, 1]))
    b_to_B = 1 / np.sqrt(1.09)
    np.testing.assert_allclose(words, [0.5 * (0.5 * (1 + b_to_B) + 0.5 * (1 + b_to_B)), np.sqrt(0.5), 1.0], rtol=1e-5)

    one = mine.mine_sentences(src, tgt, threshold=-1.0, knn=1, center=False, word_weight=0)
    assert dict(zip(one.src.tolist(), one.tgt.tolist()))[0] == 2
    two = mine.mine_sentences(src, tgt, threshold=-1.0, knn=1, center=False, candidates=3, word_weight=0.5)
    assert sorted(zip(two.src.tolist(), two.tgt.tolist())) == [(0, 0), (1, 1)]


def test_numbers_in_any_script_are_word_evidence(tmp_path):
    """Devanagari and ASCII digits of the same number match (cosine 1) whatever the vectors say; two
    different numbers do not (cosine 0)."""
    e = np.eye(4)
    enc = HandEncoder({"१९९०": e[0], "1990": e[1], "1991": e[0], "x": e[2], "y": e[2]})
    src = mine.encode_corpus(enc, "src", ["१९९० x"], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", ["1990 y", "1991 y"], tmp_path)
    # one source sentence: its words all have IDF 0 and weigh alike; on the target side 'y' is in both
    # sentences (IDF 0, floored) and '1991' in one (√log 2): (0 + 1)/2 one way, y's share the other
    w_y, w_num = np.sqrt(mine.IDF_FLOOR), np.sqrt(np.log(2))
    np.testing.assert_allclose(mine.word_evidence(src, tgt, np.array([0, 0]), np.array([0, 1])),
                               [1.0, 0.5 * (0.5 + w_y / (w_y + w_num))], rtol=1e-5)


def test_words_spelt_alike_on_both_sides_are_word_evidence(tmp_path):
    """A name spelt alike (case aside) matches with cosine 1 whatever the vectors say, and not another
    such word (cosine 0); words shorter than SHARED_SPELLING_MIN and punctuation are left to the vectors."""
    assert anchors.shared_spelling_key("...") is None
    e = np.eye(4)
    enc = HandEncoder({"Lima": e[0], "LIMA": e[1], "Cusco": e[2], "cusco": e[0], "no": e[3],
                       "No": 0.6 * e[3] + 0.8 * e[1]})
    src = mine.encode_corpus(enc, "src", ["Lima", "Cusco", "no"], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", ["LIMA", "cusco", "No"], tmp_path)
    pair_s, pair_t = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 0, 2, 0])
    # Lima-LIMA: one spelling (the vectors are orthogonal); Lima-cusco: two spellings (the vectors say 1);
    # Cusco-LIMA: two spellings; no-No: too short, the vectors' cosine 0.6; no-LIMA: the vectors (e3·e1 = 0)
    np.testing.assert_allclose(mine.word_evidence(src, tgt, pair_s, pair_t), [1.0, 0.0, 0.0, 0.6, 0.0],
                               atol=1e-3)  # token vectors are stored as float16


def test_cached_word_evidence_reads_the_anchors_once_and_scores_as_word_evidence(tmp_path, monkeypatch):
    e = np.eye(4)
    enc = HandEncoder({"Lima": e[0], "LIMA": e[1], "Cusco": e[2], "cusco": e[0]})
    src = mine.encode_corpus(enc, "src", ["Lima", "Cusco"], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", ["LIMA", "cusco"], tmp_path)
    want = mine.word_evidence(src, tgt, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    calls = []
    real = mine._anchor_ids
    monkeypatch.setattr(mine, "_anchor_ids", lambda a, b: calls.append(1) or real(a, b))
    cache: dict = {}
    first = mine._cached_word_evidence(src, tgt, np.array([0, 0]), np.array([0, 1]), "context", False, None, cache)
    second = mine._cached_word_evidence(src, tgt, np.array([1, 1]), np.array([0, 1]), "context", False, None, cache)
    np.testing.assert_allclose(np.concatenate([first, second]), want)
    assert len(calls) == 1  # each pass's new pairs reuse the anchor ids of the first


def test_shared_keys_match_spellings_without_case_or_marks_by_their_first_characters():
    assert anchors.shared_spelling_key("Grècia") == "grecia" and anchors.shared_spelling_key("no") is None
    assert anchors.shared_spelling_key("tecnologianinra") == "tecnologianinra"[:anchors.SPELLING_PREFIX]
    assert anchors.shared_spelling_key("नेपाल") == anchors.shared_spelling_key("Nepal") == "nepal"  # romanised
    src = ["tecnologianinra", "Grècia", "Lima", "casas", "1990", "jawekibo", "१९९१", "teatronboanra"]
    tgt = ["tecnología", "grecia", "LIMA", "casa", "१९९०", "otra", "teatros"]
    keys_s, keys_t = anchors.shared_keys(src, tgt)
    # 'casas' and 'casa' differ within the first characters; a different number stays a number
    assert keys_s == [("spelling", "tecnol"), ("spelling", "grecia"), ("spelling", "lima"), None,
                      ("number", "1990"), None, ("number", "1991"), ("spelling", "teatro")]
    assert keys_t == [("spelling", "tecnol"), ("spelling", "grecia"), ("spelling", "lima"), None,
                      ("number", "1990"), None, ("spelling", "teatro")]


def test_static_lexicon_is_each_words_nearest_by_csls_and_numbers_match(tmp_path):
    """Each word type's LEXICON_SIZE nearest words of the other corpus by CSLS of the static vectors,
    weight max(CSLS / 2, 0), descending, checked against a brute-force CSLS; a number's best translation
    is the same number in the other script, weight 1."""
    rng = np.random.default_rng(0)
    words_s, words_t = [f"s{i}" for i in range(12)] + ["१९९०"], [f"t{i}" for i in range(9)] + ["1990"]
    static = {w: rng.standard_normal(4) for w in words_s + words_t}
    enc = StaticHandEncoder({w: np.eye(4)[0] for w in static}, static)
    src = mine.encode_corpus(enc, "src", [" ".join(words_s)], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", [" ".join(words_t)], tmp_path)
    hub = mine.static_hubness(src, tgt)
    fwd, bwd = mine.static_lexicons(src, tgt, hub)
    csls = 2 * src.word_vectors @ tgt.word_vectors.T - hub[0][:, None] - hub[1][None, :]
    for i in range(len(words_s) - 1):
        entries = slice(fwd.offsets[i], fwd.offsets[i + 1])
        best = np.argsort(-csls[i], kind="stable")[:mine.LEXICON_SIZE]
        keep = csls[i, best] > 0
        assert fwd.words[entries].tolist() == best[keep].tolist()
        np.testing.assert_allclose(fwd.weights[entries], csls[i, best[keep]] / 2, rtol=1e-5)
    number = len(words_s) - 1
    assert fwd.words[fwd.offsets[number]] == len(words_t) - 1 and fwd.weights[fwd.offsets[number]] == 1.0
    assert bwd.words[bwd.offsets[len(words_t) - 1]] == number


def test_lexical_candidates_find_the_pair_the_sentence_vectors_hide(tmp_path):
    """s0 = 'a b' translates t0 = 'A B'. Decoys hide the pair from stage 1's sentence vectors both ways:
    t2 = 'X X' lies on s0's mean (s0's best target), s2 = 'u u' on t0's mean (t0's best source). The
    words of s0 and t0 match one to one, so lexicon coverage ranks t0 first for s0, and stage 2 keeps
    the pair; with sentence vectors alone (lexical=0) it never becomes a candidate."""
    e = np.eye(6)
    B = e[1] + 0.3 * e[4]
    mean_ab = e[0] + e[1]
    mean_AB = e[0] + B / np.linalg.norm(B)
    vectors = {"a": e[0], "b": e[1], "c": e[2], "d": e[3], "A": e[0], "B": B, "C": e[2], "D": e[3],
               "X": mean_ab, "u": mean_AB, "f": e[5], "F": e[5]}
    enc = StaticHandEncoder(vectors, vectors)
    enc.dim = 6
    src = mine.encode_corpus(enc, "src", ["a b", "c d", "u u", "f"], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", ["A B", "C D", "X X", "F"], tmp_path)
    hub = mine.static_hubness(src, tgt, knn=2)
    lex_s, lex_t = mine.lexical_candidates(src, tgt, hub, 1)
    assert (0, 0) in set(zip(lex_s.tolist(), lex_t.tolist()))
    options = dict(threshold=-1.0, knn=1, center=False, candidates=1, word_weight=0.5, length_weight=0.0)
    without = mine.mine_sentences(src, tgt, lexical=0, **options)
    assert (0, 0) not in set(zip(without.src.tolist(), without.tgt.tolist()))
    found = mine.mine_sentences(src, tgt, lexical=1, **options)
    assert (0, 0) in set(zip(found.src.tolist(), found.tgt.tolist()))
    with pytest.raises(mine.XlfastError, match="lexical"):
        mine.mine_sentences(src, tgt, lexical=-1, **options)


def test_neighbourhood_margin_and_best_both_ways_known_answer():
    s = np.array([0, 0, 1, 1])
    t = np.array([0, 1, 0, 1])
    v = np.array([0.9, 0.5, 0.6, 0.4], np.float32)
    # knn=1: source means 0.9 / 0.6, target means 0.9 / 0.5
    np.testing.assert_allclose(mine.neighbourhood_margin(s, t, v, 1), [0.0, -0.2, -0.15, -0.15], atol=1e-6)
    best = mine.best_both_ways(s, t, v)
    assert sorted(best.tolist()) == [0, 1, 2]  # s0's best (0), s1's best (2), t0's best (0), t1's best (1)


def test_stage_two_links_a_pair_that_is_neither_sentences_best(tmp_path, monkeypatch):
    """Both sources prefer t0 and both targets prefer s0: of each side's best only (0, 0) could be kept,
    while competitive linking over all candidates then pairs the two left over."""
    e = np.eye(4)
    enc = HandEncoder({w: e[k] for k, w in enumerate(["a", "b", "A", "B"])})
    src = mine.encode_corpus(enc, "src", ["a", "b"], tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", ["A", "B"], tmp_path)
    score = np.array([[0.9, 0.8], [0.85, 0.7]], np.float32)
    monkeypatch.setattr(mine, "_cached_word_evidence", lambda src, tgt, pair_s, pair_t, *rest: score[pair_s, pair_t])
    found = mine.mine_sentences(src, tgt, threshold=-1.0, knn=1, candidates=2, word_weight=1.0, length_weight=0.0,
                                lexical=0, refine=0)
    assert list(zip(found.src.tolist(), found.tgt.tolist())) == [(0, 0), (1, 1)]
    # margins (knn=1): each pair's score less the mean of its source's and its target's best
    np.testing.assert_allclose(found.score, [0.9 - 0.9, 0.7 - (0.85 + 0.8) / 2], atol=1e-6)


# ---------------------------------------------------------------------------------- WACSE training
def test_translation_ranking_loss_known_values():
    from xlfast.sentence import translation_ranking

    a = torch.eye(3)
    loss = translation_ranking(a, a.clone(), temperature=1.0)
    want = -torch.log_softmax(torch.eye(3), 1).diagonal().mean()
    assert float(loss) == pytest.approx(float(want))
    # an additive margin lowers the true pair's logit: the loss rises
    assert float(translation_ranking(a, a.clone(), 1.0, margin=0.3)) > float(loss)


def test_word_translation_ranking_prefers_the_aligned_word():
    from xlfast.sentence import word_translation_ranking

    ua = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    ub = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [5.0, 5.0]]])
    lengths_a, lengths_b = torch.tensor([2]), torch.tensor([2])  # the third b-word is padding: never a candidate
    right = word_translation_ranking(ua, ub, lengths_a, lengths_b, torch.tensor([[0, 0, 1], [0, 1, 0]]), 0.1)
    wrong = word_translation_ranking(ua, ub, lengths_a, lengths_b, torch.tensor([[0, 0, 0], [0, 1, 1]]), 0.1)
    assert float(right) < 1e-3 < 1.0 < float(wrong)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A barely trained run (one epoch, dim 32) on the synthetic pair: its sentence vectors retrieve at chance."""
    from xlfast.synthetic import make_pair
    from xlfast.tokenize import TokenizerSpec
    from xlfast.train import CorpusSpec, TrainConfig, Trainer

    d = tmp_path_factory.mktemp("sent")
    pair = make_pair(n_sentences=400, vocab=40, seed=5)
    pair.write(d)
    cfg = TrainConfig(corpora=[CorpusSpec(str(d / "corpus.tsv"), None, ("src", "tgt"))], out=str(d / "run"), dim=32,
                      batch_size=16, spm_vocab=200, epochs=1, tokenizer=TokenizerSpec("none"))
    Trainer.new(cfg, log=lambda m: None).fit()
    return d


def test_translation_ranking_lifts_retrieval_from_chance_to_near_one(synthetic_run, tmp_path):
    """TR alone (weights 1/0/0) on the synthetic pair: held-out retrieval accuracy (40 pairs, chance 1/40)
    from about chance to near 1; the new run loads as a run and retrieves as well through `eval retrieval`."""
    from xlfast.io import read_parallel
    from xlfast.sentence import SentenceConfig, train_sentence_encoder

    corpus = read_parallel(synthetic_run / "corpus.tsv")
    # the tables train too: this run is barely trained (1 epoch, dim 32), its words are not yet translations
    cfg = SentenceConfig(weights=(1.0, 0.0, 0.0), epochs=12, patience=12, batch_size=32, lr=3e-3, freeze_tables=False)
    summary = train_sentence_encoder(synthetic_run / "run", corpus, tmp_path / "sent", cfg, log=lambda m: None)
    start, best = summary["epochs"][0]["heldout"]["mean"], summary["heldout_accuracy"]
    assert start < 0.3 and best > 0.9, (start, best)
    assert (tmp_path / "sent" / "sentence.json").exists() and (tmp_path / "sent" / "vocab.src.txt").exists()
    held = tmp_path / "held.tsv"
    lines = corpus.src[:40], corpus.tgt[:40]
    held.write_text("".join(f"{s}\t{t}\n" for s, t in zip(*lines)))
    (tmp_path / "s.txt").write_text("\n".join(lines[0]) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(lines[1]) + "\n")
    out = tmp_path / "acc.json"
    res = CliRunner().invoke(app, ["eval", "retrieval", str(tmp_path / "sent"), "--src", str(tmp_path / "s.txt"),
                                   "--tgt", str(tmp_path / "t.txt"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["mean"] > 0.9


def test_frozen_tables_keep_the_runs_static_vectors_and_tune_the_encoder(synthetic_run, tmp_path):
    from xlfast.io import read_parallel
    from xlfast.run import Run
    from xlfast.sentence import SentenceConfig, train_sentence_encoder

    corpus = read_parallel(synthetic_run / "corpus.tsv")
    train_sentence_encoder(synthetic_run / "run", corpus, tmp_path / "sent", SentenceConfig(epochs=2, patience=2),
                           log=lambda m: None)
    before, after = Run.load(synthetic_run / "run").model.state_dict(), Run.load(tmp_path / "sent").model.state_dict()
    tables = [k for k in before if k.startswith("embed.")]
    assert tables and all(torch.equal(before[k], after[k]) for k in tables)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))


def test_all_three_losses_train_through_the_cli(synthetic_run, tmp_path):
    out = tmp_path / "s.json"
    res = CliRunner().invoke(app, ["train-sent", str(synthetic_run / "run"), str(synthetic_run / "corpus.tsv"),
                                   "-o", str(tmp_path / "sent"), "--epochs", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(out.read_text())
    assert summary["links"] > 0 and summary["config"]["weights"] == [0.8, 0.1, 0.1]
    last = summary["epochs"][-1]
    assert last["wtr"] > 0 and last["awp"] > 0 and last["tr"] > 0
    res = CliRunner().invoke(app, ["train-sent", str(synthetic_run / "run"), str(synthetic_run / "corpus.tsv"),
                                   "-o", str(tmp_path / "x"), "--weights", "1,2"])
    assert res.exit_code == 1 and "--weights" in res.output and "Traceback" not in res.output


def test_train_sent_takes_a_tokenizer_override_and_the_new_run_remembers_it(synthetic_run, tmp_path):
    from xlfast.encoders import RunEncoder
    from xlfast.run import Run

    corpus = tmp_path / "upper.tsv"  # the synthetic corpus in capitals, with a comma glued to each source
    corpus.write_text("".join(f"{s.upper()},\t{t.upper()}\n" for s, t in
                              (line.split("\t") for line in (synthetic_run / "corpus.tsv").read_text().splitlines())))
    res = CliRunner().invoke(app, ["train-sent", str(synthetic_run / "run"), str(corpus), "-o", str(tmp_path / "sent"),
                                   "--epochs", "1", "--tokenize", "default", "--lowercase"])
    assert res.exit_code == 0, res.output
    run = Run.load(tmp_path / "sent")
    assert (run.tokenizer.name, run.tokenizer.lowercase) == ("default", True)
    assert Run.load(synthetic_run / "run").tokenizer.name == "none"  # the starting run is left as it was
    word = (synthetic_run / "corpus.tsv").read_text().split()[0]
    assert run.tokenizer(f"{word.upper()},") == [word, ","]
    lines = corpus.read_text().splitlines()[:50]
    (tmp_path / "a.txt").write_text("".join(line.split("\t")[0] + "\n" for line in lines))
    (tmp_path / "b.txt").write_text("".join(line.split("\t")[1] + "\n" for line in lines))
    # what reads the run's text (eval retrieval, mine) takes the remembered tokenizer unless told otherwise
    assert RunEncoder.load(tmp_path / "sent").tokenize("src", f"{word.upper()},") == [word, ","]
    misread = RunEncoder.load(tmp_path / "sent", tokenize="none", lowercase=False)
    assert misread.tokenize("src", f"{word.upper()},") == [f"{word.upper()},"]
    retrieval = {}
    for flags in ([], ["--tokenize", "default", "--lowercase"], ["--tokenize", "none", "--no-lowercase"]):
        out = tmp_path / f"r{len(retrieval)}.json"
        res = CliRunner().invoke(app, ["eval", "retrieval", str(tmp_path / "sent"), "--src", str(tmp_path / "a.txt"),
                                       "--tgt", str(tmp_path / "b.txt"), "--json", str(out)] + flags)
        assert res.exit_code == 0, res.output
        retrieval[len(retrieval)] = json.loads(out.read_text())
    assert retrieval[0]["src2tgt"] == retrieval[1]["src2tgt"] and retrieval[0]["tgt2src"] == retrieval[1]["tgt2src"]
    assert retrieval[0]["mean"] >= retrieval[2]["mean"]  # every token unknown when misread: no better than chance


@pytest.mark.parametrize("scores, kept, epochs_run", [
    # a tie and a dip within one standard error keep the later epoch; patience (2) counts the two
    # epochs without a strict rise, so epoch 4 is never trained
    ([0.5, 0.9, 0.9, 0.88, 0.95], 3, 3),
    # a fall beyond the standard error keeps the earlier epoch
    ([0.5, 0.9, 0.9, 0.5, 0.95], 2, 3),
    # a start already at the ceiling: the trained epochs are kept, not the starting model
    ([1.0, 1.0, 1.0, 1.0, 1.0], 2, 2),
])
def test_the_sentence_encoder_is_selected_like_a_training_run(synthetic_run, tmp_path, monkeypatch, scores, kept,
                                                               epochs_run):
    from xlfast.io import read_parallel
    from xlfast.sentence import SentenceConfig, SentenceTrainer, train_sentence_encoder

    script = iter(scores)

    def scripted(self):
        acc = next(script)
        return {"src2tgt": acc, "tgt2src": acc, "mean": acc, "sentences": 40}

    monkeypatch.setattr(SentenceTrainer, "heldout_accuracy", scripted)
    cfg = SentenceConfig(weights=(1.0, 0.0, 0.0), epochs=4, patience=2, batch_size=32)
    summary = train_sentence_encoder(synthetic_run / "run", read_parallel(synthetic_run / "corpus.tsv"),
                                     tmp_path / "sent", cfg, log=lambda m: None)
    assert summary["best_epoch"] == kept
    assert len(summary["epochs"]) == epochs_run + 1  # epoch 0: the starting model
