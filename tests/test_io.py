"""The I/O layer: round trips of every format, every bad-input case, and the shared real data."""
from __future__ import annotations

import os

import numpy as np
import pytest

from xlfast.errors import InputError, XlfastError
from xlfast.io import (
    atomic_open,
    atomic_write_text,
    iter_mono,
    iter_parallel,
    parse_pharaoh_line,
    read_alignments,
    read_dictionary,
    read_mono,
    read_parallel,
    read_vec,
    write_alignments,
    write_vec,
)


def error_of(fn, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------------------------------------- atomic
def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "ünïcode second\n")
    assert target.read_text(encoding="utf-8") == "ünïcode second\n"
    assert sorted(os.listdir(target.parent)) == ["out.txt"]


def test_atomic_open_keeps_old_file_when_the_block_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_open_binary(tmp_path):
    with atomic_open(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


# ---------------------------------------------------------------------------------------------- parallel
@pytest.mark.parametrize(
    "name, text, fmt",
    [
        ("c.tsv", "a b\tx y\nc\tz\n", "tsv"),
        ("c.txt", "a b ||| x y\nc ||| z\n", "fastalign"),
        ("crlf.tsv", "a b\tx y\r\nc\tz\r\n", "tsv"),
        ("bom.txt", "\ufeffa b ||| x y\nc|||z", "fastalign"),
    ],
)
def test_read_parallel_one_file_formats(write, name, text, fmt):
    corpus = read_parallel(write(name, text))
    assert corpus.fmt == fmt
    assert corpus.src == ["a b", "c"]
    assert corpus.tgt == ["x y", "z"]
    assert corpus.lines == [1, 2]
    assert corpus.skipped == 0 and len(corpus) == 2


def test_read_parallel_two_files_and_streaming(write):
    src = write("c.src", "ein Haus\nzwei\n")
    tgt = write("c.tgt", "a house\ntwo\n")
    corpus = read_parallel(src, tgt)
    assert corpus.fmt == "two-files" and corpus.tgt_path == str(tgt)
    assert list(zip(corpus.src, corpus.tgt)) == [("ein Haus", "a house"), ("zwei", "two")]
    assert list(iter_parallel(src, tgt)) == [(1, "ein Haus", "a house"), (2, "zwei", "two")]


def test_iter_parallel_streams_lazily(write):
    """Pairs come out before later lines are read: a bad line 3 is only met when reading reaches it."""
    reader = iter_parallel(write("c.tsv", "a\tb\nc\td\nbroken\n"))
    assert next(reader) == (1, "a", "b") and next(reader) == (2, "c", "d")
    with pytest.raises(InputError) as info:
        next(reader)
    assert info.value.line == 3


def test_fmt_auto_decides_from_first_line_then_every_line_must_agree(write):
    path = write("mixed.txt", "a ||| b\nc\td\n")
    err = error_of(read_parallel, path)
    assert err.line == 2 and "'|||'" in err.message
    path = write("mixed.tsv", "a\tb\nc ||| d\n")
    err = error_of(read_parallel, path)
    assert err.line == 2 and "TAB" in err.message and "fast_align" in err.message


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("a\tb\nno separator here\n", 2, "no TAB"),
        ("a\tb\n\tb\n", 2, "empty source side"),
        ("a\tb\nc\t  \n", 2, "empty target side"),
        ("a\tb\nc\td\te\n", 2, "exactly one"),
        ("a\tb\n\nc\td\n", 2, "empty line"),
        ("a ||| b ||| c\n", 1, "exactly one"),
        ("plain text\n", 1, "cannot tell the format"),
    ],
)
def test_bad_parallel_lines_name_file_and_line(write, text, line, words):
    path = write("bad.txt", text)
    err = error_of(read_parallel, path)
    assert err.path == str(path) and err.line == line and words in err.message
    assert str(err).startswith(f"{path}:{line}: ")


def test_invalid_utf8_gives_line_and_byte_offset(write):
    path = write("bad.tsv", b"a\tb\nc\t\xff\xfed\n")
    err = error_of(read_parallel, path)
    assert err.line == 2 and "invalid UTF-8 at byte offset 6" in err.message and "0xff" in err.message


def test_skip_bad_lines_counts_instead(write):
    path = write("bad.tsv", b"a\tb\nno tab\n\tonly target\nc\t\xff\ne\tf\n")
    corpus = read_parallel(path, skip_bad_lines=True)
    assert corpus.src == ["a", "e"] and corpus.lines == [1, 5] and corpus.skipped == 3
    reader = iter_parallel(path, skip_bad_lines=True)
    assert [n for n, _, _ in reader] == [1, 5] and reader.skipped == 3


def test_all_lines_bad_is_still_an_error(write):
    err = error_of(read_parallel, write("bad.tsv", "x\ny\n"), skip_bad_lines=True)
    assert "no sentence pairs" in err.message and "2 bad line(s) skipped" in err.message


def test_missing_and_empty_files(write, tmp_path):
    err = error_of(read_parallel, tmp_path / "nope.tsv")
    assert err.path == str(tmp_path / "nope.tsv") and "no such file" in err.message
    err = error_of(read_parallel, write("empty.tsv", ""))
    assert "file is empty" in err.message
    err = error_of(read_parallel, write("a.src", "x\n"), tmp_path / "nope.tgt")
    assert err.path == str(tmp_path / "nope.tgt")
    err = error_of(read_mono, tmp_path)
    assert "directory" in err.message


def test_two_files_with_different_line_counts_name_both(write):
    src = write("c.src", "a\nb\nc\n")
    tgt = write("c.tgt", "x\ny\n")
    err = error_of(read_parallel, src, tgt)
    assert str(src) in str(err) and str(tgt) in err.message and "has 3 lines" in err.message and "has 2" in err.message
    err = error_of(read_parallel, tgt, src, skip_bad_lines=True)  # never skippable
    assert "has 2 lines" in err.message and "has 3" in err.message


def test_two_files_bad_line_names_the_file_it_is_in(write):
    src = write("c.src", "a\nb\n")
    tgt = write("c.tgt", b"x\n\xc3\n")
    err = error_of(read_parallel, src, tgt)
    assert err.path == str(tgt) and err.line == 2 and "invalid UTF-8" in err.message
    err = error_of(read_parallel, src, write("d.tgt", "x\n \n"))
    assert err.line == 2 and "empty target side" in err.message


def test_format_arguments_are_checked(write):
    path = write("c.tsv", "a\tb\n")
    with pytest.raises(XlfastError):
        read_parallel(path, fmt="csv")
    with pytest.raises(XlfastError):
        read_parallel(path, path, fmt="tsv")
    assert read_parallel(path, fmt="tsv").src == ["a"]
    err = error_of(read_parallel, path, fmt="fastalign")
    assert "'|||'" in err.message


# ---------------------------------------------------------------------------------------------- mono
def test_read_mono_keeps_line_numbers_and_skips_when_asked(write):
    path = write("m.txt", b"one two\n\nthree\n\xff\n")
    err = error_of(read_mono, path)
    assert err.line == 2 and "empty line" in err.message
    sents = read_mono(path, skip_bad_lines=True)
    assert sents == ["one two", "three"] and sents.lines == [1, 3] and sents.skipped == 2
    assert list(iter_mono(write("n.txt", "a\nb"))) == [(1, "a"), (2, "b")]


# ---------------------------------------------------------------------------------------------- dictionaries
def test_read_dictionary_whitespace_tab_several_translations(write):
    path = write("d.txt", "casa house\ncasa home\n\nvía\tway\n  perro   dog \ncasa house\n")
    assert read_dictionary(path) == [("casa", "house"), ("casa", "home"), ("vía", "way"), ("perro", "dog")]


@pytest.mark.parametrize("text, line", [("a b\nc\n", 2), ("a b c\n", 1), ("a\t\n", 1), ("\n\n", None)])
def test_bad_dictionary_lines(write, text, line):
    err = error_of(read_dictionary, write("d.txt", text))
    assert err.line == line


# ---------------------------------------------------------------------------------------------- alignments
def test_parse_pharaoh_line_sure_and_possible():
    sure, possible = parse_pharaoh_line("0-1 2p3 4-5p 6?7 0-1")
    assert sure == {(0, 1)}
    assert possible == {(0, 1), (2, 3), (4, 5), (6, 7)}
    for bad in ("1-", "a-b", "1-2-3", "1p2p", "-1-2", "1:2"):
        with pytest.raises(ValueError, match="malformed link"):
            parse_pharaoh_line(bad)


def test_read_alignments_zero_based_and_blank_lines(write):
    al = read_alignments(write("g.align", "0-0 1-2p\n\n2-1\n"))
    assert al.base == 0 and "index 0" in al.how
    assert al.sure == [{(0, 0)}, set(), {(2, 1)}]
    assert al.possible == [{(0, 0), (1, 2)}, set(), {(2, 1)}]
    assert all(s <= p for s, p in zip(al.sure, al.possible))


def test_read_alignments_one_based_detection(write):
    # an index equal to the sentence length can only be 1-based
    al = read_alignments(write("a", "1-1 3-2\n"), src_lens=[3], tgt_lens=[2])
    assert al.base == 1 and "sentence length" in al.how and al.sure == [{(0, 0), (2, 1)}]
    # many links and never a 0: 1-based
    many = "\n".join(" ".join(f"{i}-{i}" for i in range(1, 6)) for _ in range(5)) + "\n"
    al = read_alignments(write("b", many))
    assert al.base == 1 and "no index 0 among 25 links" in al.how
    # few links and no 0: ambiguous; 0-based by convention and the message says so
    al = read_alignments(write("c", "1-1 2-2\n"))
    assert al.base == 0 and "cannot tell" in al.how
    # overridden
    al = read_alignments(write("d", "1-1 2-2\n"), base=1)
    assert al.base == 1 and "as requested" in al.how and al.sure == [{(0, 0), (1, 1)}]


def test_read_alignments_bad_input(write):
    err = error_of(read_alignments, write("a", "0-0\n1-x\n"))
    assert err.line == 2 and "malformed link '1-x'" in err.message
    err = error_of(read_alignments, write("b", "0-0\n0-4\n"), src_lens=[1, 1], tgt_lens=[1, 4])
    assert err.line == 2 and "target index 4 out of range" in err.message and "4 words" in err.message
    err = error_of(read_alignments, write("c", "0-0\n"), src_lens=[1, 1])
    assert "has 1 lines but the corpus has 2" in err.message
    err = error_of(read_alignments, write("d", "1-1\n0-2\n"), base=1)
    assert err.line == 2 and "index 0" in err.message
    err = error_of(read_alignments, write("e", b"0-0\n\xfe\n"))
    assert err.line == 2 and "invalid UTF-8" in err.message
    with pytest.raises(XlfastError):
        read_alignments(write("f", "0-0\n"), base=2)


def test_read_wpt_alignment_table(write):
    table = "1 1 1 S\n1 2 3 P\n1 0 2 S\n\n3 2 2 S 0.9\n"
    al = read_alignments(write("wpt", table))
    assert al.base == 1 and "WPT" in al.how
    assert al.sure == [{(0, 0)}, set(), {(1, 1)}]
    assert al.possible == [{(0, 0), (1, 2)}, set(), {(1, 1)}]
    al = read_alignments(write("wpt2", table), src_lens=[2, 1, 2, 5], tgt_lens=[3, 1, 2, 5])
    assert len(al) == 4 and al.sure[3] == set()
    err = error_of(read_alignments, write("wpt3", table), src_lens=[2, 1, 2], tgt_lens=[2, 1, 2])
    assert err.line == 2 and "target index 3 out of range" in err.message
    err = error_of(read_alignments, write("wpt4", "1 1 1 S\n1-2\n"))
    assert err.line == 2 and "like the lines above" in err.message
    err = error_of(read_alignments, write("wpt5", table), src_lens=[2, 1])
    assert err.line == 5 and "sentence 3 but the corpus has 2" in err.message


def test_write_alignments_round_trip(tmp_path):
    links = [{(2, 1), (0, 0), (10, 3)}, set(), [(1, 1)]]
    path = tmp_path / "out.align"
    write_alignments(path, links)
    assert path.read_text() == "0-0 2-1 10-3\n\n1-1\n"
    al = read_alignments(path, base=0)
    assert al.sure == [set(s) for s in links] and al.possible == al.sure


# ---------------------------------------------------------------------------------------------- .vec
def test_vec_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    words = ["casa", "पुटिनको", "l'acqua", "x"]
    vectors = rng.standard_normal((4, 7)).astype(np.float32)
    path = tmp_path / "e.vec"
    write_vec(path, words, vectors)
    assert path.read_text(encoding="utf-8").splitlines()[0] == "4 7"
    got_words, got = read_vec(path)
    assert got_words == words and got.dtype == np.float32 and got.shape == (4, 7)
    np.testing.assert_allclose(got, vectors, rtol=1e-5, atol=1e-6)
    words2, got2 = read_vec(path, max_words=2)
    assert words2 == words[:2] and got2.shape == (2, 7)


def test_read_vec_without_header_trailing_space_and_tolerant_utf8(write):
    path = write("e.vec", b"a 1 2 \nb\xff 3 4\na 9 9\n")
    words, vecs = read_vec(path)
    assert words == ["a", "b\ufffd"]
    np.testing.assert_array_equal(vecs, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("2 3\na 1 2 3\nb 1 2\n", 3, "expected a word and 3 numbers"),
        ("2 3\na 1 2 3\nb 1 x 3\n", 3, "not a number"),
        ("3 2\na 1 2\nb 1 2\n", None, "header says 3 words"),
        ("2 2\na 1 2\n\n", 3, "empty line"),
    ],
)
def test_bad_vec_files(write, text, line, words):
    err = error_of(read_vec, write("e.vec", text))
    assert err.line == line and words in err.message


def test_write_vec_refuses_unstorable_words(tmp_path):
    with pytest.raises(XlfastError):
        write_vec(tmp_path / "e.vec", ["two words"], np.zeros((1, 2)))
    with pytest.raises(XlfastError):
        write_vec(tmp_path / "e.vec", ["a", "b"], np.zeros((1, 2)))
    assert not (tmp_path / "e.vec").exists()


# ---------------------------------------------------------------------------------------------- real data
def test_real_data_formats(data_dir):
    grk = read_parallel(data_dir / "grk-it/align.gr", data_dir / "grk-it/align.it")
    assert len(grk) == 330 and grk.fmt == "two-files"
    gold = read_alignments(data_dir / "grk-it/align.gr-it.gold",
                           src_lens=[len(s.split()) for s in grk.src], tgt_lens=[len(t.split()) for t in grk.tgt])
    assert gold.base == 0 and sum(map(len, gold.sure)) == 2498 and gold.possible == gold.sure

    enfr = read_parallel(data_dir / "align-gold/enfr.src-tgt")
    assert len(enfr) == 447 and enfr.fmt == "fastalign" and enfr.src[0] == "2 ."
    src_lens = [len(s.split()) for s in enfr.src]
    tgt_lens = [len(t.split()) for t in enfr.tgt]
    gold = read_alignments(data_dir / "align-gold/enfr.gold", src_lens=src_lens, tgt_lens=tgt_lens)
    assert gold.base == 1 and gold.sure[0] == {(1, 1), (0, 0)}
    n_sure, n_possible = sum(map(len, gold.sure)), sum(map(len, gold.possible))
    assert 0 < n_sure < n_possible

    bli = read_dictionary(data_dir / "shp-es/bli.dev.tsv")
    assert len({s for s, _ in bli}) == 220
    assert len(read_mono(data_dir / "ne-en/dev.ne")) == 2559
