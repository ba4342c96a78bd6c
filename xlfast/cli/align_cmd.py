"""`xlfast align`: word alignments from a trained run (Pharaoh i-j, 0-based, one line per pair)."""
from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from xlfast.cli.common import ThreadsOption, Tokenize, apply_threads, err_console
from xlfast.errors import XlfastError

CHUNK_PAIRS = 4096  # pairs read, embedded and written at a time: memory stays flat on big corpora


class Emb(str, Enum):
    mix = "mix"
    contextual = "contextual"
    static = "static"


class Sym(str, Enum):
    gdfa = "grow-diag-final-and"
    intersect = "intersect"
    union = "union"
    none = "none"


class Null(str, Enum):
    none = "none"
    min = "min"
    max = "max"


def resolve_langs(run, src_lang: Optional[str], tgt_lang: Optional[str]) -> tuple[str, str]:
    """The run's first two languages unless given; each must be in the run."""
    if len(run.langs) < 2 and (src_lang is None or tgt_lang is None):
        raise XlfastError(f"the run has one language ({run.langs[0]}); pass --src-lang and --tgt-lang")
    src_lang = src_lang or run.langs[0]
    tgt_lang = tgt_lang or next(l for l in run.langs if l != src_lang)
    for lang in (src_lang, tgt_lang):
        if lang not in run.langs:
            raise XlfastError(f"language '{lang}' is not in this run (it has: {', '.join(run.langs)})")
    return src_lang, tgt_lang


def resolve_tokenizer(run, tokenize: Optional[Tokenize], lowercase: Optional[bool]):
    """The run's remembered tokenizer, with --tokenize / --lowercase overriding its parts."""
    from xlfast.tokenize import TokenizerSpec

    base = run.tokenizer
    return TokenizerSpec(
        name=tokenize.value if tokenize is not None else base.name,
        lowercase=base.lowercase if lowercase is None else lowercase,
    )


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0  # the reader reports the missing file with its own message


def align(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory (from `xlfast train`).")],
    parallel: Annotated[Path, typer.Argument(help="Parallel text: `src ||| tgt` or TSV per line, or the "
                                                  "source side when TGT_FILE is given.")],
    tgt_file: Annotated[Optional[Path], typer.Argument(help="Target side, line-aligned with PARALLEL.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write Pharaoh `i-j` links (0-based).")] = ...,
    emb: Annotated[Emb, typer.Option(help="mix: contextual and static cosines averaged (best measured); "
                                          "contextual (encoder states) or static (type-level) alone.")] = Emb.mix,
    static_weight: Annotated[float, typer.Option(help="Weight of the static cosine with --emb mix.", min=0.0,
                                                 max=1.0)] = 0.5,
    sym: Annotated[Sym, typer.Option(help="Symmetrisation of the two directions; `none` = forward only.")] = Sym.gdfa,
    null: Annotated[Null, typer.Option(help="NULL heuristic: drop links closer to <bos> than to each other "
                                            "(min: paper, max: authors' code).")] = Null.none,
    src_lang: Annotated[Optional[str], typer.Option(help="Source language code; default: the run's first.")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option(help="Target language code; default: the run's other.")] = None,
    tokenize: Annotated[Optional[Tokenize], typer.Option(help="Override the run's tokenizer (`none` = split on "
                                                              "spaces, for pre-tokenised text and gold data).")] = None,
    lowercase: Annotated[Optional[bool], typer.Option("--lowercase/--no-lowercase",
                                                      help="Override the run's lowercasing.")] = None,
    scores: Annotated[Optional[Path], typer.Option(help="Also write, per line, each written link's in-pair CSLS "
                                                        "score (same order as the links).")] = None,
    write_tokens: Annotated[Optional[Path], typer.Option(
        "--write-tokens", help="Index xlfast's own tokens instead of the whitespace tokens of the input, and write "
                               "those tokens here (`src ||| tgt` per line) so the links can be read.")] = None,
    batch_size: Annotated[int, typer.Option(help="Sentence pairs per batched similarity computation.", min=1)] = 256,
    skip_bad_lines: Annotated[bool, typer.Option(help="Skip malformed input lines (an empty output line keeps "
                                                      "the numbering) instead of stopping.")] = False,
    threads: ThreadsOption = None,
) -> None:
    """Align the words of parallel sentences with a trained run (Pharaoh i-j output, 0-based).

    Links index the whitespace-separated tokens of each input line exactly as written, whatever the
    tokenizer does inside: a word is linked to another when any of their tokens are."""
    apply_threads(threads)
    from xlfast.align import align_lines
    from xlfast.io import atomic_open, format_pharaoh, iter_parallel
    from xlfast.run import Run

    run = Run.load(run_dir)
    src_lang, tgt_lang = resolve_langs(run, src_lang, tgt_lang)
    tok = resolve_tokenizer(run, tokenize, lowercase)
    reader = iter_parallel(parallel, tgt_file, skip_bad_lines=skip_bad_lines)
    total = _count_lines(parallel)
    on = "tokens" if write_tokens else "words"

    def flush(chunk_src, chunk_tgt, outs, progress, task):
        results, segs = align_lines(
            run, chunk_src, chunk_tgt, src_lang, tgt_lang, tok, on=on, emb=emb.value, sym=sym.value,
            null=null.value, batch_size=batch_size, on_batch=lambda n: progress.advance(task, n),
            static_weight=static_weight,
        )
        out, score_out, tokens_out = outs
        for res, (a, b) in zip(results, segs):
            out.write(format_pharaoh(res.links) + "\n")
            if score_out is not None:
                score_out.write(" ".join(f"{csls:.4f}" for _, csls in res.scores) + "\n")
            if tokens_out is not None:
                tokens_out.write(f"{' '.join(a.tokens)} ||| {' '.join(b.tokens)}\n")
        return len(results), sum(len(r.links) for r in results)

    n_pairs = n_links = 0
    columns = (TextColumn("aligning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with atomic_open(output) as out, _maybe(scores) as score_out, _maybe(write_tokens) as tokens_out, \
            Progress(*columns, console=err_console, transient=True) as progress:
        outs = (out, score_out, tokens_out)
        task = progress.add_task("align", total=total or None)
        chunk_src, chunk_tgt = [], []
        expected_line = 1
        for number, s, t in reader:
            # a skipped input line still gets its (empty) output line: output line i belongs to input line i
            for _ in range(number - expected_line):
                chunk_src.append("")
                chunk_tgt.append("")
            expected_line = number + 1
            chunk_src.append(s)
            chunk_tgt.append(t)
            if len(chunk_src) >= CHUNK_PAIRS:
                done = flush(chunk_src, chunk_tgt, outs, progress, task)
                n_pairs, n_links = n_pairs + done[0], n_links + done[1]
                chunk_src, chunk_tgt = [], []
        for _ in range(reader.lines_read - (expected_line - 1)):  # bad lines at the very end
            chunk_src.append("")
            chunk_tgt.append("")
        if chunk_src:
            done = flush(chunk_src, chunk_tgt, outs, progress, task)
            n_pairs, n_links = n_pairs + done[0], n_links + done[1]
    if n_pairs == 0:
        raise XlfastError(f"{parallel}: no sentence pairs to align")
    skipped = f", {reader.skipped} bad lines skipped" if reader.skipped else ""
    err_console.print(
        f"aligned {n_pairs - reader.skipped} pairs ({src_lang}→{tgt_lang}, {emb.value}, {sym.value}, null={null.value}, "
        f"tokenizer={tok.name}{' lowercase' if tok.lowercase else ''}, links on {on}): {n_links} links → {output}{skipped}"
    )


@contextmanager
def _maybe(path: Optional[Path]):
    """An optional output file: atomically written when asked for, else None."""
    if path is None:
        yield None
        return
    from xlfast.io import atomic_open

    with atomic_open(path) as f:
        yield f
