"""Data-parallel training: real ranks of a torchrun launch step like one process on their batches together,
rank 0 evaluates within epochs, and a killed distributed run resumes (on another number of processes, even
from within an epoch)."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xlfast import distributed
from xlfast.corpora import CorpusSpec, MonoData
from xlfast.corpus_store import TokenArrays
from xlfast.rundir import RunDir, epoch_ends
from xlfast.synthetic import make_pair
from xlfast.tokenize import TokenizerSpec
from xlfast.train import TrainConfig, Trainer, epoch_plan

SETTINGS = dict(dim=16, batch_size=4, dropout=0.0, spm_vocab=60, bf16=False, threads=1, seed=7)


def test_shards_are_disjoint_cover_the_plan_and_take_equal_steps():
    shards = [distributed.shard(11, distributed.Group(rank, 3)).tolist() for rank in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert sorted(sum(shards, [])) == sorted(list(range(11)) + [0])  # one batch repeats: every rank steps 4 times
    assert shards[0] == [0, 3, 6, 9] and shards[2] == [2, 5, 8, 0]
    assert distributed.shard(11, distributed.SINGLE).tolist() == list(range(11))


def test_an_epoch_resumed_within_shards_the_batches_not_yet_trained():
    whole = [distributed.shard(11, distributed.Group(rank, 3)).tolist() for rank in range(3)]
    rest = [distributed.shard(11, distributed.Group(rank, 3), done=6).tolist() for rank in range(3)]
    assert rest == [s[2:] for s in whole]  # two steps of 3 ranks done: the rest of each rank's shard
    assert distributed.shard(11, distributed.SINGLE, done=6).tolist() == list(range(6, 11))  # resumed on one process


def test_a_shard_of_a_plan_takes_its_batches():
    lengths = [[4] * n for n in range(1, 40)]
    data = MonoData("x", TokenArrays.from_lists(lengths), "x")
    plan = epoch_plan([data], 4, random.Random(3))
    halves = [plan.take(distributed.shard(len(plan), distributed.Group(rank, 2))) for rank in (0, 1)]
    assert [len(h) for h in halves] == [5, 5]  # 10 batches
    batches = [idx.tolist() for half in halves for _, idx in half]
    assert sorted(i for b in batches for i in b) == list(range(39))  # disjoint, and together the whole plan
    assert [idx.tolist() for _, idx in halves[1]] == [plan[j][1].tolist() for j in (1, 3, 5, 7, 9)]


def test_the_launcher_drops_its_own_option():
    argv = ["train", "c.tsv", "--nproc", "2", "-o", "r", "--nproc=3"]
    assert distributed.without_option(argv, "--nproc") == ["train", "c.tsv", "-o", "r"]


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (torchrun starts each rank in a session of its own: killing the
    launcher's process group would leave the ranks running)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid] + [p for child in children for p in _process_tree(int(child))]


def _wait_for(predicate, proc, stderr: Path, seconds):
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {stderr.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("training made no progress in time")
        time.sleep(0.2)


def test_two_ranks_equal_one_process_and_a_killed_run_resumes_on_one(tmp_path):
    pair = make_pair(n_sentences=96, vocab=20, seed=4)
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("".join(f"{' '.join(s)}\t{' '.join(t)}\n" for s, t in zip(pair.src_sents, pair.tgt_sents)))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "xlfast", "train", str(corpus), "--langs", "src,tgt", "-o", str(out), "--nproc", "2",
           "--tokenize", "none", "--epochs", "100", "--patience", "100", "--no-bf16", "--eval-every", "5"]
    cmd += [arg for k, v in SETTINGS.items() if k != "bf16" for arg in (f"--{k.replace('_', '-')}", str(v))]
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, XLFAST_GOVERNOR="0"))
    rundir = RunDir(out)
    try:
        _wait_for(lambda: rundir.has_checkpoint() and epoch_ends(rundir.read_log()), proc, stderr, 900)
    finally:
        for pid in _process_tree(proc.pid):  # the launcher and both ranks, mid-run
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    # 96 pairs in batches of 4 on 2 ranks: 12 steps an epoch, evaluated by rank 0 at steps 5, 10 and 12
    assert [(r["step"], r["epoch_steps"]) for r in rundir.read_log()[:3]] == [(5, 12), (10, 12), (12, 12)]
    first = epoch_ends(rundir.read_log())[0]
    assert first["ranks"] == 2

    # Epoch 1 on one process: each step on the two ranks' batches of that step together
    cfg = TrainConfig(corpora=[CorpusSpec(str(corpus), None, ("src", "tgt"))], out=str(tmp_path / "one"),
                      tokenizer=TokenizerSpec("none"), **SETTINGS)
    single = Trainer.new(cfg, log=lambda m: None)
    plan = single.plan(1)
    halves = [plan.take(distributed.shard(len(plan), distributed.Group(rank, 2))) for rank in (0, 1)]
    assert all(k0 == k1 for (k0, _), (k1, _) in zip(*halves))
    losses = [single.train_step(single.prep.datasets[k], np.concatenate([a, b])) for (k, a), (_, b) in zip(*halves)]
    assert first["steps"] == 2 * len(losses)
    assert sum(losses) / len(losses) == pytest.approx(first["loss"], rel=1e-4)

    # The killed run continues from its checkpoint on one process (from within an epoch: the batches the
    # two ranks had not reached)
    epoch = rundir.load_state("checkpoint.pt")["epoch"]
    resumed = Trainer.resume(out, {"epochs": epoch + 1}, log=lambda m: None)
    summary = resumed.fit()
    assert summary["resumed_after"] == epoch >= 1
    ends = epoch_ends(rundir.read_log())
    assert [r["epoch"] for r in ends] == list(range(1, epoch + 2)) and ends[-1]["ranks"] == 1
    assert all(r["steps"] == len(plan) for r in ends)  # every batch of every epoch trained once
    assert rundir.has_model() and rundir.vec_path("src").is_file()
