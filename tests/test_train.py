"""Training end to end on the synthetic pair: learning, resume, several corpora, the CLI."""
import functools
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xlfast.cli.main import app
from xlfast.evaluate import bli
from xlfast.run import Run
from xlfast.synthetic import make_pair
from xlfast.tokenize import TokenizerSpec
from xlfast.corpora import CorpusSpec, MonoData, PairData, parallel_specs
from xlfast.corpus_store import TokenArrays
from xlfast.errors import XlfastError
from xlfast.train import TrainConfig, Trainer, bucketed_batches, epoch_plan, eval_interval

SMALL = dict(dim=64, batch_size=16, spm_vocab=200, tokenizer=TokenizerSpec("none"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    pair = make_pair(n_sentences=240, vocab=40, seed=3)
    pair.write(d)
    return pair, d / "corpus.tsv"


def cfg_for(corpus, out, **kw):
    args = dict(SMALL, **kw)
    return TrainConfig(corpora=[CorpusSpec(str(corpus), None, ("src", "tgt"))], out=str(out), **args)


def lexicon_p1(run_dir, lexicon):
    run = Run.load(run_dir)
    sw, sv = run.word_vectors("src")
    tw, tv = run.word_vectors("tgt")
    return bli(sw, sv, tw, tv, lexicon, ks=(1,), method="csls")["p@1"]


def test_short_training_lowers_the_loss_and_finds_translations(synth, tmp_path):
    pair, corpus = synth
    trainer = Trainer.new(cfg_for(corpus, tmp_path / "r", epochs=1), log=lambda m: None)
    trainer.fit()
    p1_start = lexicon_p1(tmp_path / "r", pair.lexicon)
    first_loss = json.loads((tmp_path / "r" / "log.jsonl").read_text().splitlines()[0])["loss"]
    trainer = Trainer.resume(tmp_path / "r", dict(epochs=30, patience=50), log=lambda m: None)
    summary = trainer.fit()
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 31))
    assert log[-1]["loss"] < 0.6 * first_loss
    p1_end = lexicon_p1(tmp_path / "r", pair.lexicon)
    # Measured: P@1 on the known lexicon goes from ~0 to ~0.98 in 30 epochs of this pair.
    assert p1_end > p1_start + 0.5, (p1_start, p1_end)
    assert log[-1]["dict_p1"] > log[0]["dict_p1"] + 0.5
    assert summary["best_epoch"] >= 1
    for f in ("config.json", "model.pt", "checkpoint.pt", "emb.src.vec", "emb.tgt.vec", "spm.src.model", "vocab.tgt.txt"):
        assert (tmp_path / "r" / f).exists(), f


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(synth, straight_and_resumed):
    _, corpus = synth
    straight, resumed = straight_and_resumed(lambda out, epochs: cfg_for(corpus, out, epochs=epochs, patience=99), 3)
    for (k, p), (_, q) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(p.float(), q.float(), atol=1e-6), k
    la = straight.rundir.log_path.read_text().splitlines()
    lb = resumed.rundir.log_path.read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if "seconds" not in k} for x in lines]
    assert strip(la) == strip(lb)


def test_weight_average_follows_its_recurrence_and_gives_the_trained_weights_back():
    from xlfast.train import WeightAverage

    p = torch.nn.Parameter(torch.zeros(3))
    avg = WeightAverage([p], horizon_steps=4)  # decay 0.75, below the warm-up's (1+t)/(10+t) from t = 26
    expected = torch.zeros(3)
    for t in range(1, 41):
        with torch.no_grad():
            p.fill_(float(t))
        avg.update()
        decay = min(0.75, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * float(t)
    assert torch.allclose(avg.averaged[0], expected.expand(3), rtol=1e-6)
    # an average over ~4 steps of a ramp lags it by about 3 steps: not the last value, not the mean
    assert 36 < float(avg.averaged[0][0]) < 38
    with avg.applied():
        assert torch.equal(p.detach(), avg.averaged[0])
    assert torch.equal(p.detach(), torch.full((3,), 40.0))


def test_averaged_weights_are_scored_kept_and_resumed_exactly(synth, straight_and_resumed):
    """--average: model.pt holds the average (not the weights as trained), and a run resumed from its
    checkpoint carries the average on as an uninterrupted run does."""
    _, corpus = synth
    straight, resumed = straight_and_resumed(
        lambda out, epochs: cfg_for(corpus, out, epochs=epochs, patience=99, average=1.0), 3)
    kept = [torch.load(t.rundir.path / "model.pt", weights_only=False)["model"] for t in (straight, resumed)]
    for k, v in kept[0].items():
        assert torch.allclose(v.float(), kept[1][k].float(), atol=1e-6), k
    trained = straight.model.state_dict()
    assert any(not torch.allclose(v.float(), trained[k].float()) for k, v in kept[0].items())
    with straight.average.applied():
        assert all(torch.equal(v, kept[0][k]) for k, v in straight.model.state_dict().items())
    strip = lambda t: [{k: v for k, v in json.loads(x).items() if "seconds" not in k}
                       for x in t.rundir.log_path.read_text().splitlines()]
    assert strip(straight) == strip(resumed)


def test_patience_counts_epochs_without_a_strict_improvement(synth, tmp_path, monkeypatch):
    """A score that ties or oscillates below its best must not keep training going: ties move the kept
    model to the later epoch but patience still runs out."""
    import xlfast.train as train_mod

    _, corpus = synth
    scores = iter([0.50, 0.60, 0.60, 0.55, 0.60, 0.60, 0.70, 0.70, 0.70, 0.9])
    # a huge pseudo-dictionary: no sampling noise, so only exact ties move the kept model
    monkeypatch.setattr(train_mod, "pseudo_dict_scores", lambda model, pairs: [(next(scores), 10**9)])
    trainer = Trainer.new(cfg_for(corpus, tmp_path / "p", epochs=10, patience=3), log=lambda m: None)
    monkeypatch.setattr(trainer, "train_step", lambda data, idx: 1.0)
    summary = trainer.fit()
    # the score rises strictly at epochs 1 and 2, then ties (3), falls (4) and ties (5): three epochs
    # without a strict rise, so with patience 3 the run stops before epoch 6 (and never sees the 0.70s)
    assert summary["stop"] == "patience"
    assert summary["epochs"] == 5  # epochs 3, 4, 5 without a strict rise: patience 3 is spent
    assert summary["best_epoch"] == 5  # the tie at epoch 5 keeps the later model
    log = [json.loads(x) for x in (tmp_path / "p" / "log.jsonl").read_text().splitlines()]
    assert [r["best_epoch"] for r in log] == [1, 2, 3, 3, 5]
    assert all("checkpoint_seconds" in r for r in log)
    assert torch.load(tmp_path / "p" / "model.pt", weights_only=False)["epoch"] == 5


def test_the_kept_model_is_the_latest_within_one_standard_error(synth, tmp_path, monkeypatch):
    import xlfast.train as train_mod

    _, corpus = synth
    # 100 query words: at P@1 0.8 one standard error is sqrt(0.8·0.2/100) = 0.04
    scores = iter([0.50, 0.80, 0.77, 0.75, 0.70, 0.79])
    monkeypatch.setattr(train_mod, "pseudo_dict_scores", lambda model, pairs: [(next(scores), 100)])
    trainer = Trainer.new(cfg_for(corpus, tmp_path / "s", epochs=6, patience=10), log=lambda m: None)
    monkeypatch.setattr(trainer, "train_step", lambda data, idx: 1.0)
    summary = trainer.fit()
    log = [json.loads(x) for x in (tmp_path / "s" / "log.jsonl").read_text().splitlines()]
    # 0.77 and 0.79 are within 0.04 of 0.80 and kept; 0.75 and 0.70 are not
    assert [r["best_epoch"] for r in log] == [1, 2, 3, 3, 3, 6]
    assert summary["best_epoch"] == 6 and summary["best_dict_p1"] == 0.79
    assert train_mod.standard_error([(0.8, 100)]) == pytest.approx(0.04)
    assert train_mod.standard_error([(0.8, 100), (0.5, 25)]) == pytest.approx((0.04**2 + 0.1**2) ** 0.5 / 2)


# ------------------------------------------------------------------------------- evaluations within an epoch
@pytest.mark.parametrize("epoch_steps, every, interval", [
    (15, None, 15),  # a short epoch: once, at its end
    (599, None, 599),
    (600, None, 300),  # long enough for two
    (910, None, 304),  # shp-es at batch 16: steps 304, 608 and the end
    (5000, None, 625),  # at most eight
    (910, 100, 100),
    (910, 0, 910),  # asked for once an epoch
    (910, 2000, 910),
])
def test_long_epochs_are_evaluated_several_times(epoch_steps, every, interval):
    assert eval_interval(epoch_steps, every) == interval


def scored_at_each_evaluation(monkeypatch, scores, n_words=10**9):
    """Make the selection score follow `scores`, one per evaluation (a huge pseudo-dictionary: no sampling
    noise, so only exact ties move the kept model); returns the parameters of the model at each evaluation."""
    import xlfast.train as train_mod

    scores, seen = iter(scores), []

    def score(model, pairs):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return [(next(scores), n_words)]

    monkeypatch.setattr(train_mod, "pseudo_dict_scores", score)
    return seen


def read_log(run_dir):
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def test_a_model_from_within_an_epoch_is_kept_when_it_scores_best(synth, tmp_path, monkeypatch):
    _, corpus = synth
    seen = scored_at_each_evaluation(monkeypatch, [0.50, 0.90, 0.60, 0.60, 0.70, 0.80])
    # 240 pairs in batches of 16: 15 steps an epoch, evaluated at steps 5, 10 and 15
    summary = Trainer.new(cfg_for(corpus, tmp_path / "m", dim=16, epochs=2, eval_every=5), log=lambda m: None).fit()
    log = read_log(tmp_path / "m")
    assert [(r["epoch"], r["step"], r["epoch_steps"]) for r in log] == [(e, s, 15) for e in (1, 2) for s in (5, 10, 15)]
    assert [(r["best_epoch"], r["best_step"]) for r in log] == [(1, 5)] + [(1, 10)] * 5
    assert (summary["best_epoch"], summary["best_step"], summary["best_dict_p1"]) == (1, 10, 0.9)
    kept = torch.load(tmp_path / "m" / "model.pt", weights_only=False)
    assert (kept["epoch"], kept["step"]) == (1, 10)
    assert all(torch.equal(kept["model"][k], v) for k, v in seen[1].items())  # the model as it was at step 10
    assert not torch.equal(kept["model"]["embed.E.src"], seen[2]["embed.E.src"])
    # each record holds the epoch's statistics so far; the last of an epoch, the whole epoch's
    assert [r["steps"] for r in log[:3]] == [5, 10, 15] and log[0]["tokens"] < log[1]["tokens"] < log[2]["tokens"]


def test_patience_counts_epochs_worth_of_evaluations(synth, tmp_path, monkeypatch):
    """--patience 1 with three evaluations an epoch: three evaluations without a strict rise stop the run,
    here within its second epoch."""
    _, corpus = synth
    scored_at_each_evaluation(monkeypatch, [0.50, 0.60, 0.60, 0.55, 0.60, 0.9, 0.9])
    trainer = Trainer.new(cfg_for(corpus, tmp_path / "p", epochs=5, patience=1, eval_every=5), log=lambda m: None)
    monkeypatch.setattr(trainer, "train_step", lambda data, idx: 1.0)
    summary = trainer.fit()
    assert summary["stop"] == "patience" and summary["epochs"] == 2
    assert [(r["epoch"], r["step"]) for r in read_log(tmp_path / "p")] == [(1, 5), (1, 10), (1, 15), (2, 5), (2, 10)]
    assert (summary["best_epoch"], summary["best_step"]) == (2, 10)  # the tie at the last evaluation
    assert torch.load(tmp_path / "p" / "checkpoint.pt", weights_only=False)["step"] == 10


def test_how_often_a_run_is_evaluated_changes_no_parameter(synth, tmp_path):
    """An evaluation draws no random number and changes no parameter: what makes --eval-every a setting a
    resumed run may change."""
    _, corpus = synth
    once = Trainer.new(cfg_for(corpus, tmp_path / "a", dim=16, epochs=2), log=lambda m: None)
    once.fit()
    often = Trainer.new(cfg_for(corpus, tmp_path / "b", dim=16, epochs=2, eval_every=4), log=lambda m: None)
    often.fit()
    assert len(read_log(tmp_path / "a")) == 2 and len(read_log(tmp_path / "b")) == 8
    for k, p in once.model.state_dict().items():
        assert torch.equal(p, often.model.state_dict()[k]), k


def test_refuses_to_overwrite_an_existing_run(synth, tmp_path):
    _, corpus = synth
    Trainer.new(cfg_for(corpus, tmp_path / "r", epochs=1), log=lambda m: None).fit()
    result = CliRunner().invoke(app, ["train", str(corpus), "--langs", "src,tgt", "-o", str(tmp_path / "r"), "--epochs", "1"])
    assert result.exit_code == 1
    assert "already holds a run" in result.output


def test_a_run_killed_mid_epoch_resumes_exactly(synth, tmp_path):
    """SIGKILL after a checkpoint taken within an epoch loses nothing: --resume rebuilds the epoch's plan,
    skips the batches done and ends with the parameters and log of a run never interrupted."""
    _, corpus = synth
    # 240 pairs in batches of 4: 60 steps an epoch, evaluated and checkpointed every 3
    args = ["train", str(corpus), "--langs", "src,tgt", "--dim", "32", "--spm-vocab", "150", "--batch-size", "4",
            "--eval-every", "3", "--epochs", "2", "--patience", "99", "--tokenize", "none", "--threads", "1"]
    out = tmp_path / "k"
    proc = subprocess.Popen([sys.executable, "-m", "xlfast.cli.main", *args, "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        log = out / "log.jsonl"
        # the checkpoint of epoch 2 step 3 is on disk once step 6 is logged (each waits for the one before)
        if log.exists() and any(r.get("epoch") == 2 and r["step"] >= 6 for r in map(json.loads, log.read_text().splitlines()[:-1])):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(out / "checkpoint.pt", weights_only=False)
    assert killed_at["epoch"] == 2 and 3 <= killed_at["step"] < 60, (killed_at["epoch"], killed_at["step"])
    result = CliRunner().invoke(app, [*args, "-o", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"resuming {out} at epoch 2, step {killed_at['step']}" in one_line(result.output)
    assert not list(out.glob(".*.tmp"))

    straight = tmp_path / "s"
    result = CliRunner().invoke(app, [*args, "-o", str(straight)])
    assert result.exit_code == 0, result.output
    # a line per evaluation, with its step; the summary names the kept model's step when it is not an epoch's end
    assert re.search(r"epoch 1 step 3/60 loss [\d.]+ dict P@1 [\d.]+ [\d.]+s \(best epoch 1 step 3\)", one_line(result.output))
    for name in ("checkpoint.pt", "model.pt"):
        a, b = (torch.load(d / name, weights_only=False)["model"] for d in (out, straight))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    untimed = lambda d: [{k: v for k, v in r.items() if "seconds" not in k} for r in read_log(d)]
    assert untimed(out) == untimed(straight)
    assert [(r["epoch"], r["step"]) for r in read_log(out)] == [(e, s) for e in (1, 2) for s in range(3, 61, 3)]
    assert (out / "emb.src.vec").read_bytes() == (straight / "emb.src.vec").read_bytes()


def test_two_corpora_sharing_a_language_train_one_model(synth, tmp_path):
    pair, _ = synth
    a = tmp_path / "xx-yy.tsv"
    b = tmp_path / "xx-zz.tsv"
    n = len(pair.src_sents)
    a.write_text("".join(f"{' '.join(s)}\t{' '.join(t)}\n" for s, t in zip(pair.src_sents, pair.tgt_sents)), "utf-8")
    # A third "language": the target words reversed, on half as many sentences (oversampled to weigh the same).
    b.write_text(
        "".join(f"{' '.join(s)}\t{' '.join(w[::-1] for w in t)}\n" for s, t in list(zip(pair.src_sents, pair.tgt_sents))[: n // 2]),
        "utf-8",
    )
    summary = tmp_path / "summary.json"
    r = CliRunner().invoke(app, ["train", str(a), str(b), "-o", str(tmp_path / "m"), "--dim", "32", "--epochs", "1",
                                 "--spm-vocab", "150", "--json", str(summary)])
    assert r.exit_code == 0, r.output
    # no punctuation is attached to any word: --tokenize auto took the text as tokenised, and says so
    assert "tokenizer: none, chosen because every side looks tokenised already" in one_line(r.output)
    assert json.loads(summary.read_text())["tokenizer"] == {"name": "none", "lowercase": False, "auto": True}
    # a corpus this small keeps the small-corpus setting, and the summary says which it trained with
    assert {k: json.loads(summary.read_text())[k] for k in ("batch_size", "softmax")} == {"batch_size": 16,
                                                                                          "softmax": "full"}
    assert "16, full" in r.output
    run = Run.load(tmp_path / "m")
    assert run.tokenizer.name == "none"
    assert run.langs == ["xx", "yy", "zz"]
    assert set(run.model.decoders) == {f"{l}_{d}" for l in ("xx", "yy", "zz") for d in ("fwd", "bwd")}
    assert set(run.vocab("zz")) <= {w[::-1] for w in run.vocab("yy")}


def test_auto_tokenizer_splits_raw_text_and_a_resume_keeps_the_choice(synth, tmp_path):
    pair, _ = synth
    raw = tmp_path / "raw.tsv"  # running text: a full stop attached to every sentence's last word
    raw.write_text("".join(f"{' '.join(s)}.\t{' '.join(t)}.\n" for s, t in zip(pair.src_sents, pair.tgt_sents)), "utf-8")
    cfg = TrainConfig(corpora=parallel_specs([str(raw)], ["src,tgt"]), out=str(tmp_path / "r"), epochs=1, **{
        **SMALL, "tokenizer": TokenizerSpec(lowercase=True)}).resolved()
    assert (cfg.tokenizer.name, cfg.tokenizer.lowercase, cfg.tokenizer.auto) == ("default", True, True)
    assert "src (raw.tsv) looks like raw text" in cfg.tokenizer.reason
    Trainer.new(cfg, log=lambda _: None).fit()
    assert Run.load(cfg.out).tokenizer == TokenizerSpec("default", lowercase=True)
    # `--tokenize auto` again on resume decides the same way: not a change
    r = CliRunner().invoke(app, ["train", "-o", cfg.out, "--resume", "--epochs", "2", "--tokenize", "auto", "--lowercase"])
    assert r.exit_code == 0, r.output


def test_oversampling_gives_every_pair_the_same_number_of_batches():
    order, start = bucketed_batches(np.ones(100, dtype=np.int64), 16, random.Random(0))
    assert sorted(order.tolist()) == list(range(100)) and len(start) == 7  # every sentence once
    over = epoch_plan([PairData(("a", "b"), *[TokenArrays.from_lists([[1]] * 100)] * 2, [], "a-b"),
                       PairData(("a", "c"), *[TokenArrays.from_lists([[1]] * 30)] * 2, [], "a-c")], 16, random.Random(0))
    sizes = [len(idx) for k, idx in over if k == 1]
    assert len(sizes) == 7 and sum(sizes) == 7 * 16  # the small pair: 30 sentences oversampled to 7 full batches


def list_plan(lengths: list[list[int]], batch_size: int, rng: random.Random, alternate: bool = False):
    """The planner as it was written on Python lists: the reference a seed's batches must not move from
    (a run resumed across versions, a comparison between runs, replays the same batches)."""
    most = max(math.ceil(len(lens) / batch_size) for lens in lengths)
    per = []
    for lens in lengths:
        n = len(lens)
        n_batches = most if math.ceil(n / batch_size) < most else None
        need = n_batches * batch_size if n_batches else n
        order = []
        while len(order) < need:
            idx = list(range(n))
            rng.shuffle(idx)
            order += idx
        order = order[:need] if n_batches else order
        key = {i: lens[i] + rng.random() * 2.0 for i in set(order)}
        order.sort(key=lambda i: key[i])
        batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        rng.shuffle(batches)
        per.append(batches)
    if alternate:
        return [(k, per[k][j]) for j in range(most) for k in range(len(lengths)) if j < len(per[k])]
    plan = [(k, b) for k, batches in enumerate(per) for b in batches]
    rng.shuffle(plan)
    return plan


@pytest.mark.parametrize("alternate", [False, True])
def test_the_array_plan_draws_the_batches_of_the_list_plan(alternate):
    rng = np.random.default_rng(5)
    lengths = [rng.integers(1, 30, n).tolist() for n in (1000, 237, 61)]  # two of them oversampled
    datasets = [MonoData("x", TokenArrays.from_lists([[4] * n for n in lens]), "x") for lens in lengths]
    for seed in (0, 1_000_004):
        plan = epoch_plan(datasets, 16, random.Random(seed), alternate)
        want = list_plan(lengths, 16, random.Random(seed), alternate)
        assert [(k, idx.tolist()) for k, idx in plan] == want


@pytest.mark.parametrize(
    "content, message",
    [("a b\tc d\nno separator here\n", ":2:"), ("", "empty")],
)
def test_bad_corpora_give_one_line_errors(tmp_path, content, message):
    f = tmp_path / "c.aa-bb.tsv"
    f.write_text(content, "utf-8")
    r = CliRunner().invoke(app, ["train", str(f), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert message in r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_missing_corpus_and_unknown_languages(tmp_path):
    r = CliRunner().invoke(app, ["train", str(tmp_path / "nope.tsv"), "--langs", "a,b", "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "nope.tsv" in r.output
    f = tmp_path / "corpus.tsv"
    f.write_text("a\tb\n", "utf-8")
    r = CliRunner().invoke(app, ["train", str(f), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "--langs" in r.output


# ------------------------------------------------------------------------------------------------ resume
def one_line(text: str) -> str:
    """A command's message as one line: Rich error panels wrap and frame it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def files_of(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    """A 2-epoch run trained from Python (dim 32); each test below resumes its own copy."""
    _, corpus = synth
    out = tmp_path_factory.mktemp("trained") / "run"
    Trainer.new(cfg_for(corpus, out, dim=32, epochs=2, spm_vocab=150), log=lambda m: None).fit()
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "run")


@pytest.mark.parametrize("args, named", [
    (["{corpus}", "--langs", "src,tgt", "--dim", "64"], "--dim 64 (the run's: 32)"),
    (["{corpus}", "--langs", "src,xx"], "{corpus} (src-xx) (the run's: {corpus} (src-tgt))"),
    (["{other}", "--langs", "src,tgt"], "{other} (src-tgt) (the run's: {corpus} (src-tgt))"),
    (["--subword", "ave"], "--subword ave (the run's: cnn)"),  # SWcnn: what --subword auto chose for it
    (["--spm-vocab", "300", "--min-count", "2"], "--min-count 2 (the run's: 1); --spm-vocab 300 (the run's: 150)"),
])
def test_resume_refuses_a_change_of_data_or_model_in_one_line(synth, run_copy, tmp_path, args, named):
    """A resumed run would silently train the stored configuration: refuse, naming what differs, and
    change nothing in the run directory."""
    _, corpus = synth
    other = tmp_path / "other.tsv"
    shutil.copy(corpus, other)
    before = files_of(run_copy)
    argv = [a.format(corpus=corpus, other=other) for a in args]
    r = CliRunner().invoke(app, ["train", *argv, "-o", str(run_copy), "--resume", "--tokenize", "none"])
    assert r.exit_code == 1, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert named.format(corpus=corpus, other=other) in r.output
    assert "start a new run with another -o" in r.output
    assert files_of(run_copy) == before


def test_resume_takes_more_epochs_and_says_so(run_copy, tmp_path):
    summary = tmp_path / "summary.json"
    r = CliRunner().invoke(app, ["train", "-o", str(run_copy), "--resume", "--epochs", "3", "--json", str(summary)])
    assert r.exit_code == 0, r.output
    assert "resuming with --epochs 3 (was 2)" in r.output
    assert "resumed after epoch 2 with --epochs 3 (was 2)" in one_line(r.output)
    assert [json.loads(x)["epoch"] for x in (run_copy / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    doc = json.loads(summary.read_text())
    assert doc["resumed_after"] == 2 and doc["changes"] == ["--epochs 3 (was 2)"] and doc["epochs"] == 3
    assert json.loads((run_copy / "config.json").read_text())["train"]["epochs"] == 3  # the next resume sees it


def test_a_python_run_resumes_by_the_same_rules(run_copy):
    with pytest.raises(XlfastError, match=r"--dim 64 \(the run's: 32\)"):
        Trainer.resume(run_copy, {"dim": 64}, log=lambda m: None)
    said = []
    trainer = Trainer.resume(run_copy, {"lr": 1e-3, "epochs": 4, "dim": 32}, log=said.append)
    # the optimiser's saved state carries the old rate; the new one is what the next step uses
    assert [g["lr"] for g in trainer.opt.param_groups] == [1e-3]
    assert trainer.changes == ["--epochs 4 (was 2)", "--lr 0.001 (was 0.003)"]
    assert "resuming with --lr 0.001 (was 0.003)" in said


def test_resume_checks_option_ranges_first(run_copy):
    before = files_of(run_copy)
    r = CliRunner().invoke(app, ["train", "-o", str(run_copy), "--resume", "--dim", "7"])
    assert r.exit_code == 2 and "must be even" in one_line(r.output)
    assert files_of(run_copy) == before


# ------------------------------------------------------------------------------------- invalid options
@pytest.mark.parametrize("args, code, message", [
    (["--dim", "7"], 2, "Invalid value for --dim: 7 must be even"),
    (["--dim", "-4"], 2, "--dim: -4 must be at least 2"),
    (["--dim", "0"], 2, "--dim: 0 must be at least 2"),
    (["--lr", "-1"], 2, "--lr: -1.0 must be greater than 0"),
    (["--dropout", "2"], 2, "--dropout: 2.0 must be at least 0 and below 1"),
    (["--batch-size", "0"], 2, "--batch-size: 0 must be at least 1"),
    (["--enc-layers", "0"], 2, "--enc-layers: 0 must be at least 1"),
    (["--threads", "0"], 2, "--threads"),
    (["--patience", "-3"], 2, "--patience: -3 must be at least 1"),
    (["--eval-every", "-1"], 2, "--eval-every: -1 must be at least 0"),
    (["--spm-vocab", "0"], 2, "--spm-vocab: 0 must be at least 1"),
    (["--epochs", "0"], 2, "--epochs: 0 must be at least 1"),
    (["--device", "tpu"], 2, "--device: 'tpu' must be auto, cpu, cuda or cuda:N"),
    (["--backend", "bogus"], 2, "--backend: 'bogus' must be one of: auto,"),
    (["--min-count", "100000"], 1, "--min-count 100000: no word of 'src' occurs that often (the most frequent,"),
])
def test_invalid_options_stop_before_any_work(synth, tmp_path, monkeypatch, args, code, message):
    """Every option is checked before the run directory is created and before SentencePiece is trained."""
    import xlfast.train as train_mod

    def sentencepiece(*a, **k):
        raise AssertionError("SentencePiece was trained before every option was checked")

    monkeypatch.setattr(train_mod, "train_segmenters", sentencepiece)
    _, corpus = synth
    r = CliRunner().invoke(app, ["train", str(corpus), "--langs", "src,tgt", "-o", str(tmp_path / "o"), *args])
    assert r.exit_code == code, r.output
    assert message in one_line(r.output) and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_python_settings_are_checked_too(synth, tmp_path):
    _, corpus = synth
    for bad, message in ((dict(dim=0), "--dim 0: must be at least 2"), (dict(dropout=1.0), "--dropout 1.0: must be"),
                         (dict(preset="huge"), "--preset huge: must be one of: low, medium, high")):
        with pytest.raises(XlfastError, match=re.escape(message)):
            Trainer.new(cfg_for(corpus, tmp_path / "o", **bad), log=lambda m: None)
    assert not (tmp_path / "o").exists()


def test_output_that_is_a_file_or_a_missing_corpus_is_one_line(synth, tmp_path):
    _, corpus = synth
    taken = tmp_path / "taken"
    taken.write_text("keep me\n")
    r = CliRunner().invoke(app, ["train", str(corpus), "--langs", "src,tgt", "-o", str(taken)])
    assert r.exit_code == 1 and "exists and is not a directory" in r.output and len(r.output.strip().splitlines()) == 1
    assert taken.read_text() == "keep me\n"
    # no --langs: the missing file is what is wrong, not its languages
    r = CliRunner().invoke(app, ["train", str(tmp_path / "nosuch.tsv"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and f"{tmp_path / 'nosuch.tsv'}: no such file" in r.output
    assert not (tmp_path / "o").exists()


def resolve_for_size(tmp_path, lines: int, **kw):
    """`TrainConfig.resolve()` on a corpus of `lines` pairs with the size-dependent settings left open."""
    corpus = tmp_path / f"c{lines}.tsv"
    if not corpus.exists():
        corpus.write_text("".join(f"a{i % 50} b\tc{i % 40} d\n" for i in range(lines)))
    return cfg_for(corpus, tmp_path / "r", **{"batch_size": None, "patience": None, "subword": "auto", **kw}).resolve()


def test_large_corpora_train_at_batch_64_with_the_sampled_softmax_and_less_patience_unless_told(tmp_path):
    from xlfast.train import LARGE_BATCH, LARGE_CORPUS, LARGE_PATIENCE, PATIENCE

    resolve = functools.partial(resolve_for_size, tmp_path)

    small, note = resolve(LARGE_CORPUS - 1)
    assert (small.batch_size, small.softmax, small.patience, note) == (16, "full", PATIENCE, None)
    large, note = resolve(LARGE_CORPUS)
    assert (large.batch_size, large.softmax, large.patience) == (LARGE_BATCH, "sampled", LARGE_PATIENCE)
    assert note.startswith(f"{LARGE_CORPUS:,} sentence pairs")
    assert f"batch 64, the sampled softmax and patience {LARGE_PATIENCE}" in note
    told, note = resolve(LARGE_CORPUS, batch_size=32, softmax="full", patience=7)
    assert (told.batch_size, told.softmax, told.patience, note) == (32, "full", 7, None)
    told, note = resolve(LARGE_CORPUS, softmax="full")
    assert (told.batch_size, told.softmax) == (LARGE_BATCH, "full") and "sampled" not in note
    assert "batch 64 and patience" in note
    # a resolved run keeps its settings when resumed, whatever the defaults are then
    assert large.resolve()[0] == large


def test_small_corpora_train_swcnn_with_less_patience_unless_told(tmp_path):
    from xlfast.train import PATIENCE, SMALL_CORPUS, SMALL_PATIENCE

    resolve = functools.partial(resolve_for_size, tmp_path)

    small, note = resolve(SMALL_CORPUS - 1)
    assert (small.subword, small.patience) == ("cnn", SMALL_PATIENCE)
    assert note.startswith(f"{SMALL_CORPUS - 1:,} sentence pairs (fewer than {SMALL_CORPUS:,})")
    assert f"SWcnn and patience {SMALL_PATIENCE}" in note and f"--patience {PATIENCE}" in note
    larger, note = resolve(SMALL_CORPUS)
    assert (larger.subword, larger.patience, note) == ("ave", PATIENCE, None)
    # what the user says stands: SWave keeps the patience measured for it, SWcnn takes the one measured for it
    told, note = resolve(SMALL_CORPUS - 1, subword="ave")
    assert (told.subword, told.patience, note) == ("ave", PATIENCE, None)
    told, note = resolve(SMALL_CORPUS - 1, subword="cnn")
    assert (told.subword, told.patience) == ("cnn", SMALL_PATIENCE) and f"patience {SMALL_PATIENCE}, chosen" in note
    assert "SWcnn" not in note
    told, note = resolve(SMALL_CORPUS - 1, patience=9)
    assert (told.subword, told.patience) == ("cnn", 9) and "SWcnn, chosen" in note and "and patience" not in note
    assert small.resolve()[0] == small  # resumed with what it was given


def test_lr_decay_cuts_the_step_size_each_third_of_the_patience_without_a_rise(synth, tmp_path, monkeypatch):
    import xlfast.train as train_mod

    _, corpus = synth
    scores = iter([0.5, 0.6, 0.6, 0.6, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])
    monkeypatch.setattr(train_mod, "pseudo_dict_scores", lambda model, pairs: [(next(scores), 10**9)])
    trainer = Trainer.new(cfg_for(corpus, tmp_path / "d", epochs=12, patience=6, lr=0.004, lr_decay=0.5),
                          log=lambda m: None)
    seen = []
    monkeypatch.setattr(trainer, "train_step", lambda data, idx: seen.append(trainer.opt.param_groups[0]["lr"]) or 1.0)
    summary = trainer.fit()
    log = [json.loads(x) for x in (tmp_path / "d" / "log.jsonl").read_text().splitlines()]
    # patience 6: halved after 2 and 4 evaluations without a rise (epochs 4, 7, 9), not after the 6th (the
    # run stops there); the rise at epoch 5 does not undo a cut. The log gives the rate each epoch trained at.
    assert [r["lr"] for r in log] == [0.004] * 4 + [0.002] * 3 + [0.001] * 2 + [0.0005] * 2
    assert summary["epochs"] == 11 and summary["stop"] == "patience"
    steps = len(seen) // 11
    assert seen[4 * steps - 1] == 0.004 and seen[4 * steps] == 0.002 and seen[-1] == 0.0005  # the optimiser steps at the logged rate
    # a resumed run steps at the decayed rate, not at --lr
    resumed = Trainer.resume(tmp_path / "d", dict(epochs=13, patience=99), log=lambda m: None)
    assert resumed.opt.param_groups[0]["lr"] == 0.0005


@pytest.mark.parametrize("max_norm", [0.05, 1e3], ids=["clipping", "not-clipping"])
def test_clipped_step_matches_clip_grad_norm_then_adam(max_norm):
    """The training step's clipping (the norm from BLAS dots, the scale inside the fused Adam) gives the
    parameters and moments that torch's clip_grad_norm_ followed by the same Adam step gives, step after
    step, whether the gradients are scaled down or left alone."""
    from xlfast.train import clipped_step

    def model_and_opt(fused):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 3))
        return m, torch.optim.Adam(m.parameters(), lr=1e-2, fused=fused)

    x = torch.randn(32, 7, generator=torch.Generator().manual_seed(1))
    runs = {}
    for name, fused in (("torch", False), ("clipped_step", True)):
        m, opt = model_and_opt(fused)
        for _ in range(5):
            opt.zero_grad()
            (m(x) ** 2).sum().backward()
            if name == "torch":
                norm = torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm)
                assert (float(norm) > max_norm) == (max_norm < 1)  # the two cases are what their names say
                opt.step()
            else:
                clipped_step(opt, max_norm)
            assert not hasattr(opt, "grad_scale")
        runs[name] = [t.detach().clone() for p in m.parameters()
                      for t in (p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])]
    for a, b in zip(runs["torch"], runs["clipped_step"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("native", [False, True])
def test_a_new_run_says_which_arithmetic_it_chose_and_the_summary_keeps_it(synth, tmp_path, monkeypatch, native):
    import xlfast.train as train_mod

    _, corpus = synth
    monkeypatch.setattr(train_mod, "bf16_native", lambda device_type="cpu": native)
    said = []
    trainer = Trainer.new(cfg_for(corpus, tmp_path / "run", dim=16, epochs=1), log=said.append)
    assert trainer.bf16 is native
    note = [m for m in said if m.startswith("precision: ")]
    assert note == [trainer.precision_note()]
    assert ("bf16 autocast, native" in note[0]) is native and ("float32, this CPU has no native bf16" in note[0]) is not native
    assert trainer.fit()["bf16"] is native
    # what the user says is not remarked on
    said.clear()
    Trainer.new(cfg_for(corpus, tmp_path / "told", dim=16, epochs=1, bf16=False), log=said.append)
    assert not [m for m in said if m.startswith("precision: ")]
