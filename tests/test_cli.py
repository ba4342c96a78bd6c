"""The `xlfast` command line: help, version, and bad input as one red line, exit 1 (usage errors: exit 2)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import typer
from typer.testing import CliRunner

from xlfast import __version__, io
from xlfast.cli.common import XlfastGroup
from xlfast.cli.main import app

runner = CliRunner()
COMMANDS = ["train", "align", "eval", "mine", "bench", "nn", "show", "demo"]
# every leaf command with its argv prefix
LEAVES = [["train"], ["align"], ["eval", "aer"], ["eval", "bli"], ["mine"], ["nn"], ["show"]]


def invoke(*args, target=app):
    return runner.invoke(target, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    """Exit 1, and stderr is exactly one line 'error: ...' holding every fragment; no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_help_lists_every_command():
    for flag in ("--help", "-h"):
        result = invoke(flag)
        assert result.exit_code == 0
        for command in COMMANDS:
            assert f" {command} " in result.output, command
    result = invoke()  # no arguments: help, not an error trace
    assert "Usage" in result.output and "Traceback" not in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"xlfast {__version__}"


@pytest.mark.parametrize("argv", LEAVES, ids=lambda a: " ".join(a))
def test_every_command_has_help_and_no_bare_traceback(argv):
    assert invoke(*argv, "--help").exit_code == 0
    # without arguments a command asks for them: a usage error, one line, exit 2
    result = invoke(*argv)
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Missing") and f"xlfast {' '.join(argv)} -h" in lines[0]


# ---------------------------------------------------------------------------------------------- demo
def test_demo_generates_and_validates(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "-o", out, "--sentences", 40, "--seed", 3, "--data-only")
    assert result.exit_code == 0, result.output
    assert "written and read back" in result.output and "Traceback" not in result.output
    corpus = io.read_parallel(out / "corpus.tsv")
    assert len(corpus) == 40 and corpus.fmt == "tsv"
    assert len(io.read_alignments(out / "gold.align").sure) == 40
    first = (out / "corpus.tsv").read_text()
    assert invoke("demo", "-o", out, "--sentences", 40, "--seed", 3, "--data-only").exit_code == 0
    assert (out / "corpus.tsv").read_text() == first  # same seed, same data


def test_demo_trains_aligns_and_scores(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "-o", out, "--sentences", 150, "--epochs", 2, "--dim", 32)
    assert result.exit_code == 0, result.output
    assert "1−AER" in result.output and "P@1" in result.output
    assert (out / "run" / "emb.src.vec").exists() and (out / "run" / "demo.align").exists()
    assert len((out / "run" / "demo.align").read_text().splitlines()) == 150


def test_demo_bad_arguments(write):
    not_a_dir = write("taken", "x\n")
    assert_one_line_error(invoke("demo", "-o", not_a_dir), str(not_a_dir), "not a directory")
    assert invoke("demo", "--sentences", 0).exit_code == 2  # Typer's range check


# ---------------------------------------------------------------------------------------------- bad input
# Every bad-input case of the io layer, raised inside a command, must reach the user as one line + exit 1.
probe = typer.Typer(cls=XlfastGroup)


@probe.command()
def parallel(path: Path, tgt: Optional[Path] = None):
    io.read_parallel(path, tgt)


@probe.command()
def mono(path: Path):
    io.read_mono(path)


@probe.command()
def dictionary(path: Path):
    io.read_dictionary(path)


@probe.command()
def alignments(path: Path, corpus: Path):
    pairs = io.read_parallel(corpus)
    io.read_alignments(path, src_lens=[len(s.split()) for s in pairs.src], tgt_lens=[len(t.split()) for t in pairs.tgt])


@probe.command()
def vec(path: Path):
    io.read_vec(path)


@pytest.mark.parametrize(
    "kind, content, where, words",
    [
        ("parallel", None, "", "no such file"),
        ("parallel", "", "", "file is empty"),
        ("parallel", "a\tb\nno separator\n", ":2", "no TAB separator"),
        ("parallel", "a ||| b\n ||| c\n", ":2", "empty source side"),
        ("parallel", "a\tb\nc\t\n", ":2", "empty target side"),
        ("parallel", b"a\tb\nc\td\xe9\n", ":2", "invalid UTF-8 at byte offset 7"),
        ("mono", "one\n\ntwo\n", ":2", "empty line"),
        ("dictionary", "a b\nc\n", ":2", "expected two words"),
        ("alignments", "0-0\n1-x\n", ":2", "malformed link '1-x'"),
        ("alignments", "0-0\n0-2\n", ":2", "target index 2 out of range"),
        ("vec", "2 3\na 1 2 3\nb 1 2\n", ":3", "expected a word and 3 numbers"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path, write, kind, content, where, words):
    path = tmp_path / "input" if content is None else write("input", content)
    extra = [write("corpus.tsv", "a\tb\nc\td\n")] if kind == "alignments" else []
    assert_one_line_error(invoke(kind, path, *extra, target=probe), f"{path}{where}: ", words)


def test_mismatched_two_files_name_both_in_one_line(write):
    src, tgt = write("c.src", "a\nb\nc\n"), write("c.tgt", "x\n")
    result = invoke("parallel", src, "--tgt", tgt, target=probe)
    assert_one_line_error(result, str(src), str(tgt), "has 3 lines", "has 1")


def test_long_messages_are_not_wrapped(write, tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 6)
    deep.mkdir(parents=True)
    path = deep / "corpus.tsv"
    path.write_text("no separator in this line at all, which is long enough to wrap an 80-column terminal\n")
    assert_one_line_error(invoke("parallel", path, target=probe), f"{path}:1: ")


def test_real_command_reports_bad_vec_in_one_line(write, tmp_path):
    """A command that is built (map reads .vec through the io layer) shows the same one-line error."""
    if "map" not in {c.name for c in app.registered_commands}:
        pytest.skip("xlfast map not registered")
    bad = write("bad.vec", "2 3\na 1 2 3\nb 1 2\n")
    good = write("good.vec", "1 3\nx 1 2 3\n")
    assert_one_line_error(invoke("map", bad, good, "--identical", "-o", tmp_path / "out"), f"{bad}:3: ")
