"""Every file format xlfast reads or writes, and safe writes.

Formats are the ones users already have (see docs/DESIGN.md):

* parallel text: ``src<TAB>tgt`` (TSV), ``src ||| tgt`` (fast_align / eflomal), or two line-aligned files;
* monolingual text, one sentence per line;
* dictionaries, ``src tgt`` per line (whitespace or TAB);
* Pharaoh alignments ``i-j`` with possible links ``ipj`` / ``i-jp`` / ``i?j``, 0- or 1-based;
* word2vec text embeddings (``.vec``).

Readers work line by line on bytes and decode each line on its own, so that a huge corpus is never loaded
whole by the ``iter_*`` functions and invalid UTF-8 is reported with its line and byte offset.  Every
problem with a user's file is an :class:`~xlfast.errors.InputError` naming the file and the 1-based line.
Every reader takes ``-`` for standard input and reads gzip streams (``corpus.tsv.gz``, fastText's
``.vec.gz``) as they are, told apart by their first bytes; every writer takes ``-`` for standard output.
"""
from __future__ import annotations

import gzip
import logging
import os
import re
import stat
import sys
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from xlfast.errors import InputError, UsageError, XlfastError, shown_path

log = logging.getLogger("xlfast.io")

PathLike = Union[str, "os.PathLike[str]"]
PARALLEL_FORMATS = ("tsv", "fastalign", "two-files")
ALIGNMENT_BASES = ("auto", 0, 1)
FASTALIGN_SEP = "|||"
STDIO = "-"  # as an input: standard input; as an output: standard output
_UTF8_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
MAX_SKIP_WARNINGS = 10  # skipped lines named one by one per file; the rest are only counted


def is_stdio(path: Optional[PathLike]) -> bool:
    return path is not None and os.fspath(path) == STDIO


# --------------------------------------------------------------------------------------------------
# writes: nothing half-written, nothing clobbered
# --------------------------------------------------------------------------------------------------
@contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """Open ``path`` for writing a whole file.

    A regular file or a new path is written to a temporary file beside it, which replaces it only if the
    block finishes without error: a reader never sees half a file, a failed run leaves the old one (and
    its permissions).  A symbolic link is followed, and its target replaced that way in the target's
    folder.  ``-`` (standard output), character devices (``/dev/null``, a terminal) and FIFOs are written
    directly as streams, never replaced by a regular file.  A path that cannot be written is one line.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w', 'wt' or 'wb', not {mode!r}")
    binary = "b" in mode
    if is_stdio(path):
        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    shown = os.fspath(path)
    try:
        st: Optional[os.stat_result] = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _cannot_write(shown, exc) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise XlfastError(f"{shown}: is a directory, expected a file name to write")
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        try:
            stream = open(path, mode, **({} if binary else {"encoding": encoding, "newline": "\n"}))
        except OSError as exc:
            raise _cannot_write(shown, exc) from None
        with stream:
            yield stream
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise XlfastError(f"{shown}: not a regular file, a character device or a FIFO; xlfast will not write to it")

    target = Path(os.path.realpath(path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _cannot_write(shown, exc, f" a new file in {target.parent}") from None
    if st is not None:
        permissions = stat.S_IMODE(st.st_mode)
    else:  # mkstemp makes the file 0600; give it the permissions a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        permissions = 0o666 & ~umask
    try:
        os.chmod(tmp, permissions)
        f = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding=encoding, newline="\n")
        with f:
            yield f
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                raise _cannot_write(shown, exc) from None
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _cannot_write(shown, exc) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _cannot_write(shown: str, exc: OSError, what: str = "") -> XlfastError:
    return XlfastError(f"{shown}: cannot write{what}: {exc.strerror or exc}")


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` as :func:`atomic_open` does."""
    with atomic_open(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------------------------------
# line reading: bytes in, one decoded line at a time, with its 1-based number
# --------------------------------------------------------------------------------------------------
def check_input(path: PathLike) -> None:
    """Fail now, before any work, if ``path`` cannot be read (``-``, standard input, always can).

    Only a regular file is opened to check it: opening a FIFO would wait for, and then cut off, its writer."""
    if is_stdio(path):
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(path, "is a directory, expected a file")
    if stat.S_ISREG(st.st_mode):
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise InputError(path, f"cannot open: {exc.strerror or exc}") from None
        if st.st_size == 0:
            raise InputError(path, "file is empty")


def check_stdin_once(*paths: Optional[PathLike]) -> None:
    """Standard input can be read once: at most one input may be '-'."""
    if sum(is_stdio(p) for p in paths) > 1:
        raise UsageError("only one input can be standard input ('-')")


def _is_gzip(f: IO[bytes]) -> bool:
    if hasattr(f, "peek"):
        return f.peek(2)[:2] == _GZIP_MAGIC
    if f.seekable():  # a stream without peek (a test runner's standard input): look and go back
        start = f.tell()
        head = f.read(2)
        f.seek(start)
        return head == _GZIP_MAGIC
    return False


def _raw_lines(path: PathLike) -> Iterator[tuple[int, int, bytes]]:
    """(1-based number, byte offset, bytes without the line end) of every line, UTF-8 BOM removed;
    ``-`` is standard input, and a gzip stream is decompressed as it is read."""
    check_input(path)
    stdin = is_stdio(path)
    f = sys.stdin.buffer if stdin else open(path, "rb")
    try:
        gz = _is_gzip(f)
        lines = gzip.GzipFile(fileobj=f, mode="rb") if gz else f
        number = offset = 0
        while True:
            try:
                raw = lines.readline()
            except (OSError, EOFError, zlib.error) as exc:
                if not gz:
                    raise
                raise InputError(path, f"broken gzip stream ({exc})", number + 1) from None
            if not raw:
                return
            number += 1
            size = len(raw)
            if number == 1 and raw.startswith(_UTF8_BOM):
                raw, offset, size = raw[3:], offset + 3, size - 3
            yield number, offset, raw.rstrip(b"\r\n")
            offset += size
    finally:
        if not stdin:
            f.close()


class _BadLine(Exception):
    """One bad line; the readers turn it into an InputError, or count and skip it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _decode(raw: bytes, offset: int) -> str:
    """Decode one line of UTF-8; ``offset`` is the line's byte offset in the file (for the message)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise _BadLine(f"invalid UTF-8 at byte offset {offset + exc.start} (byte 0x{bad})") from None


def _iter_lines(path: PathLike) -> Iterator[tuple[int, Union[str, _BadLine]]]:
    """Yield (line number, text without its line end) or (line number, _BadLine) for undecodable lines."""
    for number, offset, raw in _raw_lines(path):
        try:
            yield number, _decode(raw, offset)
        except _BadLine as bad:
            yield number, bad


def count_lines(path: PathLike) -> Optional[int]:
    """Lines in a file (for a progress bar), or None for a stream (standard input, a FIFO): it can be read
    only once."""
    if is_stdio(path) or not os.path.isfile(path):
        return None
    return sum(1 for _ in _raw_lines(path))


class _SkippingReader:
    """What the line readers share: bad lines are errors, or with ``skip_bad_lines`` counted and skipped,
    the first MAX_SKIP_WARNINGS of each file named in a warning with their line."""

    def __init__(self, skip_bad_lines: bool):
        self.skip_bad_lines = skip_bad_lines
        self.skipped = 0

    def _bad(self, path: str, number: int, bad: _BadLine) -> None:
        if not self.skip_bad_lines:
            raise InputError(path, bad.message, number)
        self.skipped += 1
        if self.skipped <= MAX_SKIP_WARNINGS:
            log.warning("%s:%d: %s (line skipped)", shown_path(path), number, bad.message)
        if self.skipped == MAX_SKIP_WARNINGS:
            log.warning("%s: further bad lines are skipped without a warning each (counted)", shown_path(path))


# --------------------------------------------------------------------------------------------------
# parallel corpora
# --------------------------------------------------------------------------------------------------
@dataclass
class ParallelCorpus:
    """Raw parallel text exactly as the user wrote it (sides stripped of surrounding whitespace only)."""

    src: list[str]
    tgt: list[str]
    lines: list[int]  # 1-based source line number of each pair, for messages
    path: str
    fmt: str  # "tsv" | "fastalign" | "two-files"
    skipped: int = 0  # bad lines skipped (skip_bad_lines=True)
    tgt_path: Optional[str] = None  # the second file when fmt == "two-files"

    def __len__(self) -> int:
        return len(self.src)


def detect_parallel_format(line: str) -> Optional[str]:
    """'fastalign' if the line has '|||', else 'tsv' if it has a TAB, else None."""
    if FASTALIGN_SEP in line:
        return "fastalign"
    if "\t" in line:
        return "tsv"
    return None


def _split_pair(line: str, fmt: str) -> tuple[str, str]:
    if fmt == "tsv":
        parts = line.split("\t")
        if len(parts) == 1:
            hint = " (it has '|||': is the file in fast_align format?)" if FASTALIGN_SEP in line else ""
            raise _BadLine(f"no TAB separator; expected 'source<TAB>target'{hint}")
        if len(parts) > 2:
            raise _BadLine(f"{len(parts) - 1} TABs; expected exactly one ('source<TAB>target')")
    else:
        parts = line.split(FASTALIGN_SEP)
        if len(parts) == 1:
            raise _BadLine("no '|||' separator; expected 'source ||| target'")
        if len(parts) > 2:
            raise _BadLine(f"{len(parts) - 1} '|||' separators; expected exactly one")
    src, tgt = parts[0].strip(), parts[1].strip()
    _check_sides(src, tgt)
    return src, tgt


def _check_sides(src: str, tgt: str) -> None:
    if not src and not tgt:
        raise _BadLine("empty line; every line must hold a sentence pair")
    if not src:
        raise _BadLine("empty source side")
    if not tgt:
        raise _BadLine("empty target side")


def _skipped_note(skipped: int) -> str:
    return f" ({skipped} bad line(s) skipped)" if skipped else ""


class ParallelReader(_SkippingReader):
    """Streams (line number, src, tgt); ``skipped`` and ``fmt`` are known as reading goes."""

    def __init__(self, path: PathLike, tgt_path: Optional[PathLike] = None, fmt: str = "auto",
                 skip_bad_lines: bool = False):
        super().__init__(skip_bad_lines)
        if fmt not in ("auto",) + PARALLEL_FORMATS:
            raise XlfastError(f"unknown parallel format {fmt!r}; choose auto, tsv, fastalign or two-files")
        if tgt_path is not None and fmt not in ("auto", "two-files"):
            raise XlfastError(f"a second file was given, so the format is two-files, not {fmt!r}")
        if tgt_path is None and fmt == "two-files":
            raise XlfastError("format two-files needs the target file too")
        check_stdin_once(path, tgt_path)
        self.path = os.fspath(path)
        self.tgt_path = os.fspath(tgt_path) if tgt_path is not None else None
        self.fmt = "two-files" if tgt_path is not None else fmt
        self.lines_read = 0  # the last line number read, good or bad: trailing bad lines count too
        # check the files now: a missing file is reported before any work starts
        check_input(self.path)
        if self.tgt_path is not None:
            check_input(self.tgt_path)
        self._gen = self._two_files() if self.tgt_path is not None else self._one_file()

    def __iter__(self) -> "ParallelReader":
        return self

    def __next__(self) -> tuple[int, str, str]:
        return next(self._gen)

    def _one_file(self) -> Iterator[tuple[int, str, str]]:
        yielded = False
        for number, text in _iter_lines(self.path):
            self.lines_read = number
            try:
                if isinstance(text, _BadLine):
                    raise text
                if not text.strip():
                    raise _BadLine("empty line; every line must hold a sentence pair")
                if self.fmt == "auto":
                    detected = detect_parallel_format(text)
                    if detected is None:
                        raise _BadLine("cannot tell the format: no TAB and no '|||' "
                                       "(expected 'source<TAB>target' or 'source ||| target')")
                    self.fmt = detected
                src, tgt = _split_pair(text, self.fmt)
            except _BadLine as bad:
                self._bad(self.path, number, bad)
                continue
            yielded = True
            yield number, src, tgt
        if not yielded:
            raise InputError(self.path, "no sentence pairs in the file" + _skipped_note(self.skipped))

    def _two_files(self) -> Iterator[tuple[int, str, str]]:
        src_lines, tgt_lines = _iter_lines(self.path), _iter_lines(self.tgt_path)
        number = 0
        for number, src in src_lines:
            self.lines_read = number
            nxt = next(tgt_lines, None)
            if nxt is None:
                self._mismatch(number + sum(1 for _ in src_lines), number - 1)
            _, tgt = nxt
            where = self.path  # the file a bad line is reported in: the side with the undecodable bytes
            try:
                for side, where in ((src, self.path), (tgt, self.tgt_path)):
                    if isinstance(side, _BadLine):
                        raise side
                where = self.path
                s, t = src.strip(), tgt.strip()
                _check_sides(s, t)
            except _BadLine as bad:
                self._bad(where, number, bad)
                continue
            yield number, s, t
        extra = sum(1 for _ in tgt_lines)
        if extra:
            self._mismatch(number, number + extra)
        if number == self.skipped:
            raise InputError(self.path, "no sentence pairs in the files" + _skipped_note(self.skipped))

    def _mismatch(self, n_src: int, n_tgt: int) -> None:
        raise InputError(self.path, f"has {n_src} lines but {shown_path(self.tgt_path)} has {n_tgt}; "
                                    "the two files must be line-aligned")


def iter_parallel(path: PathLike, tgt_path: Optional[PathLike] = None, fmt: str = "auto",
                  skip_bad_lines: bool = False) -> ParallelReader:
    """Stream (1-based line, src, tgt) from a TSV / ``|||`` file or two line-aligned files.

    ``fmt="auto"`` decides from the first non-empty line and then every line must agree.  The returned
    reader also tells ``.fmt`` and ``.skipped`` (bad lines skipped when ``skip_bad_lines``).
    """
    return ParallelReader(path, tgt_path, fmt, skip_bad_lines)


def read_parallel(path: PathLike, tgt_path: Optional[PathLike] = None, fmt: str = "auto",
                  skip_bad_lines: bool = False) -> ParallelCorpus:
    """Read a whole parallel corpus (see :func:`iter_parallel`)."""
    reader = iter_parallel(path, tgt_path, fmt, skip_bad_lines)
    src, tgt, lines = [], [], []
    for number, s, t in reader:
        lines.append(number)
        src.append(s)
        tgt.append(t)
    return ParallelCorpus(src, tgt, lines, reader.path, reader.fmt, reader.skipped, reader.tgt_path)


# --------------------------------------------------------------------------------------------------
# monolingual text
# --------------------------------------------------------------------------------------------------
class MonoLines(list):
    """The sentences of a monolingual file (a plain list) plus their line numbers and the skipped count."""

    path: str = ""
    lines: list
    skipped: int = 0


class MonoReader(_SkippingReader):
    def __init__(self, path: PathLike, skip_bad_lines: bool = False):
        super().__init__(skip_bad_lines)
        self.path = os.fspath(path)
        check_input(self.path)
        self._gen = self._read()

    def __iter__(self) -> "MonoReader":
        return self

    def __next__(self) -> tuple[int, str]:
        return next(self._gen)

    def _read(self) -> Iterator[tuple[int, str]]:
        yielded = False
        for number, text in _iter_lines(self.path):
            if not isinstance(text, _BadLine):
                text = text.strip()
                if text:
                    yielded = True
                    yield number, text
                    continue
                text = _BadLine("empty line; every line must hold a sentence")
            self._bad(self.path, number, text)
        if not yielded:
            raise InputError(self.path, "no sentences in the file" + _skipped_note(self.skipped))


def iter_mono(path: PathLike, skip_bad_lines: bool = False) -> MonoReader:
    """Stream (1-based line, sentence) from a one-sentence-per-line file; ``.skipped`` counts bad lines."""
    return MonoReader(path, skip_bad_lines)


def read_mono(path: PathLike, skip_bad_lines: bool = False) -> MonoLines:
    """All sentences of a monolingual file; the list also carries ``.lines`` and ``.skipped``."""
    reader = iter_mono(path, skip_bad_lines)
    out = MonoLines()
    out.lines = []
    for number, text in reader:
        out.lines.append(number)
        out.append(text)
    out.path, out.skipped = reader.path, reader.skipped
    return out


# --------------------------------------------------------------------------------------------------
# dictionaries
# --------------------------------------------------------------------------------------------------
def read_dictionary(path: PathLike) -> list[tuple[str, str]]:
    """Word pairs ``src tgt`` (whitespace separated, or TAB separated when the line has a TAB).

    A source word may have several lines (several translations).  Blank lines are ignored; repeated
    pairs are kept once, in file order.  No lowercasing here: that is the tokenizer spec's job.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for number, text in _iter_lines(path):
        if isinstance(text, _BadLine):
            raise InputError(path, text.message, number)
        if not text.strip():
            continue
        parts = [p.strip() for p in text.split("\t")] if "\t" in text else text.split()
        if len(parts) != 2 or not all(parts):
            raise InputError(path, f"expected two words 'source target', found {len(parts)} field(s)", number)
        pair = (parts[0], parts[1])
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    if not pairs:
        raise InputError(path, "no word pairs in the dictionary")
    return pairs


# --------------------------------------------------------------------------------------------------
# Pharaoh alignments
# --------------------------------------------------------------------------------------------------
# i-j sure; ipj, i?j, i-jp possible
_LINK = re.compile(r"^(\d+)([-p?])(\d+)(p?)$")
# at least this many links without a single 0 make a file 1-based (a 0-based file aligns first words)
MIN_LINKS_FOR_BASE_GUESS = 20


@dataclass
class Alignments:
    """Links per sentence, 0-based (src, tgt); ``possible`` includes the sure links."""

    sure: list[set[tuple[int, int]]]
    possible: list[set[tuple[int, int]]]
    base: int  # the index convention read from the file: 0 or 1
    how: str  # why that convention (shown to the user)

    def __len__(self) -> int:
        return len(self.sure)


def parse_pharaoh_line(text: str) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(sure, possible) raw indices of one line (no base shift); possible includes sure.

    Raises ValueError naming the first malformed token.
    """
    sure: set[tuple[int, int]] = set()
    possible: set[tuple[int, int]] = set()
    for token in text.split():
        m = _LINK.match(token)
        if m is None or (m.group(2) != "-" and m.group(4)):
            raise ValueError(f"malformed link {token!r}; expected i-j (sure) or ipj / i-jp / i?j (possible)")
        link = (int(m.group(1)), int(m.group(3)))
        if m.group(2) == "-" and not m.group(4):
            sure.add(link)
        possible.add(link)
    return sure, possible


def read_alignments(path: PathLike, base: Union[str, int] = "auto", src_lens: Optional[Sequence[int]] = None,
                    tgt_lens: Optional[Sequence[int]] = None) -> Alignments:
    """Read Pharaoh links, one line per sentence pair (a blank line is a pair with no links).

    ``base``: 0, 1, or "auto": any index 0 means 0-based; an index equal to a sentence length (when the
    lengths are given) means 1-based; otherwise a file of at least MIN_LINKS_FOR_BASE_GUESS links with no 0
    is 1-based, and a smaller one is read as 0-based (the Pharaoh convention), saying it was a guess.
    With lengths, every index is checked against them.  A file whose first line looks like
    ``1 3 2 S`` is read as a WPT gold table instead (one link per line, all 1-based).
    """
    if base not in ("auto", 0, 1):
        raise XlfastError(f"alignment base must be auto, 0 or 1, not {base!r}")
    raw_sure, raw_possible, numbers = [], [], []
    for number, text in _iter_lines(path):
        if isinstance(text, _BadLine):
            raise InputError(path, text.message, number)
        if not numbers and _WPT_ROW.match(text):
            return _read_wpt_table(path, base, src_lens, tgt_lens)
        try:
            s, p = parse_pharaoh_line(text)
        except ValueError as exc:
            raise InputError(path, str(exc), number) from None
        raw_sure.append(s)
        raw_possible.append(p)
        numbers.append(number)

    for lens, side in ((src_lens, "source"), (tgt_lens, "target")):
        if lens is not None and len(lens) != len(raw_possible):
            raise InputError(path, f"has {len(raw_possible)} lines but the corpus has {len(lens)} sentence "
                                   f"pairs ({side} side); one alignment line per pair is needed")

    n_links = sum(len(p) for p in raw_possible)
    first_zero = next((numbers[k] for k, p in enumerate(raw_possible) if any(0 in link for link in p)), None)
    at_length = None
    if src_lens is not None or tgt_lens is not None:
        for k, p in enumerate(raw_possible):
            for i, j in p:
                if (src_lens is not None and i == src_lens[k]) or (tgt_lens is not None and j == tgt_lens[k]):
                    at_length = numbers[k]
                    break
            if at_length is not None:
                break

    if base == "auto":
        if first_zero is not None:
            base, how = 0, f"0-based: index 0 appears (line {first_zero})"
        elif at_length is not None:
            base, how = 1, f"1-based: an index equals the sentence length (line {at_length})"
        elif n_links >= MIN_LINKS_FOR_BASE_GUESS:
            base, how = 1, f"1-based: no index 0 among {n_links} links"
        else:
            base, how = 0, (f"0-based (Pharaoh convention) by default: only {n_links} links and no index 0, "
                            "so the file alone cannot tell; pass base 1 if it is 1-based")
    else:
        how = f"{base}-based, as requested"
        if base == 1 and first_zero is not None:
            raise InputError(path, "index 0 in a file read as 1-based", first_zero)

    sure = [{(i - base, j - base) for i, j in s} for s in raw_sure]
    possible = [{(i - base, j - base) for i, j in p} for p in raw_possible]
    if src_lens is not None or tgt_lens is not None:
        for k, p in enumerate(possible):
            for i, j in sorted(p):
                for index, lens, side in ((i, src_lens, "source"), (j, tgt_lens, "target")):
                    if lens is not None and index >= lens[k]:
                        raise InputError(path, f"{side} index {index + base} out of range: the {side} sentence "
                                               f"has {lens[k]} words ({how})", numbers[k])
    return Alignments(sure, possible, base, how)


# the WPT shared tasks' gold tables: "sentence source target [S|P] [confidence]" per link, all 1-based
_WPT_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)(?:\s+([SP]))?(?:\s+[0-9.]+)?\s*$")


def _read_wpt_table(path: PathLike, base, src_lens, tgt_lens) -> Alignments:
    """One link per line, sentence ids and positions 1-based; position 0 is the NULL word (not a link)."""
    if base == 0:
        raise InputError(path, "a WPT alignment table (sentence source target S|P) is 1-based; base 0 does not apply")
    how = "1-based WPT table 'sentence source target S|P' (position 0 = NULL, ignored)"
    rows = []
    for number, text in _iter_lines(path):
        if isinstance(text, _BadLine):
            raise InputError(path, text.message, number)
        if not text.strip():
            continue
        m = _WPT_ROW.match(text)
        if m is None:
            raise InputError(path, "expected 'sentence source target [S|P]' like the lines above", number)
        sentence, i, j = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if sentence < 1:
            raise InputError(path, "sentence ids are 1-based; found 0", number)
        rows.append((number, sentence - 1, i, j, m.group(4) != "P"))
    n = len(src_lens) if src_lens is not None else len(tgt_lens) if tgt_lens is not None else max(r[1] for r in rows) + 1
    sure: list[set[tuple[int, int]]] = [set() for _ in range(n)]
    possible: list[set[tuple[int, int]]] = [set() for _ in range(n)]
    for number, k, i, j, is_sure in rows:
        if k >= n:
            raise InputError(path, f"sentence {k + 1} but the corpus has {n} sentence pairs", number)
        if i == 0 or j == 0:
            continue
        for index, lens, side in ((i, src_lens, "source"), (j, tgt_lens, "target")):
            if lens is not None and index > lens[k]:
                raise InputError(path, f"{side} index {index} out of range: the {side} sentence has {lens[k]} "
                                       f"words ({how})", number)
        if is_sure:
            sure[k].add((i - 1, j - 1))
        possible[k].add((i - 1, j - 1))
    return Alignments(sure, possible, 1, how)


def format_pharaoh(links: Iterable[tuple[int, int]]) -> str:
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def write_alignments(path: PathLike, links: Iterable[Iterable[tuple[int, int]]]) -> None:
    """Write Pharaoh ``i-j`` links (0-based), one sentence pair per line, sorted, atomically."""
    with atomic_open(path) as f:
        for sentence in links:
            f.write(format_pharaoh(sentence) + "\n")


# --------------------------------------------------------------------------------------------------
# word2vec text embeddings
# --------------------------------------------------------------------------------------------------
def read_vec(path: PathLike, max_words: Optional[int] = None) -> tuple[list[str], np.ndarray]:
    """Words and float32 vectors from a word2vec text file (header ``count dim`` optional).

    UTF-8 is read tolerantly (an undecodable byte becomes U+FFFD, with a warning) because embeddings
    trained elsewhere often hold a few broken words; a repeated word keeps its first vector, with a
    warning naming the first repeat (as MUSE warns about it).
    """
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    dim = header_count = None
    replaced: list[int] = []  # line numbers
    repeated: list[tuple[int, str]] = []  # (line number, word)
    for number, _, raw in _raw_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            replaced.append(number)
        text = text.rstrip()  # word2vec's C tool writes a trailing space
        if not text:
            raise InputError(path, "empty line", number)
        if number == 1:
            head = text.split()
            if len(head) == 2 and all(h.isdigit() for h in head):
                header_count, dim = int(head[0]), int(head[1])
                if dim < 1:
                    raise InputError(path, f"header gives dimension {dim}", number)
                continue
            dim = len(text.split(" ")) - 1
            if dim < 1:
                raise InputError(path, "expected 'word v1 ... vd' or a header 'count dim'", number)
        parts = text.rsplit(" ", dim)  # the numbers are the last dim fields; the rest is the word
        if len(parts) != dim + 1 or not parts[0]:
            raise InputError(path, f"expected a word and {dim} numbers, found {len(text.split()) - 1} numbers",
                             number)
        try:
            vector = np.array(parts[1:], dtype=np.float32)
        except ValueError:
            bad = next(p for p in parts[1:] if not _is_float(p))
            raise InputError(path, f"not a number: {bad[:20]!r}", number) from None
        if parts[0] in seen:
            repeated.append((number, parts[0]))
            continue
        seen.add(parts[0])
        words.append(parts[0])
        rows.append(vector)
        if max_words is not None and len(words) >= max_words:
            break
    if not words:
        raise InputError(path, "no vectors in the file")
    if max_words is None and header_count is not None and header_count != len(words) + len(repeated):
        raise InputError(path, f"header says {header_count} words but the file has {len(words) + len(repeated)} "
                               "(truncated file?)")
    shown = shown_path(path)
    if replaced:
        log.warning("%s:%d: invalid UTF-8 replaced by U+FFFD%s", shown, replaced[0], _in_all(len(replaced), "line"))
    if repeated:
        line, word = repeated[0]
        log.warning("%s:%d: the word %r appears again; its first vector is kept%s", shown, line, word,
                    _in_all(len(repeated), "repeated word"))
    return words, np.stack(rows)


def _in_all(n: int, what: str) -> str:
    return f" ({n} {what}s in all)" if n > 1 else ""


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def write_vec(path: PathLike, words: Sequence[str], vectors, precision: int = 6) -> None:
    """Write word2vec text (header ``count dim``), atomically; ``precision`` significant digits."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise XlfastError(f"write_vec: {len(words)} words but vectors of shape {tuple(vectors.shape)}")
    row_fmt = " ".join([f"%.{precision}g"] * vectors.shape[1])
    with atomic_open(path) as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors):
            if not word or any(c.isspace() for c in word):
                raise XlfastError(f"write_vec: word {word!r} is empty or holds whitespace; .vec cannot store it")
            f.write(word + " " + row_fmt % tuple(row.tolist()) + "\n")
