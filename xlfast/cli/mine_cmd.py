"""`xlfast mine`: translation pairs from two monolingual corpora."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from xlfast import mine as mining
from xlfast.cli.common import (JsonOption, LowercaseOverride, Splitter, ThreadsOption, apply_threads, choices, console,
                               err_console, parsed_by, progress, table, write_json)
from xlfast.kernels.csls import parse_mem
from xlfast.search import METRICS, is_primary

Level = choices("Level", mining.LEVELS)
Metric = choices("Metric", METRICS)
MapUpdate = choices("MapUpdate", mining.MAP_UPDATES)


def _by(defaults: dict) -> str:
    return ", ".join(f"{value} ({key})" for key, value in defaults.items())


def mine(
    src: Annotated[Path, typer.Option("--src", help="Source-language monolingual text, one sentence a line; "
                                                    "'-': standard input; .gz is read as is.")],
    tgt: Annotated[Path, typer.Option("--tgt", help="Target-language monolingual text, one sentence a line; "
                                                    "'-': standard input.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the mined pairs (TSV).")],
    model: Annotated[Optional[Path], typer.Option("--model", help="A trained xlfast run directory.")] = None,
    hf_model: Annotated[Optional[Path], typer.Option(
        "--hf-model", help="A transformer saved in a local directory (needs xlfast\\[hf]; never downloads).")] = None,
    level: Annotated[Level, typer.Option(help="Mine word pairs or parallel sentences.")] = Level.word,
    metric: Annotated[Optional[Metric], typer.Option(
        help=f"Similarity (margin: the ratio margin); word level takes {' or '.join(mining.WORD_METRICS)}. "
             f"Default: {_by(mining.DEFAULT_METRIC)}.")] = None,
    threshold: Annotated[Optional[float], typer.Option(
        help=f"Keep pairs scoring above this. Default: {_by(mining.DEFAULT_THRESHOLD)}.")] = None,
    knn: Annotated[Optional[int], typer.Option(
        min=1, help=f"Neighbourhood size K of CSLS / margin. Default: {_by(mining.DEFAULT_KNN)}.")] = None,
    iterations: Annotated[int, typer.Option(
        min=0, help="Word level: mine→update iterations fitting language-specific linear maps (0: mine once).")] = 0,
    sample: Annotated[int, typer.Option(min=1, help="Sentences sampled from each side per iteration.")] = 10000,
    map_update: Annotated[MapUpdate, typer.Option(
        help="How maps are refit: orthogonal Procrustes, or the paper's few Adam steps from identity.")
    ] = MapUpdate.procrustes,
    min_count: Annotated[int, typer.Option(min=1, help="Word level: keep word pairs mined at least this often.")] = 1,
    nproc: Annotated[int, typer.Option(
        min=1, help="Processes for the search (target side sharded, torch.distributed gloo on 127.0.0.1).")] = 1,
    tokenize: Annotated[Optional[Splitter], typer.Option(
        help="Tokenizer (none: whitespace). Default: the run's own choice; none for --hf-model.")] = None,
    lowercase: LowercaseOverride = None,
    src_lang: Annotated[Optional[str], typer.Option(help="Run language of --src. Default: the run's first.")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option(help="Run language of --tgt. Default: the run's second.")] = None,
    mem: Annotated[Optional[str], typer.Option(callback=parsed_by(parse_mem),
                                               help="Memory budget of a similarity tile, e.g. 256M. Default 128M.")
    ] = None,
    work_dir: Annotated[Optional[Path], typer.Option(
        help="Where token vectors are streamed (float16 memmaps). Default: a temporary directory, removed after.")
    ] = None,
    center: Annotated[bool, typer.Option(
        "--center/--no-center", help="Sentence level: subtract each corpus's mean sentence vector first.")] = True,
    candidates: Annotated[int, typer.Option(
        help="Sentence level: candidates per sentence, both ways, that stage 1 passes to stage 2.", min=1)
    ] = mining.DEFAULT_CANDIDATES,
    lexical: Annotated[int, typer.Option(
        help="Sentence level: stage 1 also passes, both ways, the sentences best covered by the translations "
             "of a sentence's words (the run's own lexicon; 0: sentence vectors only). Needs static vectors.",
        min=0)] = mining.DEFAULT_LEXICAL,
    word_weight: Annotated[float, typer.Option(
        help="Sentence level: weight of the word-level evidence in stage 2 (0: one stage, margin only). "
             f"Stage 2's threshold defaults to {mining.RESCORED_THRESHOLD}.")] = mining.DEFAULT_WORD_WEIGHT,
    evidence: Annotated[str, typer.Option(
        help="Sentence level: the word vectors stage 2 compares: static (the run's context-free subword-aware "
             "vectors), context (the encoder's states) or both. Without static vectors (a transformer): context.")
    ] = mining.DEFAULT_EVIDENCE,
    length_weight: Annotated[float, typer.Option(
        help="Sentence level: weight of the length-ratio penalty in stage 2 (0: none).", min=0.0)
    ] = mining.DEFAULT_LENGTH_WEIGHT,
    refine: Annotated[int, typer.Option(
        help="Sentence level: passes after the first, each with the source's sentence vectors mapped onto the "
             "target's by the orthogonal map that fits the pairs the last pass mined (0: one pass).", min=0)
    ] = mining.DEFAULT_REFINE,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and the map initialisation.")] = 0,
    json_path: JsonOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Mine word pairs or parallel sentences from two monolingual corpora (Hangya et al. 2022)."""
    apply_threads(threads)
    by_level = (dict(iterations=iterations, sample=sample, map_update=map_update.value, min_count=min_count, seed=seed)
                if level is Level.word else dict(center=center, candidates=candidates, lexical=lexical,
                                                           word_weight=word_weight, evidence=evidence,
                                                           length_weight=length_weight, refine=refine))
    with _StageProgress() as bar:
        summary = mining.mine_files(src, tgt, output, model=model, hf_model=hf_model,
                                    tokenize=tokenize and tokenize.value, lowercase=lowercase, src_lang=src_lang,
                                    tgt_lang=tgt_lang, nproc=nproc, say=_say, level=level.value,
                                    metric=metric and metric.value, threshold=threshold, knn=knn, mem=mem,
                                    work_dir=work_dir, progress=bar, **by_level)
    if not is_primary():  # under torchrun every rank mines; the first one reports
        return
    if level is Level.word:
        columns, shown = ["source", "target", "count", "score"], summary.best
    else:
        columns, shown = ["score", "source", "target"], [(v, _short(s), _short(t)) for v, s, t in summary.best[:10]]
    seconds = summary.seconds
    console.print(table(f"mined {summary.pairs} {summary.level} pairs → {output}", columns, shown))
    console.print(table("stages", ["stage", "seconds", "share"],
                        [[name, s, f"{100 * s / max(sum(seconds.values()), 1e-9):.0f}%"] for name, s in seconds.items()]
                        + [["tokens/s", summary.tokens_per_second, ""]]))
    if json_path is not None:
        write_json(json_path, dict(summary.to_dict(), src=str(src), tgt=str(tgt), output=str(output)))


def _say(line: str) -> None:
    err_console.print(line, markup=False, highlight=False)


def _short(text: str, width: int = 50) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class _StageProgress:
    """A Rich progress bar with one row per stage, fed by (stage, done, total) callbacks; it appears with the
    first stage, below what was said before the mining began."""

    def __enter__(self):
        self.bar = None
        self.tasks: dict[str, int] = {}
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress(TextColumn("{task.description:>12}"), BarColumn(),
                                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), transient=False)
            self.bar.__enter__()
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc) if self.bar is not None else None
