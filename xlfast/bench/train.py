"""`xlfast bench train`: full training steps on real corpora, per subword-lookup backend and output layer
(`--output`: torch = logits materialised, fused = xlfast.kernels.linear_ce, sampled = fused + sampled
softmax), alternated in one run (A B A B), with the share of step time spent in the lookup (from the torch
profiler) and the kernel (system) time and page faults of a step.

Seconds per epoch are projected from the median step time × the steps of one epoch, and compared with
the authors' released code as measured on the development machine (grk-it, 1 thread). Returns rows; the
CLI (`xlfast.cli.bench_cmd`) renders them.
"""
from __future__ import annotations

import contextlib
import os
import resource
import statistics
import tempfile
import time
from typing import Callable

from xlfast.errors import XlfastError

# Seconds per epoch of the authors' released code on grk-it, 1 thread, on the development machine (midpoints
# of the measured ranges).
AUTHORS_GRK_IT = {"none": 12.0, "ave": 22.0, "cnn": 81.0}
# The corpora `bench train` knows: (source file, target file, languages) under the data directory.
CORPUS_FILES = {"grk-it": ("align.gr", "align.it", ("grk", "it")),
                "shp-es": ("train.tok.shp", "train.tok.es", ("shp", "es"))}


def corpora(names: list[str], log: Callable[[str], None] = lambda m: None):
    """The corpora among `names` whose data is there; `log` hears of those skipped."""
    from xlfast.corpora import CorpusSpec
    from xlfast.paths import data_file

    out = {}
    for name in names:
        if name not in CORPUS_FILES:
            raise XlfastError(f"unknown corpus {name!r} ({', '.join(CORPUS_FILES)})")
        src_file, tgt_file, langs = CORPUS_FILES[name]
        src, tgt = data_file(name, src_file), data_file(name, tgt_file)
        if src.exists() and tgt.exists():
            out[name] = CorpusSpec(str(src), str(tgt), langs)
        else:
            log(f"{name}: data not found under {src.parent}; skipped")
    return out


def lookup_share(trainer, steps: int = 3) -> float:
    """Share of a step's CPU time inside the subword lookup, forward and backward (profiled)."""
    import os

    from torch.profiler import ProfilerActivity, profile, record_function

    # Kineto prints its own `USDT: ... profiler_start/stop` lines on standard error unless told its log
    # level; it reads the variable when the first profile starts.
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")
    plan = _plan(trainer)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(steps):
            with record_function("xlfast_step"):
                _step(trainer, plan[k % len(plan)])
    events = prof.key_averages()
    total = sum(e.cpu_time_total for e in events if e.key == "xlfast_step")
    # Forward: the model's "subword_embed" range; backward: the fused Function's node, or the reference's
    # embedding_bag backward.
    inside = sum(e.cpu_time_total for e in events
                 if e.key == "subword_embed" or "SubwordEmbedBackward" in e.key or "EmbeddingBagBackward" in e.key)
    return inside / total if total else float("nan")


def _plan(trainer):
    return trainer.plan(1)


OUTPUTS = ("torch", "fused", "sampled")


@contextlib.contextmanager
def output_layer(output: str):
    """The output layer a step uses: 'torch' is the user's fallback, XLFAST_LINEAR_CE_BACKEND=torch."""
    old = os.environ.get("XLFAST_LINEAR_CE_BACKEND")
    os.environ["XLFAST_LINEAR_CE_BACKEND"] = "torch" if output == "torch" else "auto"
    try:
        yield
    finally:
        if old is None:
            del os.environ["XLFAST_LINEAR_CE_BACKEND"]
        else:
            os.environ["XLFAST_LINEAR_CE_BACKEND"] = old


def _step(trainer, item) -> None:
    k, idx = item
    trainer.model.train()
    trainer.train_step(trainer.prep.datasets[k], idx)


def epoch_overheads(trainer, repeats: int = 3) -> dict:
    """What an epoch costs beyond its steps: the checkpoint (the part the training thread waits for, and
    the background write it hides) and the model-selection evaluation; medians of `repeats`."""
    from xlfast.rundir import CheckpointWriter

    blocking, written, evaluation = [], [], []
    with CheckpointWriter(trainer.rundir) as trainer.writer:
        for _ in range(repeats):
            blocking.append(trainer.save_checkpoint(keep_model=True))
            t0 = time.perf_counter()
            trainer.writer.wait()
            written.append(blocking[-1] + time.perf_counter() - t0)
            t0 = time.perf_counter()
            trainer.task.score(trainer.model, trainer.prep, trainer.cfg)
            evaluation.append(time.perf_counter() - t0)
    size = trainer.rundir.checkpoint_path.stat().st_size
    return dict(ckpt_blocking_s=statistics.median(blocking), ckpt_write_s=statistics.median(written),
                ckpt_mb=size / 2**20, eval_s=statistics.median(evaluation))


def run_bench(names: list[str], subwords: list[str], backends: list[str], steps: int, rounds: int,
              threads: int | None, dim: int | None, bf16: bool | None = None,
              outputs: list[str] = ("fused",), log: Callable[[str], None] = lambda m: None) -> list[dict]:
    from xlfast.tokenize import TokenizerSpec
    from xlfast.train import TrainConfig, Trainer

    if threads:
        from xlfast.threads import configure

        configure(threads)
    rows = []
    for name, spec in corpora(names, log).items():
        for sub in subwords:
            trainers = {}
            for be in (backends if sub != "none" else ["-"]):
                for out in outputs:
                    tmp = tempfile.mkdtemp(prefix="xlfast-bench-")
                    cfg = TrainConfig(corpora=[spec], out=tmp, subword=sub, tokenizer=TokenizerSpec("none"), dim=dim,
                                      backend=None if be in ("-", "auto") else be, bf16=bf16,
                                      softmax="sampled" if out == "sampled" else "full")
                    trainers[be, out] = Trainer.new(cfg, log=lambda m: None)
            plan = _plan(next(iter(trainers.values())))
            times = {key: [] for key in trainers}
            kernel = {key: [] for key in trainers}
            for r in range(rounds):  # alternate A B A B: the CPU's speed drifts
                for (be, out), tr in trainers.items():
                    with output_layer(out):
                        _step(tr, plan[0])  # warm-up (JIT, allocator)
                        ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                        for s in range(steps):
                            _step(tr, plan[(r * steps + s) % len(plan)])
                        t1, ru1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
                    times[be, out].append((t1 - t0) / steps)
                    kernel[be, out].append(((ru1.ru_stime - ru0.ru_stime) / steps, (ru1.ru_minflt - ru0.ru_minflt) / steps))
            for (be, out), tr in trainers.items():
                step_s = statistics.median(times[be, out])
                epoch_s = step_s * len(plan)
                with output_layer(out):
                    share = lookup_share(tr) if sub != "none" else 0.0
                row = dict(corpus=name, subword=sub, backend=be, output=out, bf16=tr.bf16, step_ms=step_s * 1000,
                           epoch_s=epoch_s, steps_per_epoch=len(plan), lookup_share=share,
                           sys_ms=1000 * statistics.median(k[0] for k in kernel[be, out]),
                           page_faults=statistics.median(k[1] for k in kernel[be, out]), **epoch_overheads(tr))
                row["ckpt_share"] = row["ckpt_blocking_s"] / epoch_s
                if name == "grk-it":
                    row["vs_authors"] = AUTHORS_GRK_IT[sub] / epoch_s
                rows.append(row)
    return rows

