"""Training data: which corpora and languages the arguments name, and the corpora as word ids.

Parallel corpora (Wada et al. 2021): one file per corpus (TSV or `src ||| tgt`) or two line-aligned
files, each between two languages; several corpora may share a language. Monolingual corpora (Wada &
Iwata 2018): one sentence a line, one language per file. Vocabularies are per language (specials first,
then by frequency); with subwords every language has its own SentencePiece model and all share one piece
table, so an identical piece in two languages is one row of `Z` (Wada et al. 2021, §3.1).
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from xlfast.corpus_store import Store, TokenArrays
from xlfast.errors import InputError, XlfastError
from xlfast.model import SPECIALS, UNK, LMBatch, PairBatch
from xlfast.tokenize import TokenizerSpec


@dataclass
class CorpusSpec:
    path: str
    tgt_path: str | None
    langs: tuple[str, str]
    fmt: str = "auto"

    def describe(self) -> str:
        files = self.path if self.tgt_path is None else f"{self.path}+{self.tgt_path}"
        return f"{files} ({'-'.join(self.langs)})"

    def same_data(self, other: "CorpusSpec") -> bool:
        """The same files read the same way (paths compared after resolving them)."""
        return (_same_file(self.path, other.path) and _same_file(self.tgt_path, other.tgt_path)
                and tuple(self.langs) == tuple(other.langs) and self.fmt == other.fmt)


@dataclass
class MonoSpec:
    path: str
    lang: str

    def describe(self) -> str:
        return f"{self.path} ({self.lang})"

    def same_data(self, other: "MonoSpec") -> bool:
        return _same_file(self.path, other.path) and self.lang == other.lang


def _same_file(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    return os.path.realpath(a) == os.path.realpath(b)


def check_specs(corpora: list[CorpusSpec], mono: list[MonoSpec]) -> None:
    """Every named file exists, and the languages make a run: two per corpus, or two or more monolingual."""
    if corpora and mono:
        raise XlfastError("give parallel or monolingual corpora, not both")
    if not corpora and not mono:
        raise XlfastError("no corpora to train on")
    for path in [p for c in corpora for p in (c.path, c.tgt_path) if p] + [m.path for m in mono]:
        if not Path(path).exists():
            raise InputError(path, "no such file")
    for c in corpora:
        if len(c.langs) != 2 or c.langs[0] == c.langs[1]:
            raise XlfastError(f"{c.path}: a corpus pairs two languages, not {'-'.join(c.langs)}")
    if mono and len({m.lang for m in mono}) < 2:
        raise XlfastError("--mono needs corpora of at least two languages "
                          "(give --langs a,b when the suffixes are equal)")


# ---------------------------------------------------------------------------------------------------
# From command-line arguments


def _looks_parallel(path: Path) -> bool:
    """True when the first non-empty line carries a TAB or ' ||| ' (a one-file parallel corpus)."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.strip():
                    return "\t" in line or "|||" in line
    except OSError:
        return True  # let the reader report an unreadable file with its own message
    return True


def _langs_from_name(path: str) -> tuple[str, str] | None:
    """`corpus.grk-it.tsv` or `nru_en.txt` → (grk, it)."""
    m = re.search(r"(?:^|[._/])([A-Za-z]{2,3})[-_]([A-Za-z]{2,3})(?:\.[^./]+)?$", Path(path).name)
    return (m.group(1), m.group(2)) if m else None


def _require_files(paths) -> None:
    for path in paths:
        if not Path(path).exists():
            raise InputError(path, "no such file")
        if Path(path).is_dir():
            raise InputError(path, "is a directory, expected a file")


def parallel_specs(args: list[str], langs: list[str]) -> list[CorpusSpec]:
    """CORPUS arguments → CorpusSpec list.

    One file per corpus (TSV or `src ||| tgt`), or two line-aligned files written `a.gr+a.it`; plain
    `xlfast train a.gr a.it` is read as one two-file corpus when neither file is a one-file parallel corpus.
    Languages come from `langs` (one 'src,tgt' per corpus, in order), else from the two files' suffixes,
    else from a file name like `corpus.grk-it.tsv`.
    """
    items: list[tuple[str, str | None]] = []
    for a in args:
        if "+" in a and not Path(a).exists():
            src, tgt = a.split("+", 1)
            items.append((src, tgt))
        else:
            items.append((a, None))
    _require_files(p for item in items for p in item if p is not None)
    if len(args) == 2 and not any("+" in a for a in args) and not any(_looks_parallel(Path(a)) for a in args):
        items = [(args[0], args[1])]
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


def mono_specs(args: list[str], langs: list[str]) -> list[MonoSpec]:
    """Monolingual FILE arguments → MonoSpec list; languages from `langs` ('a,b' in file order, or once per
    file) or else from each file's suffix (train.shp → shp)."""
    _require_files(args)
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


def from_arguments(args: list[str], langs: list[str], mono: bool) -> dict:
    """What `xlfast train CORPUS... [--langs ...] [--mono]` names, as TrainConfig settings."""
    return {"mono": mono_specs(args, langs)} if mono else {"corpora": parallel_specs(args, langs)}


# ---------------------------------------------------------------------------------------------------
# Tokenised text, streamed into the corpus store


def parallel_records(specs: list[CorpusSpec], tok: TokenizerSpec, skip_bad_lines: bool):
    """The store's groups (a corpus: its source and target side) and a stream of (corpus index,
    (source tokens, target tokens)); a corpus none of whose pairs has words on both sides is an error."""
    from xlfast.corpus_store import SideSpec
    from xlfast.io import iter_parallel

    groups = [[SideSpec(f"c{k}.src", c.langs[0]), SideSpec(f"c{k}.tgt", c.langs[1])] for k, c in enumerate(specs)]

    def records():
        for k, c in enumerate(specs):
            usable = 0
            for _, src, tgt in iter_parallel(c.path, c.tgt_path, fmt=c.fmt, skip_bad_lines=skip_bad_lines):
                pair = (tok(src), tok(tgt))
                usable += bool(pair[0] and pair[1])
                yield k, pair
            if not usable:
                raise XlfastError(f"{c.path}: no usable sentence pairs after tokenisation")

    return groups, records()


def mono_records(specs: list[MonoSpec], tok: TokenizerSpec, skip_bad_lines: bool):
    """The store's groups (a language: one side, all its files) and a stream of (language index, (tokens,))."""
    from xlfast.corpus_store import SideSpec
    from xlfast.io import iter_mono

    langs = list(dict.fromkeys(m.lang for m in specs))
    groups = [[SideSpec(f"mono.{i}", lang)] for i, lang in enumerate(langs)]

    def records():
        for m in specs:
            usable = 0
            for _, line in iter_mono(m.path, skip_bad_lines=skip_bad_lines):
                tokens = tok(line)
                usable += bool(tokens)
                yield langs.index(m.lang), (tokens,)
            if not usable:
                raise XlfastError(f"{m.path}: no usable sentences after tokenisation")

    return groups, records()


# Lines of each side read to decide `--tokenize auto`: enough for a stable rate, cheap on any corpus.
TOKENISEDNESS_SAMPLE = 20_000


def tokenisedness(specs: list, skip_bad_lines: bool) -> dict[str, "Tokenisedness"]:
    """How tokenised each side of the corpora looks (xlfast.tokenize.Tokenisedness), from its first
    lines; keyed by a name a person reads (language and file)."""
    from itertools import islice

    from xlfast.io import iter_mono, iter_parallel
    from xlfast.tokenize import Tokenisedness

    sides: dict[str, Tokenisedness] = {}
    for spec in specs:
        if isinstance(spec, MonoSpec):
            lines = [line for _, line in islice(iter_mono(spec.path, skip_bad_lines), TOKENISEDNESS_SAMPLE)]
            sides[f"{spec.lang} ({os.path.basename(spec.path)})"] = Tokenisedness.of(lines)
            continue
        pairs = list(islice(iter_parallel(spec.path, spec.tgt_path, fmt=spec.fmt, skip_bad_lines=skip_bad_lines),
                            TOKENISEDNESS_SAMPLE))
        for i, (lang, path) in enumerate(zip(spec.langs, (spec.path, spec.tgt_path or spec.path))):
            sides[f"{lang} ({os.path.basename(path)})"] = Tokenisedness.of(pair[1 + i] for pair in pairs)
    return sides


def store_key(specs: list, tok: TokenizerSpec, skip_bad_lines: bool, min_count: int) -> dict:
    """What a corpus store is built from: the files (with their sizes and modification times), how they
    are read and the vocabulary's threshold. A resumed run reuses a store only when this is unchanged."""
    files = []
    for spec in specs:
        for path in (spec.path, getattr(spec, "tgt_path", None)):
            if path is not None:
                st = os.stat(path)
                files.append([os.path.realpath(path), st.st_size, st.st_mtime_ns])
    return {"specs": [spec.describe() for spec in specs], "files": files, "tokenizer": tok.to_dict(),
            "skip_bad_lines": skip_bad_lines, "min_count": min_count}


def vocabularies(counts: dict[str, Counter], min_count: int) -> dict[str, list[str]]:
    """Per language: the specials, then the words seen at least `min_count` times, most frequent first."""
    vocabs = {}
    for lang, lang_counts in counts.items():
        words = sorted((w for w, n in lang_counts.items() if n >= min_count), key=lambda w: (-lang_counts[w], w))
        words = [w for w in words if w not in SPECIALS]
        if not words:
            top = lang_counts.most_common(1)
            seen = f"the most frequent, '{top[0][0]}', occurs {top[0][1]} times" if top else "it has no words"
            raise XlfastError(f"--min-count {min_count}: no word of '{lang}' occurs that often ({seen})")
        vocabs[lang] = list(SPECIALS) + words
    return vocabs


# ---------------------------------------------------------------------------------------------------
# Word ids


@dataclass
class PairData:
    langs: tuple[str, str]
    src: TokenArrays
    tgt: TokenArrays
    dice: list[tuple[int, int]]  # pseudo-dictionary as word ids (model selection)
    name: str

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> np.ndarray:
        """Per sentence pair, the longer side's length (what its batch pads to)."""
        return np.maximum(self.src.lengths(), self.tgt.lengths())

    def tokens(self, idx: list[int]) -> int:
        return sum(len(self.src[i]) + len(self.tgt[i]) for i in idx)

    def nbytes(self) -> int:
        return self.src.nbytes() + self.tgt.nbytes()

    def batch(self, idx: list[int], device) -> PairBatch:
        return PairBatch.build(self.langs, [self.src[i] for i in idx], [self.tgt[i] for i in idx], device)


@dataclass
class MonoData:
    lang: str
    sents: TokenArrays
    name: str

    def __len__(self) -> int:
        return len(self.sents)

    def lengths(self) -> np.ndarray:
        return self.sents.lengths()

    def tokens(self, idx: list[int]) -> int:
        return sum(len(self.sents[i]) for i in idx)

    def nbytes(self) -> int:
        return self.sents.nbytes()

    def batch(self, idx: list[int], device) -> LMBatch:
        return LMBatch.build(self.lang, [self.sents[i] for i in idx], device)


def pair_datasets(specs: list[CorpusSpec], store: Store, dice_min_count: int, dice_threshold: float,
                  log: Callable[[str], None]) -> list[PairData]:
    """Each parallel corpus of the store with its Dice pseudo-dictionary (Wada et al. 2021: model
    selection without gold data), counted once and kept in the store."""
    from xlfast.dice import dice_dictionary

    pairs = []
    for k, c in enumerate(specs):
        src, tgt = store.sides[f"c{k}.src"], store.sides[f"c{k}.tgt"]
        dice = store.array(f"dice.{k}")
        if dice is None:
            dice = dice_dictionary(src, tgt, dice_min_count, dice_threshold, first_word=len(SPECIALS))
            store.keep_array(f"dice.{k}", dice)
        name = "-".join(c.langs)
        pairs.append(PairData(tuple(c.langs), src, tgt, [(int(a), int(b)) for a, b in dice], name))
        log(f"{name}: {len(src):,} sentence pairs, pseudo-dictionary {len(dice):,} pairs")
    return pairs


def mono_datasets(store: Store, vocabs: dict[str, list[str]], log: Callable[[str], None]) -> list[MonoData]:
    out = []
    for side in store.manifest["sides"]:
        lang = side["lang"]
        out.append(MonoData(lang, store.sides[side["name"]], lang))
        log(f"{lang}: {side['sentences']:,} sentences, {len(vocabs[lang]) - len(SPECIALS):,} words")
    return out


# ---------------------------------------------------------------------------------------------------
# Subwords


@dataclass
class Subwords:
    segmenters: dict  # language → Segmenter
    piece_table: list[str]
    pieces_per_word: dict[str, list[list[int]]]  # language → rows of the piece table, per word id


def train_segmenters(counts: dict[str, Counter], spm_vocab: int) -> dict:
    from xlfast.subwords import Segmenter, train_sentencepiece

    return {lang: Segmenter(train_sentencepiece(lang_counts, spm_vocab)) for lang, lang_counts in counts.items()}


def subwords(vocabs: dict[str, list[str]], segmenters: dict) -> Subwords:
    """Every vocabulary word as rows of the shared piece table (a special is one piece of its own)."""
    from xlfast.subwords import SPECIAL_PIECE_PREFIX, build_piece_table

    per_lang = {lang: [[SPECIAL_PIECE_PREFIX + w] if w in SPECIALS else segmenters[lang].pieces(w) for w in words]
                for lang, words in vocabs.items()}
    table, ids = build_piece_table(per_lang)
    return Subwords(segmenters, table, ids)


@dataclass
class Prepared:
    """The corpora of a run as word ids, with everything a model is built from."""

    langs: list[str]
    vocabs: dict[str, list[str]]  # every word id: the trained vocabulary, then words only pre-trained vectors know
    datasets: list  # PairData per parallel corpus, or MonoData per language: what batches are drawn from
    subwords: Subwords | None  # None: a word-level run (`--subword none`)
    dropped: int
    classes: dict[str, int] = field(default_factory=dict)  # size of the trained vocabulary (the output classes)
    pretrained: dict[str, dict] = field(default_factory=dict)  # ModelConfig.pretrained
    pretrained_rows: dict = field(default_factory=dict)  # language → PretrainedRows (read from the vectors'
    # file for a new run; memory-mapped from the run directory for a resumed one)
