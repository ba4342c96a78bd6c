"""`xlfast train --mono`: the multilingual LM of Wada & Iwata on monolingual text only."""
import json
import random

import pytest
import torch
from typer.testing import CliRunner

from xlfast.cli.main import app
from xlfast.evaluate import bli
from xlfast.model import BOS, EOS, LMBatch, ModelConfig, MultilingualLM
from xlfast.run import Run
from xlfast.synthetic import make_mono_pair
from xlfast.corpora import MonoData
from xlfast.corpus_store import TokenArrays
from xlfast.train import epoch_plan

torch.manual_seed(0)


def tiny_lm(subword="ave", dim=16, dropout=0.0):
    V = {"aa": 12, "bb": 10}
    pieces = {"aa": [[w % 7, 7 + w % 3] for w in range(V["aa"])], "bb": [[w % 7, 10 + w % 2] for w in range(V["bb"])]}
    cfg = ModelConfig(["aa", "bb"], V, num_pieces=12, dim=dim, subword=subword, dropout=dropout, kind="mono")
    return MultilingualLM(cfg, pieces if subword != "none" else None)


SENTS = [[4, 5, 6, 7], [8, 9], [10, 4, 11]]


@pytest.mark.parametrize("subword", ["none", "ave", "cnn"])
def test_batched_lm_loss_equals_sum_of_single_sentence_losses(subword):
    model = tiny_lm(subword).eval()
    with torch.no_grad():
        full, _ = model.loss(LMBatch.build("aa", SENTS))
        singles = [model.loss(LMBatch.build("aa", [s]))[0] for s in SENTS]
    assert torch.allclose(full * len(SENTS), torch.stack(singles).sum(), rtol=1e-5, atol=1e-4)


def test_lm_loss_is_the_forward_plus_backward_cross_entropy_written_out():
    """The loss, computed by hand for one sentence: both directions, shared boundary rows, no <pad> class."""
    model = tiny_lm("none").eval()
    sent = [4, 5, 6]
    with torch.no_grad():
        got, _ = model.loss(LMBatch.build("bb", [sent]))
        E, W, b = model.embed.E["bb"], model.out["bb"].clone(), model.out_bias["bb"].clone()
        W[BOS], W[EOS] = model.boundary_out[0], model.boundary_out[1]
        b[BOS], b[EOS] = model.boundary_bias[0], model.boundary_bias[1]
        total = 0.0
        for direction, start, words, end in (("fwd", 0, sent, EOS), ("bwd", 1, sent[::-1], BOS)):
            x = torch.cat([model.boundary_in[start][None], E[words]])[None]
            h, _ = model.lms[direction](x)
            logits = h[0] @ W.T + b
            logits[:, 0] = -float("inf")  # <pad> is not a class
            total = total + torch.nn.functional.cross_entropy(logits, torch.tensor(words + [end]), reduction="sum")
    assert torch.allclose(got, total, rtol=1e-5)


def test_boundaries_are_shared_and_language_rows_for_them_unused():
    model = tiny_lm("none").train()
    loss, _ = model.loss(LMBatch.build("aa", SENTS))
    loss.backward()
    # the language's own <bos>/<eos> input and output rows never take part
    assert model.embed.E["aa"].grad[[BOS, EOS]].abs().sum() == 0
    assert model.out["aa"].grad[[BOS, EOS]].abs().sum() == 0
    assert model.boundary_in.grad.abs().sum() > 0 and model.boundary_out.grad.abs().sum() > 0
    # and the inference table carries the shared <bos> (the NULL heuristic reads it)
    assert torch.equal(model.static_table("bb")[BOS], model.boundary_in[0].detach())


def test_contextual_vectors_do_not_depend_on_padding():
    model = tiny_lm("ave").eval()
    emb = torch.randn(2, 5, 16)
    lengths = torch.tensor([5, 3])
    both = model.encode(emb, lengths)
    alone = model.encode(emb[1:, :3], lengths[1:])
    assert both.shape == (2, 5, 32)
    assert torch.allclose(both[1, :3], alone[0], atol=1e-6)


def test_alternating_plan_interleaves_languages_and_oversamples_the_smaller():
    a = MonoData("a", TokenArrays.from_lists([[1]] * 100), "a")
    b = MonoData("b", TokenArrays.from_lists([[1]] * 40), "b")
    plan = epoch_plan([a, b], 16, random.Random(0), alternate=True)
    assert [k for k, _ in plan] == [0, 1] * 7
    assert sorted(i for k, idx in plan if k == 0 for i in idx) == list(range(100))


@pytest.fixture(scope="module")
def mono_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mono")
    pair = make_mono_pair(concepts=40, n_sentences=2000, seed=7)
    files = pair.write(d)
    out = d / "run"
    r = CliRunner().invoke(app, ["train", "--mono", str(files["src"]), str(files["tgt"]), "--langs", "xx,yy",
                                 "-o", str(out), "--dim", "32", "--dropout", "0.3", "--batch-size", "32",
                                 "--subword", "none", "--epochs", "12", "--patience", "50", "--tokenize", "none",
                                 "--threads", "1"])
    assert r.exit_code == 0, r.output
    return pair, out


def test_synthetic_mono_corpora_are_comparable_not_parallel():
    pair = make_mono_pair(concepts=20, n_sentences=300, seed=1)
    to_tgt = dict(pair.lexicon)
    translated = [[to_tgt[w] for w in s] for s in pair.src_sents]
    assert len({tuple(s) for s in translated} & {tuple(t) for t in pair.tgt_sents}) < 30
    assert {w for s in pair.tgt_sents for w in s} <= set(to_tgt.values())


def test_mono_lm_puts_translations_next_to_each_other(mono_run):
    """Nothing links the two corpora but the shared LSTMs and boundaries: the known lexicon of the
    synthetic pair must be recovered (measured: P@1 1.0 after 12 epochs; near 0.1 after one)."""
    pair, out = mono_run
    run = Run.load(out)
    assert run.kind == "mono"
    sw, sv = run.word_vectors("xx")
    tw, tv = run.word_vectors("yy")
    assert bli(sw, sv, tw, tv, pair.lexicon, ks=(1,), method="csls")["p@1"] >= 0.85
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 12
    # the unsupervised criterion rises with the alignment it stands for
    assert log[-1]["mutual_csls"] > log[0]["mutual_csls"] + 0.3
    assert log[-1]["mutual_pairs"] >= 35
    assert (out / "emb.xx.vec").exists() and (out / "emb.yy.vec").exists()
    ctx = run.embed_sentences("yy", [pair.tgt_sents[0], []])
    assert ctx[0].shape == (len(pair.tgt_sents[0]), 64) and ctx[1].shape == (0, 64)


def test_mono_run_resumes_only_as_a_mono_run(mono_run):
    pair, out = mono_run
    src = out.parent / "mono.src"
    r = CliRunner().invoke(app, ["train", str(src), str(out.parent / "mono.tgt"), "--langs", "xx,yy", "-o", str(out),
                                 "--resume", "--tokenize", "none"])
    assert r.exit_code == 1 and "resume it with --mono" in r.output


@pytest.mark.parametrize("argv, message", [
    (["--langs", "xx"], "one per file"),
    (["--langs", "xx,xx"], "at least two languages"),
])
def test_mono_bad_arguments_are_one_line(tmp_path, argv, message):
    a = tmp_path / "a.txt"
    a.write_text("one two\nthree\n", "utf-8")
    b = tmp_path / "b.txt"
    b.write_text("uno dos\n", "utf-8")
    r = CliRunner().invoke(app, ["train", "--mono", str(a), str(b), "-o", str(tmp_path / "r"), *argv])
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output


def test_python_and_the_cli_train_a_mono_run_with_the_same_batch(tmp_path):
    """The multilingual LM's batch default belongs to the core: a TrainConfig built in Python and a
    `xlfast train --mono` run without --batch-size use the same one (not the parallel preset's 16)."""
    from xlfast.corpora import MonoSpec
    from xlfast.model import PRESETS
    from xlfast.train import MONO_BATCH, TrainConfig

    files = make_mono_pair(concepts=8, n_sentences=40, seed=2).write(tmp_path)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--mono", str(files["src"]), str(files["tgt"]), "--langs", "xx,yy", "-o", str(out),
                                 "--dim", "8", "--subword", "none", "--epochs", "1", "--tokenize", "none"])
    assert r.exit_code == 0, r.output
    cli_batch = json.loads((out / "config.json").read_text())["train"]["batch_size"]
    python = TrainConfig(corpora=[], mono=[MonoSpec(str(files["src"]), "xx"), MonoSpec(str(files["tgt"]), "yy")], out="x")
    assert cli_batch == python.resolved().batch_size == MONO_BATCH != PRESETS["low"]["batch_size"]
