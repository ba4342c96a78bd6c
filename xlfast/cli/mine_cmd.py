"""`xlfast mine`: translation pairs from two monolingual corpora."""
from __future__ import annotations

import shutil
import tempfile
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from xlfast.cli.common import ThreadsOption, apply_threads, console, err_console, table, write_json
from xlfast.errors import XlfastError


class Level(str, Enum):
    word = "word"
    sentence = "sentence"


class Metric(str, Enum):
    cos = "cos"
    csls = "csls"
    margin = "margin"


class MapUpdate(str, Enum):
    procrustes = "procrustes"
    adam = "adam"


# Token-level CSLS sits near 0 for frequent words (their K nearest tokens are copies of the same word),
# so the paper's cosine threshold 0.2 would keep almost nothing under csls.
DEFAULT_THRESHOLD = {"cos": 0.2, "csls": 0.0, "margin": 1.05}
DEFAULT_METRIC = {"word": "cos", "sentence": "margin"}
DEFAULT_KNN = {"word": 10, "sentence": 4}


def mine(
    src: Annotated[Path, typer.Option("--src", help="Source-language monolingual text, one sentence a line.")],
    tgt: Annotated[Path, typer.Option("--tgt", help="Target-language monolingual text, one sentence a line.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the mined pairs (TSV).")],
    model: Annotated[Optional[Path], typer.Option("--model", help="A trained xlfast run directory.")] = None,
    hf_model: Annotated[Optional[Path], typer.Option(
        "--hf-model", help="A transformer saved in a local directory (needs xlfast[hf]; never downloads).")] = None,
    level: Annotated[Level, typer.Option(help="Mine word pairs or parallel sentences.")] = Level.word,
    metric: Annotated[Optional[Metric], typer.Option(
        help="Similarity: word level cos or csls (default cos), sentence level margin (ratio margin, default).")] = None,
    threshold: Annotated[Optional[float], typer.Option(
        help="Keep pairs scoring above this. Default: 0.2 (cos), 0.0 (csls), 1.05 (sentence margin).")] = None,
    knn: Annotated[Optional[int], typer.Option(
        help="Neighbourhood size K of CSLS / margin. Default: 10 (word), 4 (sentence).")] = None,
    iterations: Annotated[int, typer.Option(
        help="Word level: mine→update iterations fitting language-specific linear maps (0: mine once).")] = 0,
    sample: Annotated[int, typer.Option(help="Sentences sampled from each side per iteration.")] = 10000,
    map_update: Annotated[MapUpdate, typer.Option(
        help="How maps are refit: orthogonal Procrustes, or the paper's few Adam steps from identity.")
    ] = MapUpdate.procrustes,
    min_count: Annotated[int, typer.Option(help="Word level: keep word pairs mined at least this often.")] = 1,
    nproc: Annotated[int, typer.Option(
        help="Processes for the search (target side sharded, torch.distributed gloo on 127.0.0.1).")] = 1,
    tokenize: Annotated[Optional[str], typer.Option(
        help="Tokenizer: default or none (whitespace). Default: the run's own choice; none for --hf-model.")] = None,
    lowercase: Annotated[bool, typer.Option("--lowercase", help="Lowercase tokens (with --tokenize).")] = False,
    src_lang: Annotated[Optional[str], typer.Option(help="Run language of --src. Default: the run's first.")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option(help="Run language of --tgt. Default: the run's second.")] = None,
    mem: Annotated[Optional[str], typer.Option(help="Memory budget of a similarity tile, e.g. 256M. Default 128M.")] = None,
    work_dir: Annotated[Optional[Path], typer.Option(
        help="Where token vectors are streamed (float16 memmaps). Default: a temporary directory, removed after.")
    ] = None,
    center: Annotated[bool, typer.Option(
        "--center/--no-center", help="Sentence level: subtract each corpus's mean sentence vector first.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and the map initialisation.")] = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write a JSON summary here ('-' = stdout).")
    ] = None,
    threads: ThreadsOption = None,
) -> None:
    """Mine word pairs or parallel sentences from two monolingual corpora (Hangya et al. 2022)."""
    apply_threads(threads)
    from xlfast import mine as mining
    from xlfast.io import atomic_write_text, read_mono

    lvl = level.value
    metric_name = metric.value if metric else DEFAULT_METRIC[lvl]
    if lvl == "word" and metric_name == "margin":
        raise XlfastError("--metric margin is for --level sentence; word level uses cos or csls")
    if nproc < 1:
        raise XlfastError("--nproc must be at least 1")
    thr = DEFAULT_THRESHOLD[metric_name] if threshold is None else threshold
    k = DEFAULT_KNN[lvl] if knn is None else knn
    if (model is None) == (hf_model is None):
        raise XlfastError("give exactly one encoder: --model RUN_DIR or --hf-model PATH")
    src_lines, tgt_lines = read_mono(src, skip_bad_lines=True), read_mono(tgt, skip_bad_lines=True)
    for lines in (src_lines, tgt_lines):
        if lines.skipped:
            err_console.print(f"[yellow]{lines.path}: skipped {lines.skipped} empty or undecodable lines[/]")
    encoder = _encoder(model, hf_model, tokenize, lowercase, src_lang, tgt_lang)
    err_console.print(f"encoder: {encoder.name}, dim {encoder.dim}; search: xlfast.kernels.csls, {nproc} process(es)")

    scratch = Path(tempfile.mkdtemp(prefix="xlfast-mine-")) if work_dir is None else Path(work_dir)
    seconds: dict[str, float] = {}
    summary: dict = {"level": lvl, "metric": metric_name, "threshold": thr, "knn": k, "nproc": nproc,
                     "src": str(src), "tgt": str(tgt), "encoder": encoder.name}
    try:
        with _progress() as bar:
            t0 = time.perf_counter()
            src_c = mining.encode_corpus(encoder, "src", src_lines, scratch, src_lines.lines, progress=bar)
            tgt_c = mining.encode_corpus(encoder, "tgt", tgt_lines, scratch, tgt_lines.lines, progress=bar)
            seconds["encode"] = time.perf_counter() - t0
            if lvl == "word":
                res = mining.mine_words(src_c, tgt_c, metric_name, thr, k, iterations, sample, map_update.value,
                                        min_count=min_count, nproc=nproc, seed=seed, mem=mem, work_dir=scratch,
                                        progress=bar)
                seconds.update(res.seconds)
                text = mining.word_pairs_tsv(res.pairs)
                summary.update(pairs=len(res.pairs), token_pairs=res.token_pairs,
                               iterations=[vars(s) for s in res.iterations])
                shown = [[s, t, c, v] for s, t, c, v in res.pairs.rows()[:15]]
                columns = ["source", "target", "count", "score"]
            else:
                res = mining.mine_sentences(src_c, tgt_c, thr, k, metric_name, nproc, mem, scratch, center=center)
                seconds.update(res.seconds)
                text = mining.sentence_pairs_tsv(res, src_c, tgt_c)
                summary.update(pairs=len(res))
                shown = [[float(v), _short(src_c.lines[i]), _short(tgt_c.lines[j])]
                         for i, j, v in list(zip(res.src, res.tgt, res.score))[:10]]
                columns = ["score", "source", "target"]
        if _rank() == 0:  # under torchrun every rank mines; one writes
            atomic_write_text(output, text)
    finally:
        if work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    tokens = src_c.n_tokens + tgt_c.n_tokens
    summary.update(src_sentences=len(src_c.lines), tgt_sentences=len(tgt_c.lines), src_tokens=src_c.n_tokens,
                   tgt_tokens=tgt_c.n_tokens, seconds=seconds, output=str(output),
                   tokens_per_second=tokens / max(sum(seconds.values()), 1e-9))
    if _rank() != 0:
        return
    console.print(table(f"mined {summary['pairs']} {lvl} pairs → {output}", columns, shown))
    console.print(table("stages", ["stage", "seconds", "share"],
                        [[name, s, f"{100 * s / max(sum(seconds.values()), 1e-9):.0f}%"] for name, s in seconds.items()]
                        + [["tokens/s", summary["tokens_per_second"], ""]]))
    if json_path is not None:
        write_json(json_path, summary)


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _short(text: str, width: int = 50) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _encoder(model, hf_model, tokenize, lowercase, src_lang, tgt_lang):
    from xlfast.encoders import HFEncoder, RunEncoder

    tokenizer = None
    if tokenize is not None or lowercase:
        from xlfast.tokenize import TokenizerSpec

        tokenizer = TokenizerSpec(tokenize or "default", lowercase)
    if hf_model is not None:
        return HFEncoder(hf_model, tokenizer=tokenizer)
    return RunEncoder.load(model, src_lang, tgt_lang, tokenizer=tokenizer)


class _progress:
    """A Rich progress bar with one row per stage, fed by (stage, done, total) callbacks."""

    def __enter__(self):
        self.bar = Progress(TextColumn("{task.description:>12}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), console=err_console, transient=False)
        self.tasks: dict[str, int] = {}
        self.bar.__enter__()
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)
