"""`xlfast train`: settings, the training loop of both models, model selection, checkpoints and resume.

Two kinds of run share everything here but what their `Task` supplies:
- parallel corpora → CrossLingualModel (Wada et al. 2021), selected by BLI P@1 on the Dice
  pseudo-dictionary;
- monolingual corpora (`--mono`) → MultilingualLM (Wada & Iwata 2018), batches alternating between
  languages, selected by the mean CSLS of the mutual nearest neighbours among frequent words.

The corpora, vocabularies and subword tables are `xlfast.corpora`'s; the files of a run directory are
`xlfast.rundir`'s. `Trainer.new(cfg)` starts a run, `Trainer.resume(run_dir, changes)` continues one.
"""
from __future__ import annotations

import contextlib
import math
import random
import re
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch

from xlfast import corpus_store, distributed, threads
from xlfast.allocator import keep_freed_memory
from xlfast.corpora import (CorpusSpec, MonoSpec, PairData, Prepared, check_specs, mono_datasets, mono_records,
                            pair_datasets, parallel_records, store_key, subwords, tokenisedness, train_segmenters,
                            vocabularies)
from xlfast.corpus_store import Store
from xlfast.errors import InputError, XlfastError
from xlfast.io import count_lines
from xlfast.kernels.dispatch import bf16_native, gpu
from xlfast.model import BOS, EOS, PRESETS, SPECIALS, UNK, ModelConfig, model_class
from xlfast.rundir import CHECKPOINT, CONFIG, MODEL, CheckpointWriter, RunDir
from xlfast.tokenize import TokenizerSpec

# Word embeddings only, SWave, SWcnn (Wada et al. 2021, §3.1); auto: SWcnn for small parallel corpora.
SUBWORD_MODES = ("auto", "none", "ave", "cnn")
# The training loss over the whole vocabulary, or over sampled words; auto: sampled for large corpora.
SOFTMAX_MODES = ("auto", "full", "sampled")
# Parallel corpora of at least LARGE_CORPUS sentence pairs train at batch LARGE_BATCH with the sampled softmax
# unless told otherwise. Measured on Shipibo-Spanish (14.5k pairs), BLI P@1 on its dev dictionary after epochs
# 1-4, two seeds each (on a GPU, bf16): batch 64 sampled 10.9 / 24.1 / 33.2 / 39.1 and 10.0 / 25.5 / 36.4 / 41.4,
# batch 16 full 10.5 / 22.7 / 31.4 / 36.8 and 10.0 / 20.5 / 30.0 / 35.5, at a third of the CPU time an epoch
# (323-339 s against 954 s). Small corpora keep batch 16, the low-resource setting of Wada et al. (2021):
# at 64 a 330-pair corpus gets six updates an epoch.
LARGE_CORPUS = 4000
LARGE_BATCH = 64
# Epochs without a strict rise of the selection score before a run stops. Small corpora: measured on
# grk-it (SWave and SWcnn, 3 seeds), the selected 1−AER was no better with 15 than with 10, while 1−AER
# kept rising for about 10 epochs after the pseudo-dictionary P@1 flattened; 10 keeps the default run
# within two minutes on a 2-core CPU. A large corpus's epoch holds 16x the sentences of grk-it's (85
# batches of 64 on ne-en's 5,394 pairs against 21 of 16) and costs 1-2 minutes on that CPU: on ne-en P@1
# rose 0.03 / 0.11 / 0.40 / 0.72 / 0.82 over epochs 1-5, then moved within one standard error (0.82 /
# 0.83 / 0.81 / 0.82 / 0.83 over epochs 6-10). Every new maximum, however small, restarts the count, so
# with that log, patience 3 would run to epoch 13 at least and 10 to epoch 20; 2 stops at epoch 9.
PATIENCE = 10
LARGE_PATIENCE = 2
# Parallel corpora of fewer than SMALL_CORPUS sentence pairs train SWcnn with patience SMALL_PATIENCE unless
# told otherwise. Measured 1−AER (2-core CPU, the default command against `--subword cnn [--patience 6]`):
# grk-it (330 pairs) SWave 0.9379 over six runs against SWcnn 0.9402 over nine at patience 10 and 0.9404
# over three at patience 6 (seeds 1-3: 87-113 s wall against 109-156 s at patience 10: SWcnn keeps
# creeping up by a word of the pseudo-dictionary, which restarts the count); ro-en (248) 0.6126 against
# 0.6244 (three seeds); en-fr (447) 0.8123 against 0.8131 (three seeds). Larger corpora keep SWave, whose
# step costs less (untested with SWcnn between 1,000 and 4,000 pairs).
SMALL_CORPUS = 1000
SMALL_PATIENCE = 6
# Sentences of one language per LM batch. The costs paid once per step whatever its size (table dropout
# over the whole vocabulary, Adam over the output layers) would dominate batches of 16 short sentences.
MONO_BATCH = 64
SIZES = ("dim", "enc_layers", "dec_layers", "batch_size")  # None: the preset's (MONO_BATCH for a --mono batch)


@dataclass
class TrainConfig:
    corpora: list[CorpusSpec]
    out: str
    preset: str = "low"
    dim: int | None = None
    enc_layers: int | None = None
    dec_layers: int | None = None
    batch_size: int | None = None
    subword: str = "auto"  # auto: cnn for a parallel corpus of fewer than SMALL_CORPUS pairs, else ave
    dropout: float = 0.5
    epochs: int = 60
    patience: int | None = None  # epochs' worth of evaluations (patience × evaluations per epoch); None: PATIENCE, LARGE_PATIENCE for large corpora
    eval_every: int | None = None  # steps between evaluations in an epoch (None: automatic, eval_interval; 0: once an epoch)
    lr: float = 3e-3  # one optimiser step per batch (the authors take four): measured to learn ~2.5x faster per epoch than 1e-3
    # Both off by default: on grk-it (default command, seeds 1-3, 2 threads, a CPU with native bf16) the mean
    # 1−AER was 0.9386 without either, 0.9367 with lr_decay 0.5, 0.9393 with average 1 and 0.9379 with
    # average 3, all within the ±0.5-point spread of seeds.
    lr_decay: float = 1.0  # the step size is multiplied by this each time a third of the patience passes without a rise (1: never)
    average: float = 0.0  # evaluate and keep a moving average of the weights over about this many epochs (0: the weights as trained)
    clip: float = 5.0
    min_count: int = 1
    spm_vocab: int = 1000
    seed: int = 1
    threads: int | None = None
    device: str = "auto"
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    skip_bad_lines: bool = False
    dice_min_count: int = 3
    dice_threshold: float = 0.8
    bf16: bool | None = None  # None: on where the hardware computes bf16 natively (measured 2x per step on shp-es, same AER)
    backend: str | None = None  # subword-embedding kernel backend (None = automatic)
    mono: list[MonoSpec] = field(default_factory=list)  # monolingual corpora: a multilingual LM run
    select_words: int = 5000  # mono: frequent words per language scored by the selection criterion
    softmax: str = "auto"  # full | sampled (the batch's targets plus sampled words) | auto: by corpus size
    pretrained: dict[str, str] = field(default_factory=dict)  # language → word2vec text file (xlfast.pretrained)
    pretrained_max: int = 200_000  # the first this many words of each pre-trained file join the vocabulary

    @property
    def kind(self) -> str:
        return "mono" if self.mono else "parallel"

    def resolved(self) -> "TrainConfig":
        """A copy with the sizes left open (None) taken from the preset (a multilingual LM's batch from
        MONO_BATCH; a large parallel corpus's from LARGE_BATCH), `--softmax auto` and `--tokenize auto`
        decided from the corpora. A run saves its resolved settings, so it resumes with them whatever the
        defaults become."""
        return self.resolve()[0]

    def resolve(self) -> tuple["TrainConfig", str | None]:
        """`resolved()`, and a line saying what the corpus size chose (None when it chose nothing)."""
        preset = dict(PRESETS[self.preset], **({"batch_size": MONO_BATCH} if self.mono else {}))
        pairs = None
        if not self.mono and (self.batch_size is None or self.softmax == "auto" or self.patience is None
                              or self.subword == "auto"):
            pairs = sum(count_lines(c.path) or 0 for c in self.corpora)
        large = pairs is not None and pairs >= LARGE_CORPUS
        small = pairs is not None and pairs < SMALL_CORPUS
        chosen = []
        subword = self.subword
        if subword == "auto":
            subword = "cnn" if small else "ave"
            if small:
                chosen.append("SWcnn")
        if large and self.batch_size is None and preset["batch_size"] < LARGE_BATCH:
            preset["batch_size"] = LARGE_BATCH
            chosen.append(f"batch {LARGE_BATCH}")
        sizes = {k: preset[k] if getattr(self, k) is None else getattr(self, k) for k in SIZES}
        softmax = self.softmax
        if softmax == "auto":
            softmax = "sampled" if large else "full"
            if large:
                chosen.append("the sampled softmax")
        patience = self.patience
        if patience is None:
            patience = LARGE_PATIENCE if large else SMALL_PATIENCE if small and subword == "cnn" else PATIENCE
            if patience != PATIENCE:
                chosen.append(f"patience {patience}")
        tokenizer = self.tokenizer
        if tokenizer.name == "auto":
            tokenizer = tokenizer.resolved(tokenisedness(self.mono or self.corpora, self.skip_bad_lines))
        note = None
        if chosen:
            listed = chosen[0] if len(chosen) == 1 else f"{', '.join(chosen[:-1])} and {chosen[-1]}"
            if large:
                note = (f"{pairs:,} sentence pairs (at least {LARGE_CORPUS:,}): {listed}, chosen for the corpus "
                        f"size (--batch-size 16 --softmax full --patience {PATIENCE}: the small-corpus setting)")
            else:
                note = (f"{pairs:,} sentence pairs (fewer than {SMALL_CORPUS:,}): {listed}, chosen for the corpus "
                        f"size (--subword ave --patience {PATIENCE}: the setting of larger corpora)")
        return (replace(self, tokenizer=tokenizer, softmax=softmax, patience=patience, subword=subword, **sizes),
                note)

    def validate(self) -> None:
        """Every setting in its range and every corpus present: raised before any work is done."""
        for name, rule in SETTING_RULES.items():
            value = getattr(self, name)
            problem = None if value is None else rule(value, self)
            if problem:
                raise SettingError(name, value, problem)
        check_specs(self.corpora, self.mono)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokenizer"] = self.tokenizer.to_dict()
        d["corpora"] = [asdict(c) for c in self.corpora]
        d["mono"] = [asdict(m) for m in self.mono]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["tokenizer"] = TokenizerSpec.from_dict(d["tokenizer"])
        d["corpora"] = [CorpusSpec(c["path"], c["tgt_path"], tuple(c["langs"]), c.get("fmt", "auto")) for c in d["corpora"]]
        d["mono"] = [MonoSpec(m["path"], m["lang"]) for m in d.get("mono", [])]
        return cls(**d)


# ---------------------------------------------------------------------------------------------------
# Settings: ranges, and what a resumed run may change


class SettingError(XlfastError):
    """A setting outside its range: a usage error (the command line exits 2 naming the option)."""

    def __init__(self, name: str, value, problem: str):
        self.name, self.value, self.problem = name, value, problem
        super().__init__(f"{flag(name)} {value}: {problem}")


def flag(name: str) -> str:
    """The command-line option of a TrainConfig setting."""
    return {"corpora": "the corpora", "mono": "the corpora", "tokenizer": "--tokenize/--lowercase"}.get(
        name, "--" + name.replace("_", "-"))


def _at_least(low):
    return lambda value, cfg: None if value >= low else f"must be at least {low}"


def _positive(value, cfg):
    return None if value > 0 else "must be greater than 0"


def _one_of(choices):
    return lambda value, cfg: None if value in choices else f"must be one of: {', '.join(choices)}"


def _dim(value, cfg):
    if value < 2:
        return "must be at least 2"
    if cfg.kind == "parallel" and value % 2:
        return "must be even: each direction of the bi-LSTM encoder has dim/2 units"
    return None


def _device(value, cfg):
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) else "must be auto, cpu, cuda or cuda:N"


def class_counts(prep: Prepared) -> dict[str, torch.Tensor]:
    """How often each output class (word id − 1: <pad> is none) is a decoder target, per language: every
    word of every sentence, and <bos>/<eos> once per sentence. Counted on the memory-mapped word ids."""
    counts = {lang: np.zeros(prep.classes[lang]) for lang in prep.langs}
    for data in prep.datasets:
        sides = ((data.langs[0], data.src), (data.langs[1], data.tgt)) if isinstance(data, PairData) else \
            ((data.lang, data.sents),)
        for lang, arrays in sides:
            counts[lang] += np.bincount(arrays.ids, minlength=prep.classes[lang])
            counts[lang][[BOS, EOS]] += len(arrays)
    return {lang: torch.from_numpy(c[1:]) for lang, c in counts.items()}


def _backend(value, cfg):
    from xlfast.kernels.subword_embed import registry

    return _one_of(("auto", *registry.names()))(value, cfg)


def _pretrained(value, cfg):
    from xlfast import pretrained

    langs = {lang for c in cfg.corpora for lang in c.langs} | {m.lang for m in cfg.mono}
    dim = cfg.dim or PRESETS[cfg.preset]["dim"]
    for lang, path in value.items():
        if lang not in langs:
            return f"{lang}={path}: '{lang}' is not a language of the corpora ({', '.join(sorted(langs))})"
        why = pretrained.problem(path, dim)
        if why:
            return f"{lang}={path}: {why}"
    return None


SETTING_RULES: dict[str, Callable[[Any, TrainConfig], str | None]] = {
    "preset": _one_of(tuple(PRESETS)),
    "subword": _one_of(SUBWORD_MODES),
    "softmax": _one_of(SOFTMAX_MODES),
    "dim": _dim,
    "enc_layers": _at_least(1),
    "dec_layers": _at_least(1),
    "batch_size": _at_least(1),
    "epochs": _at_least(1),
    "patience": _at_least(1),
    "eval_every": _at_least(0),
    "lr": _positive,
    "lr_decay": lambda value, cfg: None if 0 < value <= 1 else "must be above 0 and at most 1",
    "average": lambda value, cfg: None if value >= 0 else "must be at least 0",
    "clip": _positive,
    "dropout": lambda value, cfg: None if 0 <= value < 1 else "must be at least 0 and below 1",
    "min_count": _at_least(1),
    "spm_vocab": _at_least(1),
    "select_words": _at_least(1),
    "threads": _at_least(1),
    "dice_min_count": _at_least(1),
    "dice_threshold": lambda value, cfg: None if 0 < value <= 1 else "must be above 0 and at most 1",
    "device": _device,
    "backend": _backend,
    "pretrained": _pretrained,
    "pretrained_max": _at_least(1),
}

# What a resumed run may change: how long and where it runs, how often it is evaluated (an evaluation
# changes no parameter and draws no random number), and the optimiser's step size and clipping. Every
# other setting shapes the data, the vocabularies or the model that the checkpoint holds.
RESUMABLE = ("epochs", "patience", "eval_every", "lr", "lr_decay", "clip", "threads", "device", "bf16", "backend")


def apply_changes(base: TrainConfig, changes: Mapping[str, Any]) -> TrainConfig:
    """`base` with `changes` (TrainConfig settings; "tokenizer" may be a dict of some of its fields). A
    changed preset sets the sizes that `changes` leaves open."""
    unknown = set(changes) - ({f.name for f in fields(TrainConfig)} - {"out"})
    if unknown:
        raise TypeError(f"not a setting a run can change: {', '.join(sorted(unknown))}")
    changes = dict(changes)
    if isinstance(changes.get("tokenizer"), Mapping):
        changes["tokenizer"] = TokenizerSpec.from_dict({**base.tokenizer.to_dict(), **changes["tokenizer"]})
    if "preset" in changes:
        changes = {**{k: None for k in SIZES}, **changes}
    return replace(base, **changes)


def _shown(name: str, value) -> str:
    if name in ("corpora", "mono"):
        return ", ".join(spec.describe() for spec in value)
    if name == "tokenizer":
        return value.name + (" lowercase" if value.lowercase else "")
    return "default" if value is None else str(value)


def _same(name: str, a, b) -> bool:
    if name in ("corpora", "mono"):
        return len(a) == len(b) and all(x.same_data(y) for x, y in zip(a, b))
    return a == b


def reconcile(rundir: RunDir, stored: TrainConfig, changes: Mapping[str, Any]) -> tuple[TrainConfig, list[str]]:
    """The settings of a resumed run: `stored` with `changes`. Changes of RESUMABLE settings are taken
    and described ("--epochs 40 (was 30)"); any other change is refused in one line naming them all."""
    if changes.get("corpora") and stored.kind == "mono":
        raise XlfastError(f"{rundir} is a mono run: resume it with --mono")
    if changes.get("mono") and stored.kind == "parallel":
        raise XlfastError(f"{rundir} is a parallel run: resume it without --mono")
    new = apply_changes(stored, changes)
    new.validate()
    new, old = new.resolved(), stored.resolved()
    differ = [f.name for f in fields(TrainConfig)
              if f.name != "out" and not _same(f.name, getattr(old, f.name), getattr(new, f.name))]
    refused = [name for name in differ if name not in RESUMABLE]
    if refused:
        what = "; ".join(f"{flag(n)} {_shown(n, getattr(new, n))} (the run's: {_shown(n, getattr(old, n))})"
                         for n in refused)
        shape = "it shapes" if len(refused) == 1 else "they shape"
        raise XlfastError(f"{rundir}: cannot resume with {what}: {shape} the data or the model the checkpoint was "
                          "trained on (start a new run with another -o)")
    return new, [f"{flag(n)} {_shown(n, getattr(new, n))} (was {_shown(n, getattr(old, n))})" for n in differ]


# ---------------------------------------------------------------------------------------------------
# Batches


@dataclass
class EpochPlan:
    """The batches of an epoch, without a Python object per sentence: batch j is the sentences
    `orders[k][start[j] : start[j] + batch_size]` of dataset k = `dataset[j]`."""

    orders: list[np.ndarray]  # per dataset: its sentence indices sorted into buckets of similar length
    dataset: np.ndarray  # per batch: which dataset it is drawn from
    start: np.ndarray  # per batch: where it starts in its dataset's order
    batch_size: int

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, j: int) -> tuple[int, np.ndarray]:
        """(dataset index, sentence indices) of batch j (a view of the order)."""
        k, first = int(self.dataset[j]), int(self.start[j])
        return k, self.orders[k][first : first + self.batch_size]

    def __iter__(self):
        return (self[j] for j in range(len(self)))

    def take(self, positions: np.ndarray) -> "EpochPlan":
        """The plan of the batches at `positions` (e.g. one rank's shard), in that order."""
        return EpochPlan(self.orders, self.dataset[positions], self.start[positions], self.batch_size)


def _shuffle(items: np.ndarray, rng: random.Random) -> np.ndarray:
    """`items` (one-dimensional, contiguous) shuffled in place by `rng.shuffle` through a memoryview: the
    permutation `rng` gives a list of as many items (what plans drew before they were arrays, so a seed
    keeps its batches), without a Python object per item."""
    rng.shuffle(memoryview(items))
    return items


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: random.Random,
                     n_batches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batches of sentences with similar lengths (little padding), in random order: the sentence indices
    sorted into buckets, and where each batch starts in them (batch: `order[s : s + batch_size]`).

    Sorting on length plus a random jitter keeps padding low while batches still change every epoch.
    `n_batches` > natural count oversamples a small corpus (every corpus weighs the same per epoch).
    """
    n = len(lengths)
    need = n_batches * batch_size if n_batches else n
    rounds = -(-need // n)  # shuffled passes over the corpus (more than one oversamples it)
    order = np.arange(rounds * n, dtype=np.int64)
    order %= n
    for one_pass in order.reshape(rounds, n):
        _shuffle(one_pass, rng)
    order = order[:need]
    key = np.fromiter((rng.random() for _ in range(n)), dtype=np.float64, count=n)
    key *= 2.0
    key += lengths
    order = order[np.argsort(key[order], kind="stable")]  # stable: equal keys keep the shuffled order
    return order, _shuffle(np.arange(0, need, batch_size, dtype=np.int64), rng)


def epoch_plan(datasets: list, batch_size: int, rng: random.Random, alternate: bool = False) -> EpochPlan:
    """The batches of an epoch; smaller corpora are oversampled to the batch count of the largest.
    `alternate` interleaves the corpora a, b, a, b, … (the multilingual LM's schedule); otherwise the
    batches of all corpora are shuffled together."""
    most = max(math.ceil(len(d) / batch_size) for d in datasets)
    per = [bucketed_batches(d.lengths(), batch_size, rng, most if math.ceil(len(d) / batch_size) < most else None)
           for d in datasets]
    orders = [order for order, _ in per]
    if alternate:  # every corpus has `most` batches: batch j of each in turn
        start = np.stack([first for _, first in per], axis=1).ravel()
        return EpochPlan(orders, np.tile(np.arange(len(per)), most), start, batch_size)
    dataset = np.concatenate([np.full(len(first), k) for k, (_, first) in enumerate(per)])
    start = np.concatenate([first for _, first in per])
    mixed = _shuffle(np.arange(len(start)), rng)
    return EpochPlan(orders, dataset[mixed], start[mixed], batch_size)


# ---------------------------------------------------------------------------------------------------
# Model selection


@torch.no_grad()
def pseudo_dict_scores(model, pairs: list[PairData]) -> list[tuple[float, int]]:
    """(BLI P@1 with CSLS, K=10, number of query words) on each corpus pair's Dice pseudo-dictionary."""
    from xlfast.kernels.csls import topk

    scores = []
    tables: dict[str, torch.Tensor] = {}
    for p in pairs:
        if not p.dice:
            continue
        for lang in p.langs:
            if lang not in tables:
                tables[lang] = model.static_table(lang).float().cpu()
        src_ids = sorted({a for a, _ in p.dice})
        gold: dict[int, set[int]] = {}
        for a, b in p.dice:
            gold.setdefault(a, set()).add(b)
        # Candidates: the whole target vocabulary except the specials; r_S over every source word.
        n_sp = len(SPECIALS)
        tgt = tables[p.langs[1]][n_sp:]
        rows = [a - n_sp for a in src_ids]
        res = topk(tables[p.langs[0]][n_sp:], tgt, 1, metric="csls", knn=10, rows=rows)
        hits = [(int(j) + n_sp) in gold[a] for a, j in zip(src_ids, res.indices[:, 0].tolist())]
        scores.append((float(np.mean(hits)), len(hits)))
    return scores


def standard_error(scores: list[tuple[float, int]]) -> float:
    """Standard error of the mean of per-pair P@1 values, each a proportion over its n query words."""
    if not scores:
        return 0.0
    return math.sqrt(sum(p * (1 - p) / n for p, n in scores)) / len(scores)


@torch.no_grad()
def mutual_csls_score(model, langs: list[str], n_words: int, knn: int = 10) -> tuple[float, int]:
    """The unsupervised criterion of Wada & Iwata 2018: among the `n_words` most frequent words of two languages
    (vocabularies are sorted by frequency), the mean CSLS of the mutual nearest neighbours; averaged
    over every language pair. Also returns the number of mutual pairs found."""
    from xlfast.mapping import induce_dictionary

    n_sp = len(SPECIALS)
    tables = {lang: model.static_table(lang).float().cpu()[n_sp : n_sp + n_words].numpy() for lang in langs}
    scores, pairs = [], 0
    for a in range(len(langs)):
        for b in range(a + 1, len(langs)):
            induced = induce_dictionary(tables[langs[a]], tables[langs[b]], max_vocab=n_words, knn=knn)
            scores.append(induced.mutual_csls)
            pairs += len(induced.src)
    return float(np.mean(scores)), pairs


# ---------------------------------------------------------------------------------------------------
# What differs between the two kinds of run


@dataclass
class Score:
    """An epoch's model-selection score."""

    value: float | None  # None: nothing to score on (no pseudo-dictionary): the last epoch is kept
    tolerance: float = 0.0  # scores this close to the best are noise (one standard error)
    extra: dict = field(default_factory=dict)  # more fields for the epoch's log line


class Task(ABC):
    """A kind of run: its data, the batches of an epoch and the score that selects the model."""

    kind: str
    criterion: str  # the selection score's field in log.jsonl and the summary
    label: str  # the selection score as a person reads it

    def prepare(self, cfg: TrainConfig, saved: RunDir | None, log: Callable[[str], None]) -> Prepared:
        """The corpora as word ids, with vocabularies and subword tables. `saved`: a run directory whose
        vocabularies and SentencePiece models are reused, so a resumed run sees identical ids, and whose
        corpus store is reused when it was built from the same files. Every check of the data comes
        before SentencePiece is trained (the slow part)."""
        store_dir = RunDir(cfg.out).corpus_dir
        specs = cfg.mono or cfg.corpora
        key = store_key(specs, cfg.tokenizer, cfg.skip_bad_lines, cfg.min_count)
        store = Store.reusable(store_dir, key) if saved else None
        classes: dict[str, list[str]] | None = None
        if saved:
            mcfg = saved.model_config()
            vocabs = {lang: saved.read_vocab(lang) for lang in mcfg.langs}
            classes = {lang: vocabs[lang][: mcfg.vocab_sizes[lang]] for lang in mcfg.langs}
        counts = None
        if store is None:
            groups, records = self.records(cfg)
            t0 = time.perf_counter()
            store, counts, built = corpus_store.build(
                store_dir, groups, records,
                (lambda _: classes) if classes else (lambda found: vocabularies(found, cfg.min_count)), key, UNK)
            log(f"corpus: {store.tokens:,} tokens as word ids in {time.perf_counter() - t0:.1f} s "
                f"({store.nbytes() / 2**20:,.1f} MiB memory-mapped)")
            classes = classes or built
        datasets = self.datasets(cfg, store, classes, log)
        tables = None
        if cfg.subword != "none":
            segmenters = ({lang: saved.segmenter(lang) for lang in classes} if saved
                          else train_segmenters(counts, cfg.spm_vocab))
            tables = subwords(classes, segmenters)
        prep = Prepared(list(classes), dict(classes), datasets, tables, store.dropped,
                        classes={lang: len(words) for lang, words in classes.items()})
        if saved:
            prep.vocabs, prep.pretrained, prep.pretrained_rows = vocabs, mcfg.pretrained, saved.read_pretrained(mcfg)
        else:
            self._add_pretrained(cfg, prep, log)
        return prep

    @staticmethod
    def _add_pretrained(cfg: TrainConfig, prep: Prepared, log: Callable[[str], None]) -> None:
        """The pre-trained vectors of a new run: their words join the vocabularies (Wada et al. 2021, §3.7)."""
        from xlfast import pretrained

        for lang, path in cfg.pretrained.items():
            prep.vocabs[lang], rows = pretrained.load(path, cfg.pretrained_max, prep.vocabs[lang], SPECIALS)
            added = len(prep.vocabs[lang]) - prep.classes[lang]
            prep.pretrained_rows[lang] = rows
            prep.pretrained[lang] = {"rows": len(rows.ids), "added": added}
            log(f"{lang}: {len(rows.ids) - added:,} corpus words take pre-trained vectors from {path}; "
                f"{added:,} words only the vectors know join the vocabulary")

    @abstractmethod
    def records(self, cfg: TrainConfig):
        """The corpus store's groups of sides and the stream of tokenised records (xlfast.corpus_store.build)."""

    @abstractmethod
    def datasets(self, cfg: TrainConfig, store: Store, vocabs: dict[str, list[str]], log) -> list:
        """What batches are drawn from, as word ids."""

    @abstractmethod
    def plan(self, datasets: list, batch_size: int, rng: random.Random) -> EpochPlan:
        """The batches of an epoch."""

    @abstractmethod
    def score(self, model, prep: Prepared, cfg: TrainConfig) -> Score:
        """The selection score of the model after an epoch."""


class ParallelTask(Task):
    """The encoder-decoder on parallel corpora (Wada et al. 2021)."""

    kind, criterion, label = "parallel", "dict_p1", "dict P@1"

    def records(self, cfg):
        return parallel_records(cfg.corpora, cfg.tokenizer, cfg.skip_bad_lines)

    def datasets(self, cfg, store, vocabs, log):
        return pair_datasets(cfg.corpora, store, cfg.dice_min_count, cfg.dice_threshold, log)

    def plan(self, datasets, batch_size, rng):
        return epoch_plan(datasets, batch_size, rng)

    def score(self, model, prep, cfg):
        per_pair = pseudo_dict_scores(model, prep.datasets)
        if not per_pair:
            return Score(None)
        return Score(float(np.mean([p for p, _ in per_pair])), standard_error(per_pair))


class MonoTask(Task):
    """The multilingual LM on monolingual corpora (Wada & Iwata 2018): batches alternate between languages."""

    kind, criterion, label = "mono", "mutual_csls", "mutual CSLS"

    def records(self, cfg):
        return mono_records(cfg.mono, cfg.tokenizer, cfg.skip_bad_lines)

    def datasets(self, cfg, store, vocabs, log):
        return mono_datasets(store, vocabs, log)

    def plan(self, datasets, batch_size, rng):
        return epoch_plan(datasets, batch_size, rng, alternate=True)

    def score(self, model, prep, cfg):
        value, pairs = mutual_csls_score(model, prep.langs, cfg.select_words)
        return Score(value, 0.0, {"mutual_pairs": pairs})


TASKS: dict[str, Task] = {task.kind: task for task in (ParallelTask(), MonoTask())}


# ---------------------------------------------------------------------------------------------------
# The training loop


# The automatic --eval-every. On shp-es (910 steps an epoch at batch 16) an evaluation, the
# pseudo-dictionary's CSLS over the whole target vocabulary plus queuing a checkpoint for the background
# writer, took as long as 2-3 training steps (3.4 s and 0.06 s against 1.4 s a step, 2-core CPU beside other
# work). Every EVAL_STEPS steps it costs under 1% of the training time, writes a checkpoint (263 MB there)
# every few minutes rather than every few seconds, and still scores a default run every ~2.5 minutes
# (~0.5 s a step alone), so its model is selectable long before the first epoch ends. An epoch of fewer
# than 2 × EVAL_STEPS steps is evaluated once, at its end, as before. At most MAX_EVALS an epoch: patience
# counts evaluations, and the more noisy scores the best is the maximum of, the more their noise alone
# raises it. Counted in steps, not seconds, so that a run evaluates at the same points on any machine and
# resumes exactly.
EVAL_STEPS = 300
MAX_EVALS = 8


def eval_interval(epoch_steps: int, eval_every: int | None) -> int:
    """Steps between the evaluations of an epoch of `epoch_steps` steps (each epoch also ends with one).
    `eval_every`: --eval-every; 0 or at least `epoch_steps`: once an epoch; None: automatic, the epoch in
    clamp(epoch_steps // EVAL_STEPS, 1, MAX_EVALS) equal parts."""
    if eval_every is None:
        eval_every = math.ceil(epoch_steps / min(max(epoch_steps // EVAL_STEPS, 1), MAX_EVALS))
    return epoch_steps if eval_every == 0 else min(eval_every, epoch_steps)


def clipped_step(opt: torch.optim.Optimizer, max_norm: float) -> None:
    """`clip_grad_norm_(params, max_norm)` then `opt.step()`. With a fused Adam on the CPU, the gradients'
    norm comes from one BLAS dot per tensor (half the time of `linalg.vector_norm` on a 2000 × 500
    decoder weight here) and the scaling happens inside the fused kernel (its `grad_scale`, which divides
    every gradient as it reads it, the interface torch's GradScaler uses), not in a pass of its own over
    every gradient: on grk-it the norm is ~70 against a clip of 5, so every step scales (the two passes
    took ~6% of a step)."""
    params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
    fused = all(group.get("fused") for group in opt.param_groups) and isinstance(opt, torch.optim.Adam)
    fast = fused and params and all(p.device.type == "cpu" and not p.grad.is_sparse for p in params)
    norm = math.sqrt(sum(float(torch.dot(g, g)) for g in (p.grad.reshape(-1) for p in params))) if fast else math.nan
    if not math.isfinite(norm):  # torch's own path: other optimisers and devices, and non-finite gradients
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        return
    scale = norm / max_norm + 1e-6 / max_norm  # clip_grad_norm_'s coefficient max_norm / (norm + 1e-6), inverted
    if scale > 1.0:
        opt.grad_scale = torch.tensor(scale, dtype=torch.float32)
    try:
        opt.step()
    finally:
        opt.__dict__.pop("grad_scale", None)


@dataclass
class Selection:
    """Which evaluation's model is kept, and when patience runs out (saved in checkpoint.pt).

    Patience counts evaluations without a strict rise of the best score, so a score that ties or
    oscillates cannot keep training going. The kept model is the latest evaluation whose score is within
    one standard error of the best (`tolerance`: the pseudo-dictionary P@1 is a proportion over a few
    hundred words on a small corpus, so differences of a word or two are noise). The authors' code keeps
    the later epoch on exact ties; widening the tie to one standard error follows what we measured on
    grk-it (three seeds): P@1 on its 133-pair pseudo-dictionary peaks by epoch 12-15 while 1−AER keeps
    rising for another 10 epochs (e.g. 0.936 → 0.944)."""

    best: float = -1.0  # the best score so far (patience watches it)
    kept_score: float = -1.0  # the score of the kept model (model.pt), within tolerance of the best
    best_epoch: int = 0  # the kept model's epoch
    best_step: int | None = 0  # and its step in that epoch (None: the epoch's end, in a checkpoint of before mid-epoch evaluations)
    since_improved: int = 0  # evaluations since the score last rose strictly: what patience counts
    lr_scale: float = 1.0  # the step size is --lr times this (--lr-decay on plateaus)

    def observe(self, epoch: int, step: int, score: Score, final: bool) -> bool:
        """Whether the model evaluated at `step` of `epoch` is kept. `final`: the run's last evaluation."""
        if score.value is None:
            self.since_improved += 1
            if final:
                self.best_epoch, self.best_step = epoch, step
            return final
        if score.value > self.best:
            self.best, self.since_improved = score.value, 0
        else:
            self.since_improved += 1
        keep = score.value >= self.best - score.tolerance
        if keep:
            self.kept_score, self.best_epoch, self.best_step = score.value, epoch, step
        return keep

    def exhausted(self, patience: int) -> bool:
        """Whether `patience` evaluations have passed without a strict rise."""
        return self.since_improved >= patience and self.best >= 0

    @classmethod
    def from_state(cls, state: dict) -> "Selection":
        return cls(state["best"], state.get("kept_score", state["best"]), state["best_epoch"],
                   state.get("best_step"), state.get("since_improved", state.get("since_best", 0)),
                   state.get("lr_scale", 1.0))

    def decay(self, patience: int, factor: float) -> bool:
        """Multiply the step size by `factor` each time another third of `patience` evaluations has passed
        without a rise (reduce-on-plateau); whether it changed now."""
        every = max(1, patience // 3)
        if factor >= 1 or self.since_improved == 0 or self.since_improved % every or self.exhausted(patience):
            return False
        self.lr_scale *= factor
        return True


class WeightAverage:
    """An exponential moving average of the parameters, updated after every optimiser step (Polyak &
    Juditsky 1992, "Acceleration of stochastic approximation by averaging"). With dropout 0.5 on a few
    hundred sentence pairs the weights as trained wander from step to step; their average is what is
    evaluated, kept (model.pt) and exported. The average spans about `horizon_steps` steps; early on it
    spans at most the steps taken so far (the warm-up of TensorFlow's ExponentialMovingAverage), so the
    random initial weights fade out within the first epoch."""

    def __init__(self, params: list[torch.Tensor], horizon_steps: float):
        self.params = params
        self.averaged = [p.detach().clone() for p in params]
        self.decay = 1.0 - 1.0 / max(horizon_steps, 1.0)
        self.updates = 0

    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.averaged, [p.detach() for p in self.params], 1.0 - decay)

    @contextlib.contextmanager
    def applied(self):
        """The averaged weights in the model for the duration (the trained ones restored after)."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.averaged)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, trained)

    def state(self) -> dict:
        return {"averaged": self.averaged, "updates": self.updates}

    def load(self, state: dict) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.averaged, [t.to(a.device) for t, a in zip(state["averaged"], self.averaged)])
        self.updates = int(state["updates"])


@dataclass
class EpochSoFar:
    """The part of the epoch in progress trained so far (saved in checkpoint.pt: a run resumes mid-epoch
    exactly), and its statistics for log.jsonl."""

    batches: int = 0  # batches trained by all ranks: the epoch's plan taken in order, `world` a step (distributed.shard)
    loss: float = 0.0  # summed over those batches
    tokens: int = 0
    seconds: float = 0.0  # training time, evaluations left out
    threads: list[int] = field(default_factory=list)  # thread counts the steps ran with (the governor lowers them while other work runs)

    def steps(self, world: int) -> int:
        """The optimiser steps of the epoch done, on `world` ranks."""
        return -(-self.batches // world)


def checkpoint_place(epoch: int, step: int | None) -> str:
    """Where a checkpoint stands in its run, as a person reads it: "after epoch 3" (`step` None: the epoch
    had finished), or "at epoch 3, step 300"."""
    return f"after epoch {epoch}" if step is None else f"at epoch {epoch}, step {step}"


def _quiet(message: str) -> None:
    """The log of every rank but 0."""


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device(gpu() or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise XlfastError("--device cuda was asked for, but torch sees no CUDA device here")
    return torch.device(device)


def _machine(cfg: TrainConfig) -> tuple[torch.device, distributed.Group]:
    """Join the torchrun group if this process was launched in one, apply the thread budget and pick the
    device (one GPU per rank); a kernel backend asked for that cannot run there fails now, before any work."""
    device = pick_device(cfg.device)
    group = distributed.join(device.type)
    n_threads = distributed.threads_per_rank(group, cfg.threads)
    if n_threads:
        threads.configure(n_threads)
    keep_freed_memory()  # a step's large tensors are reused from the heap, not faulted in afresh
    if device.type == "cuda" and device.index is None and group.parallel:
        device = torch.device("cuda", group.local_rank)
    if cfg.backend and cfg.backend != "auto":
        from xlfast.kernels.subword_embed import registry

        registry.choose(device.type, cfg.backend)
    return device, group


class Trainer:
    """One training run: `Trainer.new(cfg)` starts it, `Trainer.resume(run_dir, changes)` continues it,
    `fit()` trains to the end. `progress` receives (event, info) for the command line's display."""

    def __init__(self, cfg: TrainConfig, prep: Prepared, device: torch.device,
                 log: Callable[[str], None] = print, progress=None, group: distributed.Group = distributed.SINGLE):
        self.cfg = cfg
        self.task = TASKS[cfg.kind]
        self.rundir = RunDir(cfg.out)
        self.prep = prep
        self.device = device
        self.group = group
        self.bf16 = bf16_native(device.type) if cfg.bf16 is None else cfg.bf16
        self.log = log if group.main else _quiet
        self.progress = progress if group.main else None
        mcfg = ModelConfig(
            langs=prep.langs,
            vocab_sizes=prep.classes,
            num_pieces=len(prep.subwords.piece_table) if prep.subwords else 0,
            dim=cfg.dim,
            enc_layers=cfg.enc_layers,
            dec_layers=cfg.dec_layers,
            subword=cfg.subword,
            dropout=cfg.dropout,
            kind=cfg.kind,
            softmax=cfg.softmax,
            pretrained=prep.pretrained,
        )
        torch.manual_seed(cfg.seed)
        self.model = model_class(mcfg)(mcfg, prep.subwords.pieces_per_word if prep.subwords else None,
                                       prep.pretrained_rows).to(device)
        if cfg.softmax == "sampled":
            from xlfast.kernels.linear_ce import UnigramSampler

            self.model.sampler = UnigramSampler(class_counts(prep))
        self.module = self.model  # what computes the loss (DistributedDataParallel over the model: _join)
        # fused: one kernel for all parameters instead of ~10 elementwise passes each (Adam was ~20% of a step)
        try:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=True)
        except (RuntimeError, TypeError):  # older torch: no fused Adam on this device
            self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.epoch = 0  # the epoch in progress, or the last one finished
        self.so_far: EpochSoFar | None = None  # how far the epoch in progress has got; None: it is finished
        self.selection = Selection()
        self.resumed_after: int | None = None  # the checkpoint's epoch, for a resumed run
        self.resumed_step: int | None = None  # and its step in that epoch, when it was taken mid-epoch
        self.changes: list[str] = []  # settings a resumed run took that differ from the run's, described
        self.writer: CheckpointWriter | None = None
        self.average: WeightAverage | None = None  # --average: set up in fit(), once the epoch's length is known
        self._average_state: dict | None = None  # a resumed run's, loaded into `average` when it is set up

    def precision_note(self) -> str:
        """One line on the arithmetic chosen for the user: bf16 autocast where the hardware has it natively
        (`bf16_native`), float32 elsewhere."""
        hardware = "CPU" if self.device.type == "cpu" else "GPU"
        if self.bf16:
            return f"precision: bf16 autocast, native on this {hardware} (--no-bf16: float32)"
        return f"precision: float32, this {hardware} has no native bf16 (--bf16: autocast all the same)"

    @classmethod
    def new(cls, cfg: TrainConfig, log: Callable[[str], None] = print, progress=None) -> "Trainer":
        """A new run in `cfg.out`. Every setting and input is checked, and the data prepared, before the run
        directory is created: a run that cannot start leaves nothing behind."""
        cfg.validate()
        cfg, chosen = cfg.resolve()
        rundir = RunDir(cfg.out)
        rundir.check_writable()
        if rundir.holds_trained_run():
            raise XlfastError(f"{rundir} already holds a run: use --resume to continue it, or another -o")
        if cfg.tokenizer.reason:
            log(f"tokenizer: {cfg.tokenizer.name}, chosen because {cfg.tokenizer.reason}")
        if chosen:
            log(chosen)
        device, group = _machine(cfg)
        if not group.main:  # the others read what rank 0 prepared and saved, as a resumed run does
            distributed.barrier(group)
            return cls(cfg, TASKS[cfg.kind].prepare(cfg, rundir, _quiet), device, log, progress, group)._join()
        existed = rundir.path.exists()
        try:
            trainer = cls(cfg, TASKS[cfg.kind].prepare(cfg, None, log), device, log, progress, group)
        except BaseException:
            if not existed:  # the corpus store was built in it: a run that cannot start leaves nothing behind
                shutil.rmtree(rundir.path, ignore_errors=True)
            raise
        if cfg.bf16 is None:
            log(trainer.precision_note())
        rundir.create()
        trainer._save_prepared()
        rundir.truncate_log(0)
        trainer._write_config()
        distributed.barrier(group)
        return trainer._join()

    @classmethod
    def resume(cls, run_dir, changes: Mapping[str, Any] | None = None, log: Callable[[str], None] = print,
               progress=None) -> "Trainer":
        """The run in `run_dir`, from its checkpoint, with `changes` to its settings (TrainConfig names):
        those in RESUMABLE are taken and reported, any other difference is refused before any work."""
        rundir = RunDir(run_dir)
        doc = rundir.read_config()
        try:
            stored = TrainConfig.from_dict({**doc["train"], "out": str(rundir.path)})
        except (KeyError, TypeError, ValueError, XlfastError) as exc:
            raise rundir.bad_config(f"train settings: {exc}") from None
        if not rundir.has_checkpoint():
            raise XlfastError(f"{rundir}: no {CHECKPOINT} to resume from (training never reached its first evaluation)")
        cfg, accepted = reconcile(rundir, stored, changes or {})
        device, group = _machine(cfg)
        state = rundir.load_state(CHECKPOINT)  # on the CPU: the RNG state must stay there
        if not group.main:  # rank 0 may rebuild the corpus store first
            distributed.barrier(group)
        trainer = cls(cfg, TASKS[cfg.kind].prepare(cfg, rundir, log if group.main else _quiet), device, log,
                      progress, group)
        trainer._restore(state)
        step = state.get("step")  # None: the checkpoint's epoch had finished
        if group.main:
            rundir.remove_stale_temporaries()
            rundir.truncate_log(trainer.epoch, step)
            trainer._write_config()
            distributed.barrier(group)
        trainer._join()
        log = trainer.log
        trainer.resumed_after, trainer.resumed_step, trainer.changes = trainer.epoch, step, accepted
        sel = trainer.selection
        log(f"resuming {rundir} {checkpoint_place(trainer.epoch, step)} (best {sel.best:.3f} at epoch {sel.best_epoch})")
        for change in accepted:
            log(f"resuming with {change}")
        return trainer

    def _join(self) -> "Trainer":
        """On several ranks, compute the loss through DistributedDataParallel (gradients averaged over the
        ranks in the backward pass; rank 0's parameters broadcast now). A batch leaves some parameters
        without gradient when there are several corpus pairs (the other pairs' decoders) or languages (the
        other languages' LM outputs)."""
        if self.group.parallel:
            self.module = distributed.wrap(self.model, self.device, find_unused=len(self.prep.datasets) > 1)
        return self

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optim"])
            self.epoch = int(state["epoch"])
            self.so_far = EpochSoFar(**state["so_far"]) if state.get("so_far") else None
            self.selection = Selection.from_state(state)
            self._average_state = state.get("average")
            torch.set_rng_state(state["torch_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(self.rundir.checkpoint_path, f"does not match {CONFIG} ({why})") from None
        self._set_lr()

    def _set_lr(self) -> None:
        """--lr times the plateau decay so far. The optimiser's state carries the old rate: a changed --lr wins."""
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * self.selection.lr_scale

    def _save_prepared(self) -> None:
        for lang in self.prep.langs:
            self.rundir.write_vocab(lang, self.prep.vocabs[lang])
        if self.prep.subwords:
            for lang, segmenter in self.prep.subwords.segmenters.items():
                self.rundir.write_segmenter(lang, segmenter)
            self.rundir.write_pieces(self.prep.subwords.piece_table)
        for lang, rows in self.prep.pretrained_rows.items():
            self.rundir.write_pretrained(lang, rows)

    def _write_config(self) -> None:
        self.rundir.write_config({"train": self.cfg.to_dict(), "model": self.model.cfg.to_dict(),
                                  "langs": self.prep.langs})

    def plan(self, epoch: int) -> EpochPlan:
        """The batches of an epoch, (index into prep.datasets, sentence indices) each: the same for an epoch
        whenever it is asked for (a resumed run rebuilds the plan of the epoch it stopped in)."""
        return self.task.plan(self.prep.datasets, self.cfg.batch_size, random.Random(self.cfg.seed * 1_000_003 + epoch))

    def train_step(self, data, idx: np.ndarray) -> float:
        """One optimiser step on one batch of a dataset (corpus pair or monolingual corpus); returns its loss."""
        threads.poll()  # between steps: share the CPUs when other work runs (xlfast.threads)
        batch = data.batch(idx, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss, _ = self.module(batch, backend=self.cfg.backend)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clipped_step(self.opt, self.cfg.clip)
        if self.average is not None:
            self.average.update()
        return float(loss.detach())

    def train_to_evaluation(self, interval: int) -> int:
        """Train the epoch in progress from where it stands to its next evaluation: the next multiple of
        `interval` steps, or the epoch's end. On several ranks each takes its shard of the epoch's batches.
        Adds to `so_far` the loss and tokens of all ranks; returns the epoch's number of steps."""
        group, so_far, datasets = self.group, self.so_far, self.prep.datasets
        plan = self.plan(self.epoch)
        todo = distributed.shard(len(plan), group, so_far.batches)
        first = so_far.steps(group.world)
        epoch_steps = first + len(todo)
        last = min((first // interval + 1) * interval, epoch_steps)
        self.model.train()
        total, tokens, used, t0 = 0.0, 0, set(so_far.threads), time.perf_counter()
        for step, (k, idx) in enumerate(plan.take(todo[: last - first]), start=first + 1):
            if group.parallel:  # dropout masks differ between ranks, and follow from the step whatever the world size
                torch.manual_seed((((self.cfg.seed * 1_000_003 + self.epoch) * 1_000_003 + step) * 1009 + group.rank) % 2**63)
            total += self.train_step(datasets[k], idx)
            tokens += datasets[k].tokens(idx)
            used.add(threads.active()["current"])
            if self.progress:
                done = so_far.batches + (step - first) * group.world  # other ranks' losses taken as this one's
                self.progress("step", dict(epoch=self.epoch, step=step, steps=epoch_steps,
                                           loss=(so_far.loss + total * group.world) / done,
                                           tok_s=group.world * tokens / max(time.perf_counter() - t0, 1e-9)))
        so_far.seconds += time.perf_counter() - t0
        total, tokens = distributed.sum_over_ranks([total, tokens], group)
        so_far.loss, so_far.tokens = so_far.loss + total, so_far.tokens + int(tokens)
        so_far.batches += (last - first) * group.world
        so_far.threads = sorted(used)
        return epoch_steps

    def checkpoint_state(self) -> dict:
        """What --resume continues from. `step` and `so_far`: where the epoch in progress stands (None: the
        epoch has finished)."""
        mid = self.so_far is not None
        return dict(model=self.model.state_dict(), optim=self.opt.state_dict(), epoch=self.epoch,
                    step=self.so_far.steps(self.group.world) if mid else None,
                    so_far=asdict(self.so_far) if mid else None, **asdict(self.selection), torch_rng=torch.get_rng_state(),
                    average=self.average.state() if self.average else None)

    def _averaged(self):
        """The weights that evaluation scores and model.pt keeps in the model for the duration: the weight
        average under --average, else the weights as trained."""
        return self.average.applied() if self.average else contextlib.nullcontext()

    def save_checkpoint(self, keep_model: bool = False) -> float:
        """Queue checkpoint.pt (and model.pt when this evaluation's model is kept) for the background writer;
        returns the seconds the training thread spent on it (waiting for the previous write, copying tensors)."""
        t0 = time.perf_counter()
        snap = self.writer.snapshot(self.checkpoint_state())
        if keep_model:  # first: a checkpoint never names a kept model that is not on disk yet
            weights = snap["model"]
            if self.average is not None:  # straight into the writer's buffers, not via a copy of the model
                with self.average.applied():
                    weights = self.writer.snapshot(self.model.state_dict(), "kept")
            self.writer.write({"model": weights, "epoch": self.epoch, "step": self.selection.best_step}, MODEL)
        self.writer.write(snap, CHECKPOINT)
        return time.perf_counter() - t0

    def fit(self) -> dict:
        """Train to the last epoch or until patience runs out, evaluating every `eval_every` steps and at the
        end of every epoch. On several ranks, rank 0 alone evaluates, selects and writes; the others take its
        selection state after every evaluation."""
        cfg, group = self.cfg, self.group
        start = time.perf_counter()
        epoch_steps = -(-len(self.plan(1)) // group.world)  # every epoch's plan has as many batches
        interval = eval_interval(epoch_steps, cfg.eval_every)
        patience = cfg.patience * math.ceil(epoch_steps / interval)  # --patience: epochs' worth of evaluations
        if cfg.average > 0:
            self.average = WeightAverage(list(self.model.parameters()), cfg.average * epoch_steps)
            if self._average_state is not None:
                self.average.load(self._average_state)
        stop_reason = "epochs"
        with CheckpointWriter(self.rundir) if group.main else contextlib.nullcontext() as self.writer:
            while True:
                if self.selection.exhausted(patience):
                    stop_reason = "patience"
                    break
                if self.so_far is None:
                    if self.epoch >= cfg.epochs:
                        break
                    self.epoch, self.so_far = self.epoch + 1, EpochSoFar()
                elif self.epoch > cfg.epochs:  # resumed mid-epoch with fewer --epochs
                    break
                epoch_steps = self.train_to_evaluation(interval)
                so_far, step = self.so_far, self.so_far.steps(group.world)
                if step == epoch_steps:
                    self.so_far = None  # the checkpoint says the epoch has finished
                if group.main:
                    self._evaluate(so_far, step, epoch_steps, start, patience)
                self.selection = distributed.from_main(self.selection, group)
                self._set_lr()
            if group.main:
                self.writer.wait()
                if not self.rundir.has_model():  # no dictionary ever scored: keep the last evaluation's model
                    step = self.so_far.steps(group.world) if self.so_far else epoch_steps
                    with self._averaged():
                        self.rundir.save_state({"model": self.model.state_dict(), "epoch": self.epoch, "step": step}, MODEL)
                    self.selection.best_epoch, self.selection.best_step = self.epoch, step
                self.export_embeddings()
        distributed.barrier(group)  # every rank returns once the run directory is complete
        return {"epochs": self.epoch, "epoch_steps": epoch_steps, "best_epoch": self.selection.best_epoch,
                "best_step": self.selection.best_step, f"best_{self.task.criterion}": self.selection.kept_score,
                "stop": stop_reason, "seconds": time.perf_counter() - start, "resumed_after": self.resumed_after,
                "resumed_step": self.resumed_step, "changes": self.changes, "tokenizer": self.cfg.tokenizer.to_dict(),
                "batch_size": self.cfg.batch_size, "softmax": self.cfg.softmax, "subword": self.cfg.subword,
                "patience": self.cfg.patience, "bf16": self.bf16}

    def _evaluate(self, so_far: EpochSoFar, step: int, epoch_steps: int, start: float, patience: int) -> None:
        """Score the model at `step` of the epoch, keep it if selected, checkpoint, log (the epoch's
        statistics so far: at its end, the whole epoch's)."""
        t_eval = time.perf_counter()
        with self._averaged():
            score = self.task.score(self.model, self.prep, self.cfg)
        eval_s = time.perf_counter() - t_eval
        final = self.so_far is None and self.epoch == self.cfg.epochs
        lr = self.cfg.lr * self.selection.lr_scale  # the rate these steps trained at
        keep = self.selection.observe(self.epoch, step, score, final)
        if self.selection.decay(patience, self.cfg.lr_decay):  # before the checkpoint: a resumed run steps alike
            self.log(f"no rise for {self.selection.since_improved} evaluations: step size "
                     f"{self.cfg.lr * self.selection.lr_scale:.3g}")
        ckpt_s = self.save_checkpoint(keep_model=keep)
        rec = {"epoch": self.epoch, "step": step, "epoch_steps": epoch_steps,
               "loss": round(so_far.loss / max(so_far.batches, 1), 4), self.task.criterion: score.value,
               **score.extra, "seconds": round(so_far.seconds, 3), "eval_seconds": round(eval_s, 3),
               "checkpoint_seconds": round(ckpt_s, 3), "elapsed_seconds": round(time.perf_counter() - start, 3),
               "tokens": so_far.tokens, "steps": so_far.batches, "ranks": self.group.world,
               "best_epoch": self.selection.best_epoch, "best_step": self.selection.best_step,
               "threads": so_far.threads, "lr": lr}
        self.rundir.append_log(rec)
        if self.progress:
            self.progress("eval", rec)

    def export_embeddings(self) -> None:
        """Static subword-aware vectors of the selected model for every vocabulary word (word2vec text)."""
        model = self.rundir.load_model(MODEL, self.device, self.model.cfg)
        for lang in self.prep.langs:
            table = model.static_table(lang).float().cpu().numpy()
            self.rundir.write_vectors(lang, self.prep.vocabs[lang][len(SPECIALS) :], table[len(SPECIALS) :])


def start(out, changes: Mapping[str, Any], resume: bool = False, log: Callable[[str], None] = print,
          progress=None) -> Trainer:
    """`xlfast train`: with `resume` and a checkpoint in `out`, that run continued with `changes` (the
    settings given on the command line); otherwise a new run of the default settings with `changes`."""
    if resume and RunDir(out).has_checkpoint():
        return Trainer.resume(out, changes, log, progress)
    if resume:
        log(f"no checkpoint in {out}; starting a new run")
    return Trainer.new(apply_changes(TrainConfig(corpora=[], out=str(out)), changes), log, progress)
