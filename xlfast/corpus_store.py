"""Training corpora as memory-mapped integer arrays, built once per run and reused on `--resume`.

A corpus far larger than memory trains in bounded RAM: every side of every corpus is one flat int32
array of word ids plus an int64 array of sentence offsets (`.npy`, opened with `mmap_mode="r"`), so the
operating system pages sentences in as batches ask for them.

Building streams the text twice over at most a chunk of sentences at a time:
1. read and tokenise, counting words per language (the counts make the vocabularies and SentencePiece
   models), and append every sentence as *provisional* ids (order of first appearance) to a raw file;
2. once the vocabularies are known, map the provisional ids to word ids chunk by chunk into the final
   `.npy` arrays. Nothing ever holds the corpus as Python lists.

Layout of a store directory (`manifest.json` last, so a store without one is unfinished):
    <side>.ids.npy       int32 word ids of every sentence of one side, concatenated
    <side>.offsets.npy   int64, sentence i is ids[offsets[i]:offsets[i+1]]
    manifest.json        the sides (name, language, sentences, tokens), dropped pairs, a key of the inputs
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from xlfast.errors import XlfastError

MANIFEST = "manifest.json"
CHUNK_TOKENS = 1 << 20  # tokens buffered per side before they are appended to disk (4 MiB of int32)


class TokenArrays:
    """The sentences of one side: `ids[offsets[i]:offsets[i+1]]` is sentence i (word ids, int32)."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray):
        self.ids = ids
        self.offsets = offsets

    @classmethod
    def from_lists(cls, sents: Iterable[Iterable[int]]) -> "TokenArrays":
        sents = [list(s) for s in sents]
        offsets = np.zeros(len(sents) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in sents], out=offsets[1:])
        ids = np.fromiter((w for s in sents for w in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(ids, offsets)

    @classmethod
    def load(cls, directory: Path, side: str) -> "TokenArrays":
        return cls(np.load(directory / f"{side}.ids.npy", mmap_mode="r"),
                   np.load(directory / f"{side}.offsets.npy", mmap_mode="r"))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.offsets.nbytes)

    def tolist(self) -> list[list[int]]:
        return [self[i].tolist() for i in range(len(self))]


@dataclass
class SideSpec:
    """One side of the store: `name` (a file-name stem) and its language."""

    name: str
    lang: str


class _SideWriter:
    """Appends one side's sentences as provisional ids (int32) and their lengths (int64) to raw files."""

    def __init__(self, directory: Path, name: str):
        self.ids_path = directory / f"{name}.raw"
        self.lens_path = directory / f"{name}.lens.raw"
        self._ids = open(self.ids_path, "wb")
        self._lens = open(self.lens_path, "wb")
        self._buf: list[int] = []
        self._lbuf: list[int] = []
        self.sentences = 0
        self.tokens = 0

    def add(self, pids: list[int]) -> None:
        self._buf += pids
        self._lbuf.append(len(pids))
        self.sentences += 1
        self.tokens += len(pids)
        if len(self._buf) >= CHUNK_TOKENS:
            self.flush()

    def flush(self) -> None:
        self._ids.write(np.asarray(self._buf, dtype=np.int32).tobytes())
        self._lens.write(np.asarray(self._lbuf, dtype=np.int64).tobytes())
        self._buf, self._lbuf = [], []

    def close(self) -> None:
        self.flush()
        self._ids.close()
        self._lens.close()


class _Counts:
    """Per language: provisional id of each word (order of first appearance) and its count."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.counts = np.zeros(0, dtype=np.int64)

    def ids(self, tokens: list[str]) -> list[int]:
        index = self.index
        return [index.setdefault(w, len(index)) for w in tokens]

    def add(self, pids: list[int]) -> None:
        grown = np.bincount(np.asarray(pids, dtype=np.int64), minlength=len(self.index))
        grown[: len(self.counts)] += self.counts
        self.counts = grown

    def counter(self) -> Counter:
        return Counter({w: int(self.counts[i]) for w, i in self.index.items()})


def build(
    directory: Path,
    groups: list[list[SideSpec]],
    records: Iterator[tuple[int, tuple[list[str], ...]]],
    vocabularies: Callable[[dict[str, Counter]], dict[str, list[str]]],
    key: dict,
    unk: int,
) -> tuple["Store", dict[str, Counter], dict[str, list[str]]]:
    """Stream `records` into a store in `directory`. A group is the sides that are read together (the two
    sides of a parallel corpus, or the one side of a language's monolingual text); a record is (group
    index, one tokenised sentence per side of that group). A record with an empty side is dropped
    (nothing to learn from). `vocabularies(counts)` turns the word counts into the vocabularies (word
    lists, id = position); words outside them become `unk`. Returns the store, the counts and the
    vocabularies."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sides = [spec for group in groups for spec in group]
    langs = list(dict.fromkeys(s.lang for s in sides))
    counts = {lang: _Counts() for lang in langs}
    writers = {s.name: _SideWriter(tmp, s.name) for s in sides}
    dropped = 0
    pending: dict[str, list[int]] = {lang: [] for lang in langs}  # provisional ids not yet counted (counted a chunk at a time)
    for group, record in records:
        if not all(record):
            dropped += 1
            continue
        for spec, tokens in zip(groups[group], record):
            pids = counts[spec.lang].ids(tokens)
            writer = writers[spec.name]
            writer.add(pids)
            pending[spec.lang] += pids
            if len(pending[spec.lang]) >= CHUNK_TOKENS:
                counts[spec.lang].add(pending[spec.lang])
                pending[spec.lang] = []
    for lang in langs:
        counts[lang].add(pending[lang])
    for writer in writers.values():
        writer.close()
    counters = {lang: counts[lang].counter() for lang in langs}
    vocabs = vocabularies(counters)
    for spec in sides:
        writer = writers[spec.name]
        index = {w: i for i, w in enumerate(vocabs[spec.lang])}
        remap = np.full(max(len(counts[spec.lang].index), 1), unk, dtype=np.int32)
        for word, pid in counts[spec.lang].index.items():
            remap[pid] = index.get(word, unk)
        _finish_side(tmp, spec.name, writer, remap)
    manifest = dict(key=key, dropped=dropped,
                    sides=[dict(name=s.name, lang=s.lang, sentences=writers[s.name].sentences,
                                tokens=writers[s.name].tokens) for s in sides])
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return Store.open(directory), counters, vocabs


def _finish_side(directory: Path, name: str, writer: _SideWriter, remap: np.ndarray) -> None:
    """Raw provisional ids → `<name>.ids.npy` (word ids) and lengths → `<name>.offsets.npy`, a chunk at a time."""
    raw = np.memmap(writer.ids_path, dtype=np.int32, mode="r") if writer.tokens else np.zeros(0, np.int32)
    ids = np.lib.format.open_memmap(directory / f"{name}.ids.npy", mode="w+", dtype=np.int32, shape=(writer.tokens,))
    for start in range(0, writer.tokens, CHUNK_TOKENS):
        ids[start : start + CHUNK_TOKENS] = remap[raw[start : start + CHUNK_TOKENS]]
    ids.flush()
    del ids, raw
    lens = np.fromfile(writer.lens_path, dtype=np.int64)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    np.save(directory / f"{name}.offsets.npy", offsets)
    os.remove(writer.ids_path)
    os.remove(writer.lens_path)


@dataclass
class Store:
    """A finished store: its manifest and the sides as memory-mapped arrays."""

    directory: Path
    manifest: dict
    sides: dict[str, TokenArrays]

    @classmethod
    def open(cls, directory: Path) -> "Store":
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
            sides = {s["name"]: TokenArrays.load(directory, s["name"]) for s in manifest["sides"]}
        except (OSError, ValueError, KeyError) as exc:
            raise XlfastError(f"{directory}: damaged corpus store ({exc}); delete it to rebuild it") from None
        return cls(directory, manifest, sides)

    @classmethod
    def reusable(cls, directory: Path, key: dict) -> "Store | None":
        """The store in `directory` when it is finished and was built from the same inputs (`key`)."""
        path = Path(directory) / MANIFEST
        if not path.is_file():
            return None
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("key") != key:
                return None
        except ValueError:
            return None
        return cls.open(directory)

    def array(self, name: str) -> np.ndarray | None:
        """An array kept beside the sides (e.g. a pseudo-dictionary), or None."""
        path = self.directory / f"{name}.npy"
        return np.load(path) if path.is_file() else None

    def keep_array(self, name: str, array: np.ndarray) -> None:
        from xlfast.io import atomic_open

        with atomic_open(self.directory / f"{name}.npy", "wb") as f:
            np.save(f, array)

    @property
    def dropped(self) -> int:
        return int(self.manifest["dropped"])

    def nbytes(self) -> int:
        return sum(a.nbytes() for a in self.sides.values())

    @property
    def tokens(self) -> int:
        return sum(side["tokens"] for side in self.manifest["sides"])
