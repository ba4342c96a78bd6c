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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
# Tokenised text and vocabularies


@dataclass
class Texts:
    """Tokenised corpora before any word ids: `parts` holds (CorpusSpec, source sentences, target
    sentences) per parallel corpus, or (language, sentences) per language of monolingual corpora."""

    langs: list[str]
    counts: dict[str, Counter]
    parts: list[tuple]
    dropped: int = 0  # sentences (pairs) that tokenise to nothing


def read_parallel_texts(specs: list[CorpusSpec], tok: TokenizerSpec, skip_bad_lines: bool) -> Texts:
    from xlfast.io import read_parallel

    langs: list[str] = []
    parts = []
    for c in specs:
        corpus = read_parallel(c.path, c.tgt_path, fmt=c.fmt, skip_bad_lines=skip_bad_lines)
        parts.append((c, [tok(s) for s in corpus.src], [tok(t) for t in corpus.tgt]))
        langs += [lang for lang in c.langs if lang not in langs]
    counts: dict[str, Counter] = {lang: Counter() for lang in langs}
    for c, src, tgt in parts:
        for sents, lang in ((src, c.langs[0]), (tgt, c.langs[1])):
            for s in sents:
                counts[lang].update(s)
    return Texts(langs, counts, parts)


def read_mono_texts(specs: list[MonoSpec], tok: TokenizerSpec, skip_bad_lines: bool) -> Texts:
    from xlfast.io import read_mono

    sents_of: dict[str, list[list[str]]] = {}
    dropped = 0
    for m in specs:
        toks = [tok(x) for x in read_mono(m.path, skip_bad_lines=skip_bad_lines)]
        kept = [t for t in toks if t]
        dropped += len(toks) - len(kept)
        if not kept:
            raise XlfastError(f"{m.path}: no usable sentences after tokenisation")
        sents_of.setdefault(m.lang, []).extend(kept)
    langs = list(sents_of)
    counts = {lang: Counter(w for s in sents_of[lang] for w in s) for lang in langs}
    return Texts(langs, counts, [(lang, sents_of[lang]) for lang in langs], dropped)


def vocabularies(texts: Texts, min_count: int) -> dict[str, list[str]]:
    """Per language: the specials, then the words seen at least `min_count` times, most frequent first."""
    vocabs = {}
    for lang in texts.langs:
        counts = texts.counts[lang]
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        words = [w for w in words if w not in SPECIALS]
        if not words:
            top = counts.most_common(1)
            seen = f"the most frequent, '{top[0][0]}', occurs {top[0][1]} times" if top else "it has no words"
            raise XlfastError(f"--min-count {min_count}: no word of '{lang}' occurs that often ({seen})")
        vocabs[lang] = list(SPECIALS) + words
    return vocabs


# ---------------------------------------------------------------------------------------------------
# Word ids


@dataclass
class PairData:
    langs: tuple[str, str]
    src: list[list[int]]
    tgt: list[list[int]]
    dice: list[tuple[int, int]]  # pseudo-dictionary as word ids (model selection)
    name: str

    def __len__(self) -> int:
        return len(self.src)

    def length(self, i: int) -> int:
        return max(len(self.src[i]), len(self.tgt[i]))

    def tokens(self, idx: list[int]) -> int:
        return sum(len(self.src[i]) + len(self.tgt[i]) for i in idx)

    def batch(self, idx: list[int], device) -> PairBatch:
        return PairBatch.build(self.langs, [self.src[i] for i in idx], [self.tgt[i] for i in idx], device)


@dataclass
class MonoData:
    lang: str
    sents: list[list[int]]
    name: str

    def __len__(self) -> int:
        return len(self.sents)

    def length(self, i: int) -> int:
        return len(self.sents[i])

    def tokens(self, idx: list[int]) -> int:
        return sum(len(self.sents[i]) for i in idx)

    def batch(self, idx: list[int], device) -> LMBatch:
        return LMBatch.build(self.lang, [self.sents[i] for i in idx], device)


def pair_datasets(texts: Texts, vocabs: dict[str, list[str]], dice_min_count: int, dice_threshold: float,
                  log: Callable[[str], None]) -> list[PairData]:
    """Each parallel corpus as word ids with its Dice pseudo-dictionary (Wada et al. 2021: model
    selection without gold data). Pairs with a side that tokenises to nothing are dropped (counted)."""
    from xlfast.dice import pseudo_dictionary

    index = {lang: {w: i for i, w in enumerate(vocabs[lang])} for lang in texts.langs}
    pairs = []
    for c, src, tgt in texts.parts:
        s_lang, t_lang = c.langs
        s_ids, t_ids, s_keep, t_keep = [], [], [], []
        for a, b in zip(src, tgt):
            if not a or not b:  # a side that tokenises to nothing has nothing to learn from
                texts.dropped += 1
                continue
            s_ids.append([index[s_lang].get(w, UNK) for w in a])
            t_ids.append([index[t_lang].get(w, UNK) for w in b])
            s_keep.append(a)
            t_keep.append(b)
        if not s_ids:
            raise XlfastError(f"{c.path}: no usable sentence pairs after tokenisation")
        dice = pseudo_dictionary(s_keep, t_keep, min_count=dice_min_count, threshold=dice_threshold)
        dice_ids = [(index[s_lang][a], index[t_lang][b]) for a, b, _ in dice if a in index[s_lang] and b in index[t_lang]]
        name = f"{s_lang}-{t_lang}"
        pairs.append(PairData((s_lang, t_lang), s_ids, t_ids, dice_ids, name))
        log(f"{name}: {len(s_ids):,} sentence pairs, pseudo-dictionary {len(dice_ids):,} pairs")
    return pairs


def mono_datasets(texts: Texts, vocabs: dict[str, list[str]], log: Callable[[str], None]) -> list[MonoData]:
    out = []
    for lang, sents in texts.parts:
        index = {w: i for i, w in enumerate(vocabs[lang])}
        out.append(MonoData(lang, [[index.get(w, UNK) for w in s] for s in sents], lang))
        log(f"{lang}: {len(sents):,} sentences, {len(vocabs[lang]) - len(SPECIALS):,} words")
    return out


# ---------------------------------------------------------------------------------------------------
# Subwords


@dataclass
class Subwords:
    segmenters: dict  # language → Segmenter
    piece_table: list[str]
    pieces_per_word: dict[str, list[list[int]]]  # language → rows of the piece table, per word id


def train_segmenters(texts: Texts, spm_vocab: int) -> dict:
    from xlfast.subwords import Segmenter, train_sentencepiece

    return {lang: Segmenter(train_sentencepiece(texts.counts[lang], spm_vocab)) for lang in texts.langs}


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
    vocabs: dict[str, list[str]]
    datasets: list  # PairData per parallel corpus, or MonoData per language: what batches are drawn from
    subwords: Subwords | None  # None: a word-level run (`--subword none`)
    dropped: int
