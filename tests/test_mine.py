"""Mining (xlfast.mine): known answers for every stage and a synthetic pair of 'languages' whose token
vectors are a known rotation + noise of each other, so the true word and sentence pairs are known."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xlfast import evaluate, mine
from xlfast.errors import XlfastError
from xlfast.search import BestMatches


class RotatedPair:
    """Two vocabularies of V words; target word perm[i] translates source word i and its vector is
    E[i] rotated by exp(theta·A) (A skew-symmetric, unit spectral norm). Every token adds Gaussian noise."""

    def __init__(self, V=60, dim=24, noise=0.08, theta=1.0, seed=0):
        rng = np.random.default_rng(seed)
        self.noise_rng = np.random.default_rng(seed + 1)
        self.dim, self.name, self.V, self.noise = dim, "rotated pair", V, noise
        E = rng.normal(size=(V, dim)).astype(np.float32)
        E /= np.linalg.norm(E, axis=1, keepdims=True)
        A = rng.normal(size=(dim, dim))
        A = A - A.T
        A /= np.linalg.norm(A, 2)
        R = torch.linalg.matrix_exp(torch.tensor(theta * A)).numpy().astype(np.float32)
        perm = rng.permutation(V)
        self.vectors = {"src": {f"s{i}": E[i] for i in range(V)},
                        "tgt": {f"t{perm[i]}": E[i] @ R.T for i in range(V)}}
        self.truth = {(f"s{i}", f"t{perm[i]}") for i in range(V)}
        self.translate = {f"s{i}": f"t{perm[i]}" for i in range(V)}

    def tokenize(self, side, text):
        return text.split()

    def embed(self, side, sentences):
        table = self.vectors[side]
        return [np.stack([table[w] for w in s]) + self.noise * self.noise_rng.normal(size=(len(s), self.dim))
                for s in sentences]

    def corpus(self, side, n, length=8, seed=0):
        rng = np.random.default_rng(seed)
        prefix = "s" if side == "src" else "t"
        return [" ".join(f"{prefix}{w}" for w in rng.integers(0, self.V, length)) for _ in range(n)]

    def precision(self, pairs) -> float:
        return float(np.mean([(s, t) in self.truth for s, t in zip(pairs.src, pairs.tgt)])) if len(pairs) else 0.0


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    enc = RotatedPair(theta=1.0)
    work = tmp_path_factory.mktemp("work")
    src = mine.encode_corpus(enc, "src", enc.corpus("src", 150, seed=1), work)
    tgt = mine.encode_corpus(enc, "tgt", enc.corpus("tgt", 150, seed=2), work)
    return enc, src, tgt


# ---------------------------------------------------------------------------------- small pieces
def test_token_pairs_above_threshold_both_directions_once():
    best = BestMatches(fwd_scores=np.array([0.9, 0.1, 0.5], np.float32), fwd_indices=np.array([1, 0, 0]),
                       bwd_scores=np.array([0.6, 0.9], np.float32), bwd_indices=np.array([2, 0]))
    i, j, s = mine.token_pairs_above(best, 0.2)
    got = sorted(zip(i.tolist(), j.tolist(), np.round(s, 3).tolist()))
    # (0,1) found both ways -> once; (1,0) is below the threshold; (2,0) found forward (0.5) and backward (0.6)
    assert [g[:2] for g in got] == [(0, 1), (2, 0)]
    assert got[0][2] == pytest.approx(0.9) and got[1][2] in (pytest.approx(0.5), pytest.approx(0.6))


def test_aggregate_word_pairs_counts_and_means():
    src_vocab, tgt_vocab = ["a", "b"], ["x", "y", "z"]
    pairs = mine.aggregate_word_pairs(np.array([0, 0, 1, 0]), np.array([1, 1, 2, 0]),
                                      np.array([0.5, 0.7, 0.9, 0.3], np.float32), src_vocab, tgt_vocab)
    rows = pairs.rows()
    assert [r[:3] for r in rows] == [("b", "z", 1), ("a", "y", 2), ("a", "x", 1)]
    assert [r[3] for r in rows] == pytest.approx([0.9, 0.6, 0.3])
    assert len(mine.aggregate_word_pairs(np.array([0, 0, 1]), np.array([1, 1, 2]), np.ones(3, np.float32),
                                         src_vocab, tgt_vocab, min_count=2)) == 1


def test_encode_streams_float16_memmap(tmp_path, rotated):
    enc = RotatedPair(noise=0.0)
    lines = ["s1 s2 s3", "s4", "s5 s1"]
    corpus = mine.encode_corpus(enc, "src", lines, tmp_path, batch_sentences=2)
    stored = np.load(tmp_path / "src.tokens.f16.npy", mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (6, enc.dim)
    expect = np.stack([enc.vectors["src"][w] for line in lines for w in line.split()])
    np.testing.assert_allclose(stored, expect, atol=2e-3)  # float16 keeps ~3 significant digits
    assert corpus.words == ["s1", "s2", "s3", "s4", "s5"]
    np.testing.assert_array_equal(corpus.token_word, [0, 1, 2, 3, 4, 0])
    np.testing.assert_array_equal(corpus.token_sentence, [0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(corpus.rows_of(np.array([0, 2])), [0, 1, 2, 4, 5])
    np.testing.assert_allclose(corpus.sentence_vectors[2], expect[4:6].mean(0), atol=1e-6)


# ---------------------------------------------------------------------------------- mining loop
def test_word_mining_recovers_known_pairs_and_iterations_do_not_hurt(rotated):
    enc, src, tgt = rotated
    plain = mine.mine_words(src, tgt, metric="cos", threshold=0.2)
    p0 = enc.precision(plain.pairs)
    assert 0.75 < p0 < 1.0  # the rotation makes some nearest neighbours wrong
    seen = []
    looped = mine.mine_words(src, tgt, metric="cos", threshold=0.2, iterations=3, sample=60,
                             on_iteration=lambda stats, pairs: seen.append(enc.precision(pairs)))
    assert len(seen) == 3 and len(looped.iterations) == 3
    assert seen[0] >= p0 - 0.05  # the first iteration mines a sample without a learned map yet
    assert enc.precision(looped.pairs) == 1.0 and enc.precision(looped.pairs) >= max(seen)
    assert len(looped.pairs) == enc.V  # every word type found its translation
    w_s, w_t = looped.maps
    np.testing.assert_allclose(w_s @ w_s.T, np.eye(enc.dim), atol=1e-4)  # Procrustes keeps it orthogonal
    np.testing.assert_array_equal(w_t, np.eye(enc.dim))
    counts = looped.pairs.count
    assert counts.sum() <= looped.token_pairs and counts.min() >= 1
    assert np.all(np.diff(np.round(looped.pairs.score, 4)) <= 0)  # sorted by confidence (as printed)


def test_adam_maps_stay_near_identity_and_do_not_hurt(rotated):
    enc, src, tgt = rotated
    p0 = enc.precision(mine.mine_words(src, tgt, metric="cos").pairs)
    res = mine.mine_words(src, tgt, metric="cos", iterations=2, sample=60, map_update="adam", map_steps=20)
    assert enc.precision(res.pairs) >= p0
    w_s, w_t = res.maps
    # 2 × 20 Adam steps of lr 1e-3 move each entry by at most 0.04 (+ 0.01 init noise): no collapse to 0
    assert np.abs(w_s - np.eye(enc.dim)).max() < 0.06 and np.abs(w_t - np.eye(enc.dim)).max() < 0.06


def test_initial_maps_identity_plus_small_noise():
    w_s, w_t = mine.initial_maps(16, seed=1)
    assert np.abs(w_s - np.eye(16)).max() <= 0.01 and np.abs(w_t - np.eye(16)).max() <= 0.01
    assert not np.array_equal(w_s, w_t)


def test_csls_metric_runs_through_the_kernel(rotated):
    enc, src, tgt = rotated
    res = mine.mine_words(src, tgt, metric="csls", threshold=-1.0)
    assert len(res.pairs) > 0 and enc.precision(res.pairs) > 0.6


@pytest.mark.parametrize("center,threshold", [(False, 1.25), (True, 1.33)])
def test_sentence_mining_recovers_shuffled_translations(tmp_path, center, threshold):
    enc = RotatedPair(theta=0.3, noise=0.05, seed=4)
    src_lines = enc.corpus("src", 80, length=6, seed=5)
    translations = [" ".join(enc.translate[w] for w in line.split()) for line in src_lines]
    rng = np.random.default_rng(6)
    # 60 of the 80 sources have their translation on the target side, in shuffled order, among 30 others
    kept = rng.permutation(80)[:60]
    tgt_lines = [translations[i] for i in kept] + enc.corpus("tgt", 30, length=6, seed=7)
    order = rng.permutation(len(tgt_lines))
    tgt_lines = [tgt_lines[o] for o in order]
    gold = [(int(kept[o]), pos) for pos, o in enumerate(order) if o < 60]
    src = mine.encode_corpus(enc, "src", src_lines, tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", tgt_lines, tmp_path)
    # distractors share the word pool (margin up to 1.16 raw, 1.29 centred here); true pairs above 1.3 / 1.36
    pairs = mine.mine_sentences(src, tgt, threshold=threshold, knn=4, center=center, word_weight=0)
    prf = evaluate.pair_prf(list(zip(pairs.src.tolist(), pairs.tgt.tolist())), gold)
    assert prf["precision"] == 1.0 and prf["recall"] >= 0.95
    assert len(set(pairs.src.tolist())) == len(pairs)  # one-to-one
    text = mine.sentence_pairs_tsv(pairs, src, tgt).splitlines()
    assert text[0] == "score\tsrc_line\ttgt_line\tsrc\ttgt"
    score, i, j, s, t = text[1].split("\t")
    assert float(score) >= threshold and src_lines[int(i) - 1] == s and tgt_lines[int(j) - 1] == t
    # two stages (word evidence re-scoring the candidates) find the same pairs here: true pairs' margins
    # 0.26-0.31, distractors' at most 0.13
    two = mine.mine_sentences(src, tgt, knn=4, center=center, threshold=0.2)
    prf = evaluate.pair_prf(list(zip(two.src.tolist(), two.tgt.tolist())), gold)
    assert prf["precision"] == 1.0 and prf["recall"] >= 0.95


def test_refinement_maps_a_rotated_language_onto_the_other(tmp_path):
    """A target language rotated far from the source (theta 1.8): the first pass finds under half of the
    pairs, with many errors; one refinement (Procrustes on those pairs) maps the rotation back and finds all."""
    enc = RotatedPair(theta=1.8, noise=0.05, seed=4)
    src_lines = enc.corpus("src", 300, length=6, seed=5)
    order = np.random.default_rng(6).permutation(300)
    tgt_lines = [" ".join(enc.translate[w] for w in src_lines[o].split()) for o in order]
    gold = [(int(o), pos) for pos, o in enumerate(order)]
    src = mine.encode_corpus(enc, "src", src_lines, tmp_path)
    tgt = mine.encode_corpus(enc, "tgt", tgt_lines, tmp_path)
    prf = {}
    for refine in (0, 1):
        pairs = mine.mine_sentences(src, tgt, knn=4, word_weight=0, refine=refine)
        prf[refine] = evaluate.pair_prf(list(zip(pairs.src.tolist(), pairs.tgt.tolist())), gold)
        assert ("refine" in pairs.seconds) == (refine > 0)
    assert prf[0]["precision"] < 0.8 and prf[0]["recall"] < 0.6
    assert prf[1]["precision"] == 1.0 and prf[1]["recall"] == 1.0
    with pytest.raises(XlfastError, match="refinement"):
        mine.mine_sentences(src, tgt, refine=-1)


def test_procrustes_refinement_is_the_best_orthogonal_map_of_the_pairs():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(40, 6))
    xs /= np.linalg.norm(xs, axis=1, keepdims=True)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    xt = xs @ Q
    mapped = mine.procrustes_refined(xs, xt, np.arange(10), np.arange(10))  # 10 pairs determine Q exactly
    np.testing.assert_allclose(mapped, xt, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1.0, atol=1e-6)


def test_pair_prf_known_answer():
    prf = evaluate.pair_prf([(0, 0), (1, 2), (2, 1)], [(0, 0), (1, 1), (2, 1), (3, 3)])
    assert prf["precision"] == pytest.approx(2 / 3) and prf["recall"] == 0.5
    assert prf["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


# ---------------------------------------------------------------------------------- encoders and CLI
class StandInRun:
    """Same methods as xlfast.run.Run, built from hand-made vectors (contextual = static here)."""

    def __init__(self, enc: RotatedPair):
        self.enc, self.langs = enc, ["aa", "bb"]
        self.tokenizer = str.split
        self.model = SimpleNamespace(context_dim=enc.dim)

    def embed_words(self, lang, words):
        side = "src" if lang == "aa" else "tgt"
        return torch.stack([torch.from_numpy(self.enc.vectors[side].get(w, np.zeros(self.enc.dim, np.float32)))
                            for w in words])

    def embed_sentences(self, lang, sentences, batch_size=64):
        return [self.embed_words(lang, s) for s in sentences]


def test_run_encoder_uses_the_run_api():
    from xlfast.encoders import RunEncoder

    enc = RotatedPair(noise=0.0)
    run_enc = RunEncoder(StandInRun(enc))
    assert run_enc.dim == enc.dim and run_enc.langs == {"src": "aa", "tgt": "bb"}
    out = run_enc.embed("tgt", [["t1", "t2"]])
    np.testing.assert_allclose(out[0][1], enc.vectors["tgt"]["t2"])
    with pytest.raises(Exception, match="no language 'zz'"):
        RunEncoder(StandInRun(enc), src_lang="zz")


def test_cli_word_and_sentence_level(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from xlfast.cli.main import app
    from xlfast.encoders import RunEncoder

    enc = RotatedPair(theta=0.3, noise=0.05)
    monkeypatch.setattr(RunEncoder, "load", classmethod(lambda cls, *a, **k: RunEncoder(StandInRun(enc))))
    src_file, tgt_file = tmp_path / "a.txt", tmp_path / "b.txt"
    src_lines = enc.corpus("src", 40, seed=1)
    src_file.write_text("\n".join(src_lines) + "\n")
    tgt_file.write_text("\n".join(" ".join(enc.translate[w] for w in l.split()) for l in src_lines[::-1]) + "\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out, js = tmp_path / "words.tsv", tmp_path / "words.json"
    res = CliRunner().invoke(app, ["mine", "--src", str(src_file), "--tgt", str(tgt_file), "--model", str(run_dir),
                                   "-o", str(out), "--level", "word", "--iterations", "1", "--json", str(js)])
    assert res.exit_code == 0, res.output
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert rows and all((s, t) in enc.truth for s, t, _, _ in rows[:20])
    report = json.loads(js.read_text())
    assert report["pairs"] == len(rows) and "encode" in report["seconds"]
    out_s, js_s = tmp_path / "sents.tsv", tmp_path / "sents.json"
    res = CliRunner().invoke(app, ["mine", "--src", str(src_file), "--tgt", str(tgt_file), "--model", str(run_dir),
                                   "-o", str(out_s), "--level", "sentence", "--json", str(js_s)])
    assert res.exit_code == 0, res.output
    report = json.loads(js_s.read_text())  # a run has static vectors: stage 1 also takes lexicon candidates
    assert report["lexical"] == mine.DEFAULT_LEXICAL and "lexical" in report["seconds"]
    # 40 sentences a side: fewer pairs than a refinement needs, so one pass only
    assert report["refine"] == mine.DEFAULT_REFINE and report["pairs"] < mine.MIN_REFINE_PAIRS
    assert "refine" not in report["seconds"]
    got = [line.split("\t") for line in out_s.read_text().splitlines()[1:]]
    assert len(got) >= 35
    for score, i, j, s, t in got:
        assert " ".join(enc.translate[w] for w in s.split()) == t
        assert int(j) == 41 - int(i)  # the target file holds the translations in reverse order
    # the run's static vectors are used by default; the contextual ones alone find the pairs too here
    out_c, js_c = tmp_path / "sents_context.tsv", tmp_path / "sents_context.json"
    res = CliRunner().invoke(app, ["mine", "--src", str(src_file), "--tgt", str(tgt_file), "--model", str(run_dir),
                                   "-o", str(out_c), "--level", "sentence", "--evidence", "context",
                                   "--length-weight", "0", "--lexical", "0", "--refine", "0", "--json", str(js_c)])
    assert res.exit_code == 0, res.output
    report = json.loads(js_c.read_text())
    assert report["evidence"] == "context" and report["lexical"] == 0 and "lexical" not in report["seconds"]
    assert report["refine"] == 0
    assert len(out_c.read_text().splitlines()) >= 36
    res = CliRunner().invoke(app, ["mine", "--src", str(src_file), "--tgt", str(tgt_file), "--model", str(run_dir),
                                   "-o", str(tmp_path / "x.tsv"), "--level", "sentence", "--evidence", "words"])
    assert res.exit_code == 1 and "unknown word evidence 'words'" in res.output and "Traceback" not in res.output


def test_cli_bad_input_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from xlfast.cli.main import app

    res = CliRunner().invoke(app, ["mine", "--src", str(tmp_path / "missing.txt"), "--tgt", str(tmp_path / "x"),
                                   "--model", str(tmp_path), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and "missing.txt" in res.output and "Traceback" not in res.output
    (tmp_path / "a.txt").write_text("hello\n")
    res = CliRunner().invoke(app, ["mine", "--src", str(tmp_path / "a.txt"), "--tgt", str(tmp_path / "a.txt"),
                                   "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and "--model" in res.output


@pytest.fixture(scope="module")
def mono_run(tmp_path_factory):
    """A tiny --mono run (the multilingual LM, dim 16), one epoch on a synthetic comparable pair."""
    from xlfast.synthetic import make_mono_pair
    from xlfast.tokenize import TokenizerSpec
    from xlfast.train import MonoSpec, TrainConfig, Trainer

    d = tmp_path_factory.mktemp("mono")
    files = make_mono_pair(concepts=12, n_sentences=60, seed=3).write(d)
    cfg = TrainConfig(corpora=[], mono=[MonoSpec(str(files["src"]), "xx"), MonoSpec(str(files["tgt"]), "yy")],
                      out=str(d / "run"), dim=16, epochs=1, subword="none", batch_size=16,
                      tokenizer=TokenizerSpec("none"))
    Trainer.new(cfg, log=lambda message: None).fit()
    return files, d / "run"


def test_cli_mines_words_and_sentences_with_a_mono_run(mono_run, tmp_path):
    """A mono run's contextual vectors are [forward; backward] LM states, twice its static size (32 here):
    the encoder must report that width (mining once stopped with 'encoder returned (9, 64) for a
    sentence of 9 tokens' on a --dim 32 mono run)."""
    from typer.testing import CliRunner

    from xlfast.cli.main import app
    from xlfast.encoders import RunEncoder

    files, run_dir = mono_run
    encoder = RunEncoder.load(run_dir)
    assert encoder.dim == 32 and encoder.embed("src", [["a", "b", "c"]])[0].shape == (3, 32)
    src_lines, tgt_lines = files["src"].read_text().splitlines(), files["tgt"].read_text().splitlines()
    src_words, tgt_words = {w for s in src_lines for w in s.split()}, {w for s in tgt_lines for w in s.split()}

    words, js = tmp_path / "words.tsv", tmp_path / "words.json"
    res = CliRunner().invoke(app, ["mine", "--src", str(files["src"]), "--tgt", str(files["tgt"]),
                                   "--model", str(run_dir), "-o", str(words), "--json", str(js)])
    assert res.exit_code == 0, res.output
    rows = [line.split("\t") for line in words.read_text().splitlines()[1:]]
    report = json.loads(js.read_text())
    assert rows and report["pairs"] == len(rows)
    assert report["src_tokens"] == sum(len(s.split()) for s in src_lines)
    assert all(s in src_words and t in tgt_words and float(v) > 0.2 for s, t, _, v in rows)

    sentences = tmp_path / "sentences.tsv"
    res = CliRunner().invoke(app, ["mine", "--src", str(files["src"]), "--tgt", str(files["tgt"]),
                                   "--model", str(run_dir), "-o", str(sentences), "--level", "sentence",
                                   "--threshold", "0"])  # one epoch of training: every best pair, not the sure ones
    assert res.exit_code == 0, res.output
    got = [line.split("\t") for line in sentences.read_text().splitlines()[1:]]
    assert got and all(float(v) >= 0 and s == src_lines[int(i) - 1] and t == tgt_lines[int(j) - 1]
                       for v, i, j, s, t in got)
    assert len({s for *_, s, _ in got}) == len(got) == len({t for *_, t in got})  # one-to-one
