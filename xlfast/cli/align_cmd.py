"""`xlfast align`: word alignments from a trained run (Pharaoh i-j, 0-based, one line per pair)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from xlfast.align import EMBEDDINGS, NULL_RULES, SYMMETRISATIONS, AlignOptions
from xlfast.cli.common import (JsonOption, LowercaseOverride, SrcLangOption, TgtLangOption, ThreadsOption,
                               TokenizeOverride, apply_threads, choices, err_console, progress, write_json)
from xlfast.errors import UsageError
from xlfast.io import is_stdio

Emb = choices("Emb", EMBEDDINGS)
Sym = choices("Sym", SYMMETRISATIONS)
Null = choices("Null", NULL_RULES)

# How links are chosen: `xlfast show` takes the same options, with the same defaults (AlignOptions).
EmbOption = Annotated[Emb, typer.Option(
    "--emb", help="mix: contextual and static cosines averaged (best measured); contextual (encoder states) or "
                  "static (type-level) alone.")]
SymOption = Annotated[Sym, typer.Option("--sym", help="Symmetrisation of the two directions; none = forward only.")]
NullOption = Annotated[Null, typer.Option(
    "--null", help="NULL heuristic: drop links closer to <bos> than to each other (min: paper, max: authors' code).")]
StaticWeightOption = Annotated[float, typer.Option(
    "--static-weight", min=0.0, max=1.0, help="Weight of the static cosine with --emb mix.")]
AnchorsOption = Annotated[bool, typer.Option(
    "--anchors/--no-anchors", help="Link the same number (in any script's digits) and words spelt alike in their "
                                   "first 6 characters (names, loanwords, cognates; 3+ characters, case and "
                                   "diacritics aside, other scripts romanised) whatever the vectors say.")]
DEFAULTS = AlignOptions()


def align_options(emb, sym, null, static_weight: float, anchors: bool = DEFAULTS.anchors) -> AlignOptions:
    return AlignOptions(emb=emb.value, sym=sym.value, null=null.value, static_weight=static_weight, anchors=anchors)


def align(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory (from `xlfast train`).")],
    parallel: Annotated[Path, typer.Argument(help="Parallel text: `src ||| tgt` or TSV per line, or the source side "
                                                  "when TGT_FILE is given; '-': standard input; .gz is read as is.")],
    tgt_file: Annotated[Optional[Path], typer.Argument(help="Target side, line-aligned with PARALLEL.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write Pharaoh `i-j` links (0-based); "
                                                                "'-': standard output.")] = ...,
    emb: EmbOption = Emb(DEFAULTS.emb),
    static_weight: StaticWeightOption = DEFAULTS.static_weight,
    sym: SymOption = Sym(DEFAULTS.sym),
    null: NullOption = Null(DEFAULTS.null),
    anchors: AnchorsOption = DEFAULTS.anchors,
    src_lang: SrcLangOption = None,
    tgt_lang: TgtLangOption = None,
    tokenize: TokenizeOverride = None,
    lowercase: LowercaseOverride = None,
    scores: Annotated[Optional[Path], typer.Option(help="Also write, per line, each written link's in-pair CSLS "
                                                        "score (same order as the links).")] = None,
    fwd: Annotated[Optional[Path], typer.Option(
        "--fwd", help="Also write the forward links (source → target) before symmetrisation, per line.")] = None,
    rev: Annotated[Optional[Path], typer.Option(
        "--rev", help="Also write the backward links (target → source) before symmetrisation, per line.")] = None,
    word_pairs: Annotated[Optional[Path], typer.Option(
        "--word-pairs", help="Also write every link as the two words it joins, `src<TAB>tgt`, one line per link.")
    ] = None,
    write_tokens: Annotated[Optional[Path], typer.Option(
        "--write-tokens", help="Index xlfast's own tokens instead of the whitespace tokens of the input, and write "
                               "those tokens here (`src ||| tgt` per line) so the links can be read.")] = None,
    batch_size: Annotated[int, typer.Option(help="Sentence pairs per batched similarity computation.", min=1)] = 256,
    skip_bad_lines: Annotated[bool, typer.Option(help="Skip malformed input lines (an empty output line keeps "
                                                      "the numbering) instead of stopping.")] = False,
    json_out: JsonOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Align the words of parallel sentences with a trained run (Pharaoh i-j output, 0-based).

    Links index the whitespace-separated tokens of each input line exactly as written, whatever the
    tokenizer does inside: a word is linked to another when any of their tokens are. In a pipe, like
    fast_align: `xlfast align RUN - -o - < corpus.txt > corpus.align`."""
    apply_threads(threads)
    from xlfast.align import AlignOutputs, align_file
    from xlfast.io import count_lines
    from xlfast.run import Run

    outputs = AlignOutputs(links=output, scores=scores, tokens=write_tokens, forward=fwd, backward=rev,
                           word_pairs=word_pairs)
    to_stdout = [name for name, path in [("-o", output), ("--scores", scores), ("--write-tokens", write_tokens),
                                         ("--fwd", fwd), ("--rev", rev), ("--word-pairs", word_pairs),
                                         ("--json", json_out)] if is_stdio(path)]
    if len(to_stdout) > 1:
        raise UsageError(f"only one output can be standard output ('-'), not {' and '.join(to_stdout)}")
    options = align_options(emb, sym, null, static_weight, anchors)
    run = Run.load(run_dir)
    columns = (TextColumn("aligning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with progress(*columns) as bar:
        task = bar.add_task("align", total=count_lines(parallel))
        summary = align_file(run, outputs, parallel, tgt_file, src_lang=src_lang, tgt_lang=tgt_lang,
                             tokenize=tokenize and tokenize.value, lowercase=lowercase, options=options,
                             on="tokens" if write_tokens else "words", batch_size=batch_size,
                             skip_bad_lines=skip_bad_lines, on_pairs=lambda n: bar.advance(task, n))
    tok = summary.tokenizer
    skipped = f", {summary.skipped} bad lines skipped" if summary.skipped else ""
    err_console.print(
        f"aligned {summary.pairs} pairs ({summary.src_lang}→{summary.tgt_lang}, {options.emb}, {options.sym}, "
        f"null={options.null}, tokenizer={tok.name}{' lowercase' if tok.lowercase else ''}, links on {summary.on}): "
        f"{summary.links} links → {'standard output' if is_stdio(output) else output}{skipped}",
        highlight=False, markup=False,
    )
    if json_out is not None:
        write_json(json_out, dict(summary.to_dict(), input=str(parallel), tgt_file=str(tgt_file) if tgt_file else None,
                                  outputs={k: str(v) for k, v in vars(outputs).items() if v is not None}))
