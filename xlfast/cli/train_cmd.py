"""`xlfast train`: learn cross-lingual embeddings from parallel corpora (or, with --mono, monolingual ones)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from xlfast.cli.common import ThreadsOption, Tokenize, apply_threads, choices, console, err_console, table, write_json
from xlfast.model import PRESETS
from xlfast.train import SMALL_CORPUS, SMALL_PATIENCE, SOFTMAX_MODES, SUBWORD_MODES, TrainConfig

Subword = choices("Subword", SUBWORD_MODES)
Preset = choices("Preset", PRESETS)
Softmax = choices("Softmax", SOFTMAX_MODES)
DEFAULTS = TrainConfig(corpora=[], out="")


def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created).")],
    corpora: Annotated[Optional[list[str]], typer.Argument(help="Parallel corpora: FILE (TSV or 'src ||| tgt'), or SRC+TGT line-aligned files. With --mono: one monolingual file per language. With --resume: optional (the run's own).", metavar="CORPUS", show_default=False)] = None,
    mono: Annotated[bool, typer.Option("--mono", help="The files are monolingual (one sentence a line, no alignment between them): train the multilingual LM of Wada & Iwata (2018).")] = False,
    langs: Annotated[Optional[list[str]], typer.Option("--langs", help="Languages of a corpus as 'src,tgt'; once per corpus, in order (with --mono: one per file, 'a,b'). Default: file suffixes.")] = None,
    subword: Annotated[Subword, typer.Option(help=f"Subword-aware embeddings: none (words), ave (mean of pieces), cnn; auto: cnn (with patience {SMALL_PATIENCE}) for a parallel corpus of fewer than {SMALL_CORPUS:,} pairs, else ave.")] = Subword(DEFAULTS.subword),
    preset: Annotated[Preset, typer.Option(help="Sizes: low (500d, 1 enc layer, batch 16), medium, high.")] = Preset(DEFAULTS.preset),
    dim: Annotated[Optional[int], typer.Option(help="Embedding/LSTM size, even (overrides the preset).")] = None,
    enc_layers: Annotated[Optional[int], typer.Option(help="Encoder layers (overrides the preset).")] = None,
    dec_layers: Annotated[Optional[int], typer.Option(help="Decoder layers (overrides the preset).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sentence pairs per batch (overrides the preset; --mono: 64 sentences; parallel corpora of 4,000 pairs or more: 64).")] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs.")] = DEFAULTS.epochs,
    patience: Annotated[Optional[int], typer.Option(help="Stop after this many epochs' worth of evaluations (patience × evaluations per epoch) in which the selection score (pseudo-dictionary P@1; --mono: mutual-NN CSLS) did not rise. Default: 10; 2 for corpora of at least 4,000 pairs, whose epochs are long.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Evaluate (score for model selection, checkpoint, log) every this many steps, and at the end of every epoch; 0: once an epoch. Default: once an epoch of fewer than 600 steps, else every 300 steps or a little more (at most 8 times an epoch).", show_default=False)] = DEFAULTS.eval_every,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = DEFAULTS.lr,
    lr_decay: Annotated[float, typer.Option(help="Multiply the learning rate by this each time a third of the patience passes without a rise of the selection score (1: keep it).")] = DEFAULTS.lr_decay,
    average: Annotated[float, typer.Option(help="Evaluate, keep and export a moving average of the weights over about this many epochs (0: the weights as trained).")] = DEFAULTS.average,
    dropout: Annotated[float, typer.Option(help="Dropout on embeddings, pieces and the attention output (0 to below 1).")] = DEFAULTS.dropout,
    min_count: Annotated[int, typer.Option(help="Keep words seen at least this often.")] = DEFAULTS.min_count,
    spm_vocab: Annotated[int, typer.Option(help="SentencePiece pieces per language (shrunk for tiny corpora).")] = DEFAULTS.spm_vocab,
    select_words: Annotated[int, typer.Option(help="--mono: most frequent words per language scored by the selection criterion.")] = DEFAULTS.select_words,
    seed: Annotated[int, typer.Option(help="Random seed (runs are reproducible).")] = DEFAULTS.seed,
    threads: ThreadsOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = DEFAULTS.device,
    bf16: Annotated[Optional[bool], typer.Option("--bf16/--no-bf16", help="bfloat16 autocast. Default: on where the hardware has bf16 arithmetic.", show_default=False)] = None,
    backend: Annotated[Optional[str], typer.Option(help="Subword-lookup kernel backend (default: fastest available).")] = None,
    softmax: Annotated[Softmax, typer.Option(help="Training loss over the whole vocabulary (full), or over the batch's target words plus ~4k words drawn by unigram^0.75 with the log-Q correction (sampled: fewer FLOPs; evaluation stays full); auto: sampled, with batch 64 unless --batch-size, for parallel corpora of 4,000 pairs or more.")] = Softmax(DEFAULTS.softmax),
    tokenize: Annotated[Tokenize, typer.Option(
        help="auto: none where every side already looks tokenised (punctuation stands apart), else default; "
             "default: Unicode-aware, splits punctuation; none: split on spaces only.")] = Tokenize(DEFAULTS.tokenizer.name),
    lowercase: Annotated[bool, typer.Option("--lowercase/--no-lowercase", help="Lowercase before tokenising.")] = DEFAULTS.tokenizer.lowercase,
    skip_bad_lines: Annotated[bool, typer.Option(help="Skip (and count) malformed lines instead of stopping.")] = DEFAULTS.skip_bad_lines,
    pretrained: Annotated[Optional[list[str]], typer.Option("--pretrained", metavar="LANG=FILE", help="Pre-trained vectors (word2vec text, .vec or .vec.gz as fastText ships them) for a language of the corpora, frozen (Wada et al. 2021, §3.7): their words join the vocabulary, so retrieval reaches words the corpora never show. Their dimension must be --dim. Repeat for another language.")] = None,
    pretrained_max: Annotated[int, typer.Option(help="Read the first this many words of each --pretrained file.")] = DEFAULTS.pretrained_max,
    nproc: Annotated[int, typer.Option(help="Data-parallel processes on this machine (DistributedDataParallel, gloo; nccl on GPUs): launches torchrun. For several machines run `torchrun ... -m xlfast train` yourself.")] = 1,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint. Options given are checked against the run's: --epochs, --patience, --eval-every, --lr, --lr-decay, --threads, --device, --bf16 and --backend may change; any other difference is refused.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the summary as JSON ('-' for stdout).")] = None,
) -> None:
    """Train the cross-lingual encoder-decoder on one or more parallel corpora (Wada et al. 2021), or with
    --mono the multilingual language model on monolingual corpora only (Wada & Iwata 2018)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from xlfast import distributed
    from xlfast.corpora import from_arguments
    from xlfast.train import SettingError, checkpoint_place, flag, start

    if nproc < 1:
        raise typer.BadParameter(f"{nproc} must be at least 1", param_hint="--nproc")
    if nproc > 1 and not distributed.launched():
        # the same command line on nproc processes; there every rank finds itself launched and trains
        raise typer.Exit(distributed.launch(nproc, distributed.without_option(sys.argv[1:], "--nproc")))
    apply_threads(threads)

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)  # Typer may carry its own copy of click's enum: compare names
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    # On --resume only the options given on the command line change the run's own settings.
    options = dict(preset=preset.value, dim=dim, enc_layers=enc_layers, dec_layers=dec_layers, batch_size=batch_size,
                   subword=subword.value, dropout=dropout, epochs=epochs, patience=patience, eval_every=eval_every, lr=lr, lr_decay=lr_decay, average=average, min_count=min_count,
                   spm_vocab=spm_vocab, select_words=select_words, seed=seed, threads=threads, device=device,
                   bf16=bf16, backend=backend, skip_bad_lines=skip_bad_lines, softmax=softmax.value,
                   pretrained_max=pretrained_max)
    changes = {name: value for name, value in options.items() if given(name)}
    tokenizer = {key: value for key, value, name in (("name", tokenize.value, "tokenize"), ("lowercase", lowercase, "lowercase"))
                 if given(name)}
    if tokenizer:
        changes["tokenizer"] = tokenizer
    if pretrained:
        from xlfast.errors import XlfastError
        from xlfast.pretrained import parse_options

        try:
            changes["pretrained"] = parse_options(pretrained)
        except XlfastError as exc:
            raise typer.BadParameter(str(exc), param_hint="--pretrained") from None
    if corpora:
        changes.update(from_arguments(corpora, langs or [], mono))
    elif langs or mono:
        raise typer.BadParameter("--langs and --mono describe the CORPUS arguments: give them too", param_hint="CORPUS")
    elif not resume:
        raise typer.BadParameter("give at least one corpus (or --resume a run)", param_hint="CORPUS")

    shown = err_console if json_out is not None and str(json_out) == "-" else console  # stdout: the JSON only
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.2f}"), TextColumn("{task.fields[tok_s]:,.0f} tok/s"),
        TextColumn("{task.fields[label]} {task.fields[score]}"), TimeElapsedColumn(), console=err_console,
        transient=False,
    )
    state = {"bar": None, "score": "–", "steps_shown": False}

    def on_event(event: str, info: dict) -> None:
        # One bar, reset every epoch; a line per evaluation stays above it (with its step once an epoch has
        # evaluations before its end).
        label, criterion = trainer.task.label, trainer.task.criterion
        if event == "step":
            if state["bar"] is None:
                state["bar"] = progress.add_task("train", total=info["steps"], epoch=info["epoch"], loss=0.0, tok_s=0.0,
                                                 label=label, score=state["score"])
            progress.update(state["bar"], completed=info["step"], total=info["steps"], epoch=info["epoch"],
                            loss=info["loss"], tok_s=info["tok_s"], score=state["score"])
        elif event == "eval":
            score = info[criterion]
            state["score"] = "–" if score is None else f"{score:.3f}"
            state["steps_shown"] = state["steps_shown"] or info["step"] < info["epoch_steps"]
            pairs = f" ({info['mutual_pairs']} pairs)" if "mutual_pairs" in info else ""
            at, best = f"epoch {info['epoch']:>3}", f"best epoch {info['best_epoch']}"
            if state["steps_shown"]:
                width = len(str(info["epoch_steps"]))
                at += f"  step {info['step']:>{width}}/{info['epoch_steps']}"
                best += "" if info["best_step"] is None else f" step {info['best_step']}"  # None: a checkpoint of an older version
            progress.console.print(
                f"{at}  loss {info['loss']:.2f}  {label} {state['score']}{pairs}  {info['seconds']:.1f}s  ({best})",
                highlight=False,
            )
            if state["bar"] is not None and info["step"] == info["epoch_steps"]:
                progress.remove_task(state["bar"])
                state["bar"] = None

    try:
        trainer = start(out, changes, resume, log=lambda m: err_console.print(m, highlight=False), progress=on_event)
    except SettingError as exc:
        raise typer.BadParameter(f"{exc.value!r} {exc.problem}", param_hint=flag(exc.name)) from None
    if not trainer.group.main:  # rank 0 reports
        trainer.fit()
        distributed.leave()
        return
    with progress:
        summary = trainer.fit()
    distributed.leave()
    summary["run_dir"] = str(out)
    criterion, label = trainer.task.criterion, trainer.task.label
    selected = summary["best_epoch"]
    if summary["best_step"] not in (None, summary["epoch_steps"]):
        selected = f"{selected} (step {summary['best_step']}/{summary['epoch_steps']})"
    shown.print(
        table(
            f"xlfast train → {out}",
            ["epochs", "selected epoch", label, "stopped by", "seconds", "subword, patience", "batch, softmax",
             "tokenizer"],
            [[summary["epochs"], selected, summary[f"best_{criterion}"], summary["stop"], summary["seconds"],
              f"{summary['subword']}, {summary['patience']}", f"{summary['batch_size']}, {summary['softmax']}",
              _tokenizer_shown(summary["tokenizer"])]],
        )
    )
    if summary["resumed_after"] is not None:
        where = checkpoint_place(summary["resumed_after"], summary["resumed_step"])
        with_changes = f" with {', '.join(summary['changes'])}" if summary["changes"] else ""
        shown.print(f"resumed {where}{with_changes}", highlight=False)
    if json_out:
        write_json(json_out, summary)


def _tokenizer_shown(spec: dict) -> str:
    return spec["name"] + (" lowercase" if spec["lowercase"] else "") + (" (auto)" if spec["auto"] else "")
