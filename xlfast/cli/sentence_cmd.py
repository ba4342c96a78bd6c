"""Sentence embeddings: `xlfast train-sent` (WACSE on a trained run), `xlfast eval mine` (P/R/F1 of mined
pairs) and `xlfast eval retrieval` (Tatoeba-style accuracy both ways)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from xlfast.cli.common import (JsonOption, LowercaseOverride, ThreadsOption, TokenizeOverride, apply_threads, console,
                               err_console, table, write_json)
from xlfast.errors import XlfastError
from xlfast.sentence import SentenceConfig

DEFAULTS = SentenceConfig()


def _weights(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise XlfastError(f"--weights takes three numbers 'TR,WTR,AWP', got '{text}'") from None
    if len(values) != 3:
        raise XlfastError(f"--weights takes three numbers 'TR,WTR,AWP', got '{text}'")
    return values  # type: ignore[return-value]


def train_sent(
    run_dir: Annotated[Path, typer.Argument(help="A trained parallel run (xlfast train).", show_default=False)],
    corpus: Annotated[Path, typer.Argument(help="Parallel corpus: FILE (TSV or 'src ||| tgt'), or SRC with TGT.",
                                           show_default=False)],
    tgt_file: Annotated[Optional[Path], typer.Argument(help="Target side when CORPUS holds only the source.",
                                                       show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The new run directory (the run's files, the fine-tuned "
                                                          "model, sentence.json).")] = ...,
    src_lang: Annotated[Optional[str], typer.Option(help="Run language of the source side. Default: the run's first.")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option(help="Run language of the target side. Default: the other.")] = None,
    weights: Annotated[str, typer.Option(help="Loss weights TR,WTR,AWP (Miao et al. 2024).")] = ",".join(
        str(w) for w in DEFAULTS.weights),
    temperature: Annotated[float, typer.Option(help="Temperature of the TR and WTR softmax over cosines.")] = DEFAULTS.temperature,
    margin: Annotated[float, typer.Option(help="Additive margin on the true pair's cosine in TR (LaBSE).")] = DEFAULTS.margin,
    epochs: Annotated[int, typer.Option(help="Most epochs.", min=1)] = DEFAULTS.epochs,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better held-out accuracy.",
                                          min=1)] = DEFAULTS.patience,
    batch_size: Annotated[int, typer.Option(help="Sentence pairs per step (TR's in-batch negatives).", min=2)] = DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = DEFAULTS.lr,
    dropout: Annotated[float, typer.Option(help="Dropout on the embedding tables.")] = DEFAULTS.dropout,
    heldout: Annotated[int, typer.Option(help="Pairs held out to select the model by retrieval accuracy "
                                              "(at most a tenth of the corpus).")] = DEFAULTS.heldout,
    seed: Annotated[int, typer.Option(help="Random seed.")] = DEFAULTS.seed,
    freeze_tables: Annotated[bool, typer.Option(
        "--freeze-tables/--train-tables", help="Keep the run's word tables (the static vectors mining compares "
        "words with) and tune the encoder only.")] = DEFAULTS.freeze_tables,
    skip_bad_lines: Annotated[bool, typer.Option(help="Skip (and count) malformed lines instead of stopping.")] = False,
    tokenize: TokenizeOverride = None,
    lowercase: LowercaseOverride = None,
    json_out: JsonOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Train sentence embeddings on a run's encoder: translation ranking, word translation ranking and
    aligned word prediction on a parallel corpus (WACSE, Miao et al. 2024)."""
    apply_threads(threads)
    from xlfast.io import read_parallel
    from xlfast.sentence import train_sentence_encoder

    cfg = SentenceConfig(weights=_weights(weights), temperature=temperature, margin=margin, epochs=epochs,
                         patience=patience, batch_size=batch_size, lr=lr, dropout=dropout, heldout=heldout, seed=seed,
                         freeze_tables=freeze_tables)
    pairs = read_parallel(corpus, tgt_file, skip_bad_lines=skip_bad_lines)

    def on_epoch(rec: dict) -> None:
        acc = rec["heldout"]
        losses = "" if rec["epoch"] == 0 else (f"  loss {rec['loss']:.3f} (TR {rec['tr']:.3f}, WTR {rec['wtr']:.3f}, "
                                               f"AWP {rec['awp']:.3f})  {rec['seconds']:.0f}s")
        err_console.print(f"epoch {rec['epoch']}: held-out retrieval {acc['src2tgt']:.3f} / {acc['tgt2src']:.3f}"
                          + losses, highlight=False)

    summary = train_sentence_encoder(run_dir, pairs, out, cfg, src_lang, tgt_lang, log=err_console.print,
                                     on_epoch=on_epoch, tokenize=tokenize and tokenize.value, lowercase=lowercase)
    s, t = summary["langs"]
    console.print(f"sentence encoder → {out}: epoch {summary['best_epoch']} selected, held-out retrieval accuracy "
                  f"{summary['heldout_accuracy']:.3f} ({s}↔{t}, {summary['heldout_pairs']} pairs), "
                  f"{summary['seconds']:.0f}s", highlight=False)
    if json_out is not None:
        write_json(json_out, summary)


def eval_mine(
    gold_src: Annotated[Path, typer.Option(help="Source side of the gold pairs, one sentence a line.")],
    gold_tgt: Annotated[Path, typer.Option(help="Target side of the gold pairs, line-aligned with --gold-src.")],
    pred: Annotated[Path, typer.Option(help="Mined pairs: the TSV of `xlfast mine --level sentence`.")],
    json_out: JsonOption = None,
) -> None:
    """Precision, recall and F1 of mined sentence pairs: a pair is correct when both sides equal a gold
    pair's sides (whitespace normalised)."""
    from xlfast import evaluate
    from xlfast.io import read_parallel
    from xlfast.mine import read_sentence_pairs

    gold = read_parallel(gold_src, gold_tgt)
    result = evaluate.mining(read_sentence_pairs(pred), zip(gold.src, gold.tgt))
    rows = [["precision", result["precision"]], ["recall", result["recall"]], ["F1", result["f1"]],
            ["mined pairs", result["mined"]], ["correct", result["correct"]], ["gold pairs", result["gold"]]]
    console.print(table(f"mining {pred.name}", ["measure", "value"], rows))
    if json_out is not None:
        write_json(json_out, dict(result, pred=str(pred), gold_src=str(gold_src), gold_tgt=str(gold_tgt)))


def eval_retrieval(
    run_dir: Annotated[Path, typer.Argument(help="A trained run (with or without a sentence encoder).",
                                            show_default=False)],
    src: Annotated[Path, typer.Option("--src", help="Source sentences, one a line.")],
    tgt: Annotated[Path, typer.Option("--tgt", help="Their translations, line-aligned with --src.")],
    src_lang: Annotated[Optional[str], typer.Option(help="Run language of --src. Default: the run's first.")] = None,
    tgt_lang: Annotated[Optional[str], typer.Option(help="Run language of --tgt. Default: the run's second.")] = None,
    tokenize: TokenizeOverride = None,
    lowercase: LowercaseOverride = None,
    json_out: JsonOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Bitext retrieval accuracy both ways (Tatoeba-style): the share of sentences whose nearest
    neighbour (cosine of mean-pooled contextual vectors) is their translation."""
    apply_threads(threads)
    from xlfast import evaluate
    from xlfast.encoders import RunEncoder
    from xlfast.io import read_parallel
    from xlfast.mine import encode_corpus
    from xlfast.search import scratch_dir

    pairs = read_parallel(src, tgt)
    encoder = RunEncoder.load(run_dir, src_lang, tgt_lang, tokenize=tokenize and tokenize.value, lowercase=lowercase)
    with scratch_dir() as work:
        vecs = [encode_corpus(encoder, side, lines, work).sentence_vectors
                for side, lines in (("src", pairs.src), ("tgt", pairs.tgt))]
    result = evaluate.retrieval(vecs[0], vecs[1], pairs.src, pairs.tgt)
    s, t = encoder.langs["src"], encoder.langs["tgt"]
    console.print(table(f"retrieval accuracy, {result['sentences']} pairs", ["direction", "accuracy"],
                        [[f"{s}→{t}", result["src2tgt"]], [f"{t}→{s}", result["tgt2src"]], ["mean", result["mean"]]]))
    if json_out is not None:
        write_json(json_out, dict(result, run=str(run_dir), src=str(src), tgt=str(tgt)))
