"""`xlfast train`: learn cross-lingual embeddings from parallel corpora."""
from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from xlfast.cli.common import ThreadsOption, Tokenize, apply_threads, console, err_console, table, write_json
from xlfast.errors import XlfastError


# Sentences of one language per LM batch. The costs paid once per step whatever its size (table dropout
# over the whole vocabulary, Adam over the output layers) would dominate batches of 16 short sentences.
MONO_BATCH = 64


class Subword(str, Enum):
    none = "none"
    ave = "ave"
    cnn = "cnn"


class Preset(str, Enum):
    low = "low"
    medium = "medium"
    high = "high"


def _looks_parallel(path: Path) -> bool:
    """True when the first non-empty line carries a TAB or ' ||| ' (a one-file parallel corpus)."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.strip():
                    return "\t" in line or "|||" in line
    except OSError:
        return True  # let the reader report the missing file with its own message
    return True


def _langs_from_name(path: str) -> tuple[str, str] | None:
    """`corpus.grk-it.tsv` or `nru_en.txt` → (grk, it)."""
    m = re.search(r"(?:^|[._/])([A-Za-z]{2,3})[-_]([A-Za-z]{2,3})(?:\.[^./]+)?$", Path(path).name)
    return (m.group(1), m.group(2)) if m else None


def parse_corpora(args: list[str], langs: list[str]):
    """CORPUS arguments → CorpusSpec list.

    One file per corpus (TSV or `src ||| tgt`), or two line-aligned files written `a.gr+a.it`; plain
    `xlfast train a.gr a.it` is read as one two-file corpus when neither file is a one-file parallel corpus.
    Languages come from --langs (one per corpus, in order), else from the two files' suffixes, else from a
    file name like `corpus.grk-it.tsv`.
    """
    from xlfast.train import CorpusSpec

    items: list[tuple[str, str | None]] = []
    if len(args) == 2 and "+" not in args[0] and "+" not in args[1] and not any(
        _looks_parallel(Path(a)) for a in args
    ):
        items = [(args[0], args[1])]
    else:
        for a in args:
            if "+" in a and not Path(a).exists():
                src, tgt = a.split("+", 1)
                items.append((src, tgt))
            else:
                items.append((a, None))
    if langs and len(langs) != len(items):
        raise XlfastError(f"--langs was given {len(langs)} time(s) for {len(items)} corpora: give one 'src,tgt' per corpus")
    specs = []
    for k, (src, tgt) in enumerate(items):
        if langs:
            parts = [p.strip() for p in re.split(r"[,-]", langs[k]) if p.strip()]
            if len(parts) != 2:
                raise XlfastError(f"--langs '{langs[k]}': expected two language names like grk,it")
            pair = (parts[0], parts[1])
        elif tgt is not None:
            a, b = Path(src).suffix.lstrip("."), Path(tgt).suffix.lstrip(".")
            if not a or not b or a == b:
                raise XlfastError(f"cannot tell the languages of {src} and {tgt} from their suffixes: give --langs src,tgt")
            pair = (a, b)
        else:
            pair = _langs_from_name(src)
            if pair is None:
                raise XlfastError(f"cannot tell the languages of {src}: give --langs src,tgt (or name it like corpus.xx-yy.tsv)")
        if pair[0] == pair[1]:
            raise XlfastError(f"{src}: both sides are named '{pair[0]}'; a corpus pairs two languages")
        specs.append(CorpusSpec(src, tgt, pair))
    return specs


def parse_mono(args: list[str], langs: list[str]):
    """--mono FILE... → MonoSpec list; languages from --langs ('a,b' in file order, or once per file)
    or else from each file's suffix (train.shp → shp)."""
    from xlfast.train import MonoSpec

    names = [p.strip() for item in langs for p in item.split(",") if p.strip()]
    if names and len(names) != len(args):
        raise XlfastError(f"--langs names {len(names)} language(s) for {len(args)} monolingual file(s): give one per file")
    specs = []
    for k, path in enumerate(args):
        lang = names[k] if names else Path(path).suffix.lstrip(".")
        if not lang:
            raise XlfastError(f"cannot tell the language of {path} from its suffix: give --langs a,b (one per file)")
        specs.append(MonoSpec(path, lang))
    return specs


def train(
    corpora: Annotated[list[str], typer.Argument(help="Parallel corpora: FILE (TSV or 'src ||| tgt'), or SRC+TGT line-aligned files. With --mono: one monolingual file per language.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created).")],
    mono: Annotated[bool, typer.Option("--mono", help="The files are monolingual (one sentence a line, no alignment between them): train the multilingual LM of Wada & Iwata.")] = False,
    langs: Annotated[Optional[list[str]], typer.Option("--langs", help="Languages of a corpus as 'src,tgt'; once per corpus, in order (with --mono: one per file, 'a,b'). Default: file suffixes.")] = None,
    subword: Annotated[Subword, typer.Option(help="Subword-aware embeddings: none (words), ave (mean of pieces), cnn.")] = Subword.ave,
    preset: Annotated[Preset, typer.Option(help="Sizes: low (500d, 1 enc layer, batch 16), medium, high.")] = Preset.low,
    dim: Annotated[Optional[int], typer.Option(help="Embedding/LSTM size (overrides the preset).")] = None,
    enc_layers: Annotated[Optional[int], typer.Option(help="Encoder layers (overrides the preset).")] = None,
    dec_layers: Annotated[Optional[int], typer.Option(help="Decoder layers (overrides the preset).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sentence pairs per batch (overrides the preset; --mono default 64 sentences).")] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs.")] = 60,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs in which the selection score (pseudo-dictionary P@1; --mono: mutual-NN CSLS) did not rise.")] = 10,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 3e-3,
    dropout: Annotated[float, typer.Option(help="Dropout on embeddings, pieces and the attention output.")] = 0.5,
    min_count: Annotated[int, typer.Option(help="Keep words seen at least this often.")] = 1,
    spm_vocab: Annotated[int, typer.Option(help="SentencePiece pieces per language (shrunk for tiny corpora).")] = 1000,
    select_words: Annotated[int, typer.Option(help="--mono: most frequent words per language scored by the selection criterion.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (runs are reproducible).")] = 1,
    threads: ThreadsOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    bf16: Annotated[Optional[bool], typer.Option("--bf16/--no-bf16", help="bfloat16 autocast. Default: on where the hardware has bf16 arithmetic.", show_default=False)] = None,
    backend: Annotated[Optional[str], typer.Option(help="Subword-lookup kernel backend (default: fastest available).")] = None,
    softmax: Annotated[Literal["full", "sampled"], typer.Option(help="Training loss over the whole vocabulary (full), or over the batch's target words plus ~4k words drawn by unigram^0.75 with the log-Q correction (sampled: fewer FLOPs; evaluation stays full).")] = "full",
    tokenize: Annotated[Tokenize, typer.Option(help="default: Unicode-aware, splits punctuation; none: text is pre-tokenised.")] = Tokenize.default,
    lowercase: Annotated[bool, typer.Option("--lowercase/--keep-case", help="Lowercase before tokenising.")] = False,
    skip_bad_lines: Annotated[bool, typer.Option(help="Skip (and count) malformed lines instead of stopping.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the summary as JSON ('-' for stdout).")] = None,
) -> None:
    """Train the cross-lingual encoder-decoder on one or more parallel corpora (Wada et al. 2021), or with
    --mono the multilingual language model on monolingual corpora only (Wada & Iwata)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from xlfast.tokenize import TokenizerSpec
    from xlfast.train import TrainConfig, Trainer

    apply_threads(threads)

    specs, mono_specs = ([], parse_mono(corpora, langs or [])) if mono else (parse_corpora(corpora, langs or []), [])
    if mono and batch_size is None:
        batch_size = MONO_BATCH
    cfg = TrainConfig(
        corpora=specs, mono=mono_specs, out=str(out), preset=preset.value, dim=dim, enc_layers=enc_layers, dec_layers=dec_layers,
        batch_size=batch_size, subword=subword.value, dropout=dropout, epochs=epochs, patience=patience, lr=lr,
        min_count=min_count, spm_vocab=spm_vocab, seed=seed, select_words=select_words, threads=threads, device=device,
        tokenizer=TokenizerSpec(tokenize.value, lowercase), skip_bad_lines=skip_bad_lines, bf16=bf16, backend=backend,
        softmax=softmax,
    )
    key, label = ("mutual_csls", "mutual CSLS") if mono else ("dict_p1", "dict P@1")
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.2f}"), TextColumn("{task.fields[tok_s]:,.0f} tok/s"),
        TextColumn(f"{label} {{task.fields[p1]}}"), TimeElapsedColumn(), console=err_console, transient=False,
    )
    state = {"task": None, "p1": "–"}

    def on_event(event: str, info: dict) -> None:
        # One bar, reset every epoch; a line per finished epoch stays above it.
        if event == "step":
            if state["task"] is None:
                state["task"] = progress.add_task("train", total=info["steps"], epoch=info["epoch"], loss=0.0, tok_s=0.0, p1=state["p1"])
            progress.update(state["task"], completed=info["step"], total=info["steps"], epoch=info["epoch"],
                            loss=info["loss"], tok_s=info["tok_s"], p1=state["p1"])
        elif event == "epoch":
            p1 = info[key]
            state["p1"] = "–" if p1 is None else f"{p1:.3f}"
            pairs = f" ({info['mutual_pairs']} pairs)" if "mutual_pairs" in info else ""
            progress.console.print(
                f"epoch {info['epoch']:>3}  loss {info['loss']:.2f}  {label} {state['p1']}{pairs}  "
                f"{info['seconds']:.1f}s  (best epoch {info['best_epoch']})", highlight=False,
            )
            if state["task"] is not None:
                progress.remove_task(state["task"])
                state["task"] = None

    with progress:
        trainer = Trainer(cfg, resume=resume, log=lambda m: progress.console.print(m), progress=on_event)
        summary = trainer.fit()
    summary["run_dir"] = str(out)
    console.print(
        table(
            f"xlfast train → {out}",
            ["epochs", "selected epoch", label, "stopped by", "seconds"],
            [[summary["epochs"], summary["best_epoch"], summary[f"best_{key}"], summary["stop"], summary["seconds"]]],
        )
    )
    if json_out:
        write_json(json_out, summary)
