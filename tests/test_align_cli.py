"""`xlfast align`, `eval aer`, `eval bli`, `nn`, `show` through the CLI (CliRunner), with a stand-in run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xlfast.cli.main import app
from xlfast.run import Run
from xlfast.tokenize import TokenizerSpec

runner = CliRunner()

# Concept ids shared by the two languages: word i of each list is the translation of word i of the other.
EN = ["the", "cat", "dog", "eats", "sleeps", "house", "big", "small", "water", "bread", "red", "green"]
IT = ["il", "gatto", "cane", "mangia", "dorme", "casa", "grande", "piccolo", "acqua", "pane", "rosso", "verde"]


class FakeRun:
    """The methods of xlfast.run.Run over hand-made vectors: translations share a vector (plus noise)."""

    language_pair, tokenizer_with, _check_lang = Run.language_pair, Run.tokenizer_with, Run._check_lang

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.langs = ["en", "it"]
        self.tokenizer = TokenizerSpec("none", lowercase=False)
        concepts = torch.randn(len(EN) + 1, 16, generator=g)
        self.words = self.vocabs = {"en": EN, "it": IT}
        self.vecs = {lang: concepts[: len(EN)] + 0.05 * torch.randn(len(EN), 16, generator=g) for lang in self.langs}
        self.bos = concepts[len(EN)]

    def vocab(self, lang):
        return list(self.words[lang])

    def word_vectors(self, lang):
        return list(self.words[lang]), self.vecs[lang]

    def embed_words(self, lang, words):
        index = {w: i for i, w in enumerate(self.words[lang])}
        if not words:
            return torch.zeros(0, 16)
        return torch.stack([self.vecs[lang][index[w]] if w in index else self.bos * 0.1 for w in words])

    def embed_sentences(self, lang, sentences, batch_size=64):
        return [self.embed_words(lang, s) for s in sentences]

    def bos_vector(self, lang):
        return self.bos


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    import xlfast.run

    d = tmp_path / "run"
    d.mkdir()
    monkeypatch.setattr(xlfast.run.Run, "load", classmethod(lambda cls, path, device="cpu": FakeRun()))
    return d


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *fragments, code=1):
    """One line, no traceback; exit 1 for a problem with the data, 2 for a wrong command line."""
    assert result.exit_code == code, result.output
    out = result.output.strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    for f in fragments:
        assert f in out, out


def make_corpus(tmp_path: Path) -> tuple[Path, list[list[tuple[int, int]]]]:
    # the target is the translation in a different word order; gold = the permutation
    pairs = [
        (["the", "cat", "eats", "bread"], ["il", "gatto", "mangia", "pane"]),
        (["the", "big", "dog", "sleeps"], ["il", "cane", "grande", "dorme"]),
        (["red", "house"], ["casa", "rosso"]),
        (["water"], ["acqua"]),
    ]
    lines, gold = [], []
    for s, t in pairs:
        lines.append(" ".join(s) + " ||| " + " ".join(t))
        gold.append([(i, t.index(IT[EN.index(w)])) for i, w in enumerate(s)])
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, gold


# ------------------------------------------------------------------ align + eval aer


@pytest.mark.parametrize("emb", ["static", "contextual"])
def test_align_then_eval_aer_is_perfect(run_dir, tmp_path, emb):
    corpus, gold = make_corpus(tmp_path)
    out, scores = tmp_path / "out.align", tmp_path / "out.scores"
    r = invoke("align", run_dir, corpus, "-o", out, "--emb", emb, "--scores", scores)
    assert r.exit_code == 0, r.output
    predicted = [sorted(tuple(map(int, l.split("-"))) for l in line.split()) for line in out.read_text().splitlines()]
    assert predicted == [sorted(g) for g in gold]
    score_lines = scores.read_text().splitlines()
    assert [len(s.split()) for s in score_lines] == [len(g) for g in gold]
    # a one-word pair has CSLS exactly 0 (2cos − cos − cos); longer pairs' chosen links score above 0
    assert all(float(x) > 0 for line in score_lines[:3] for x in line.split())
    assert float(score_lines[3]) == pytest.approx(0.0, abs=1e-5)

    gold_path = tmp_path / "gold.align"
    gold_path.write_text("".join(" ".join(f"{i}-{j}" for i, j in g) + "\n" for g in gold))
    js = tmp_path / "aer.json"
    r = invoke("eval", "aer", "--gold", gold_path, "--pred", out, "--src-tgt", corpus, "--json", js)
    assert r.exit_code == 0, r.output
    assert "0-based" in r.output
    result = json.loads(js.read_text())
    assert result["aer"] == 0.0 and result["precision"] == 1.0 and result["n_sure"] == 11


def test_align_indexes_the_words_as_written_and_write_tokens_the_own_tokens(run_dir, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat, eats bread. ||| il gatto mangia pane\nwater! ||| acqua\n", encoding="utf-8")
    out, scores = tmp_path / "w.align", tmp_path / "w.scores"
    r = invoke("align", run_dir, corpus, "-o", out, "--emb", "static", "--tokenize", "default", "--scores", scores)
    assert r.exit_code == 0, r.output
    assert out.read_text().splitlines() == ["0-0 1-1 2-2 3-3", "0-0"]
    assert [len(x.split()) for x in scores.read_text().splitlines()] == [4, 1]
    out2, toks = tmp_path / "t.align", tmp_path / "tokens.txt"
    r = invoke("align", run_dir, corpus, "-o", out2, "--emb", "static", "--tokenize", "default", "--write-tokens", toks)
    assert r.exit_code == 0, r.output
    assert toks.read_text().splitlines() == ["the cat , eats bread . ||| il gatto mangia pane", "water ! ||| acqua"]
    assert out2.read_text().splitlines()[0].split()[:2] == ["0-0", "1-1"]
    assert "3-2" in out2.read_text().split()  # `eats` is token 3 of xlfast's own tokens


def test_align_skip_bad_lines_keeps_line_numbers_to_the_end(run_dir, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("bad line\nthe cat ||| il gatto\nno separator\n ||| \n", encoding="utf-8")
    out = tmp_path / "o.align"
    r = invoke("align", run_dir, corpus, "-o", out, "--emb", "static", "--skip-bad-lines")
    assert r.exit_code == 0, r.output
    assert out.read_text().split("\n") == ["", "0-0 1-1", "", "", ""]  # 4 input lines, 4 output lines


def test_eval_aer_known_figures_and_one_based_possible_gold(tmp_path):
    # 1-based gold with a possible link (ipj); prediction 0-based: |A|=3, |S|=2, A∩S=1, A∩P=2
    gold = tmp_path / "gold"
    gold.write_text("1-1 2p2\n1-2\n")
    pred = tmp_path / "pred"
    pred.write_text("0-0 1-1\n1-0\n")
    js = tmp_path / "r.json"
    r = invoke("eval", "aer", "--gold", gold, "--pred", pred, "--gold-base", "1", "--json", js)
    assert r.exit_code == 0, r.output
    result = json.loads(js.read_text())
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(1 / 2)
    assert result["aer"] == pytest.approx(1 - (1 + 2) / (3 + 2))
    assert result["gold_base"] == 1 and "1-based" in r.output


@pytest.mark.parametrize(
    "gold_text, pred_text, fragments",
    [
        ("0-0\n1-x\n", "0-0\n0-0\n", ["gold", ":2", "malformed link '1-x'"]),
        ("0-0\n0-0\n", "0-0\n", ["pred", "has 1 lines but the"]),
        ("0-0\n0-0\n", "0-0\n3--1\n", ["pred", ":2", "malformed link"]),
        ("0-0\n0-0\n", "0-0\n0-7\n", ["pred", ":2", "target index 7 out of range"]),
    ],
)
def test_eval_aer_bad_files_give_one_line(tmp_path, gold_text, pred_text, fragments):
    gold, pred, corpus = tmp_path / "gold", tmp_path / "pred", tmp_path / "c.txt"
    gold.write_text(gold_text)
    pred.write_text(pred_text)
    corpus.write_text("a b ||| x y\nc ||| z\n")
    one_line_error(invoke("eval", "aer", "--gold", gold, "--pred", pred, "--src-tgt", corpus), *fragments)


def test_eval_aer_missing_file(tmp_path):
    pred = tmp_path / "pred"
    pred.write_text("0-0\n")
    one_line_error(invoke("eval", "aer", "--gold", tmp_path / "nope", "--pred", pred), "nope")


def test_align_bad_corpus_and_language(run_dir, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("the cat ||| il gatto\njust one side\n")
    one_line_error(invoke("align", run_dir, bad, "-o", tmp_path / "o"), "bad.txt", ":2")
    assert not (tmp_path / "o").exists()  # no half-written output
    corpus, _ = make_corpus(tmp_path)
    one_line_error(invoke("align", run_dir, corpus, "-o", tmp_path / "o", "--src-lang", "xx"), "'xx'", "en, it")


def test_align_null_and_skip_bad_lines_keep_line_numbers(run_dir, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat ||| il gatto\nbroken line\nwater ||| acqua\n")
    out = tmp_path / "o"
    r = invoke("align", run_dir, corpus, "-o", out, "--skip-bad-lines")
    assert r.exit_code == 0, r.output
    assert out.read_text().splitlines() == ["0-0 1-1", "", "0-0"]
    # NULL needs CSLS > 0, which a one-word pair never has (its CSLS is 0): that link goes to NULL.
    r = invoke("align", run_dir, corpus, "-o", out, "--skip-bad-lines", "--null", "max")
    assert out.read_text().splitlines() == ["0-0 1-1", "", ""]


# ------------------------------------------------------------------ eval bli


def test_eval_bli_on_a_run_and_on_vec_files(run_dir, tmp_path):
    from xlfast.io import write_vec

    d = tmp_path / "dict.txt"
    d.write_text("cat\tgatto\ndog cane\ndog cagnolino\nunicorn unicorno\n")
    js = tmp_path / "bli.json"
    r = invoke("eval", "bli", run_dir, "--dict", d, "--json", js, "--details")
    assert r.exit_code == 0, r.output
    result = json.loads(js.read_text())
    assert result["csls"]["p@1"] == 100.0 and result["nn"]["p@1"] == 100.0  # percent, as in the table
    assert result["csls"]["n_eval"] == 2 and result["csls"]["n_missing"] == 1
    assert result["csls"]["coverage"] == pytest.approx(200 / 3)
    assert "gatto" in r.output

    fake = FakeRun()
    src_vec, tgt_vec = tmp_path / "en.vec", tmp_path / "it.vec"
    write_vec(src_vec, EN, fake.vecs["en"].numpy())
    write_vec(tgt_vec, IT[::-1], fake.vecs["it"].flip(0).numpy())
    r = invoke("eval", "bli", src_vec, tgt_vec, "--dict", d, "--json", js)
    assert r.exit_code == 0, r.output
    assert json.loads(js.read_text())["csls"]["p@1"] == 100.0


def test_eval_bli_errors(run_dir, tmp_path):
    d = tmp_path / "dict.txt"
    d.write_text("cat gatto\nonly-one-field\n")
    one_line_error(invoke("eval", "bli", run_dir, "--dict", d), "dict.txt:2")
    vec = tmp_path / "a.vec"
    vec.write_text("1 2\ncat 0.1 0.2\n")
    d.write_text("cat gatto\n")
    one_line_error(invoke("eval", "bli", vec, "--dict", d), "give the source and the target .vec files", code=2)


# ------------------------------------------------------------------ nn and show


def test_nn_lists_the_translation_first(run_dir, tmp_path):
    js = tmp_path / "nn.json"
    r = invoke("nn", run_dir, "dog", "--lang", "en", "-k", "3", "--json", js)
    assert r.exit_code == 0, r.output
    result = json.loads(js.read_text())
    assert result["to"] == "it" and result["in_vocabulary"]
    assert [n["word"] for n in result["neighbours"]][0] == "cane"
    assert len(result["neighbours"]) == 3
    r = invoke("nn", run_dir, "dog", "--lang", "en", "--metric", "cos", "--json", js)
    assert json.loads(js.read_text())["neighbours"][0]["word"] == "cane"
    one_line_error(invoke("nn", run_dir, "dog", "--lang", "fr"), "'fr'")


def test_show_writes_a_png(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "pair.png"
    r = invoke("show", run_dir, "--src", "the cat eats", "--tgt", "il gatto mangia", "-o", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gatto" in r.output and "1-1" in r.output


def test_eval_aer_line_count_mismatch_without_corpus(tmp_path):
    gold, pred = tmp_path / "gold", tmp_path / "pred"
    gold.write_text("0-0\n0-0\n")
    pred.write_text("0-0\n")
    one_line_error(invoke("eval", "aer", "--gold", gold, "--pred", pred), "pred", "has 1 lines but the gold")
