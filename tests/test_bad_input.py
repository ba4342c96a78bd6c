"""What users feed the commands, through the CLI: bad input and impossible requests are one line with the
right exit code (usage 2, data 1), no traceback and no file changed; special outputs (FIFOs, symbolic
links, devices, '-') are written as streams or through the link, never replaced; standard input, gzip,
`--json -`, wide tables and the alignment side outputs work as the field's tools do.

The matrix `ERRORS` is meant to grow: one line per case."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xlfast.cli.main import app
from xlfast.synthetic import make_pair

runner = CliRunner()


def invoke(*args, stdin: str | bytes | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin, catch_exceptions=False)


def error_line(result) -> str:
    """The one line a failed command prints; fails unless there is exactly one and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def snapshot(*folders: Path) -> dict:
    """Every entry below the folders: its kind and, for a file, a hash of its bytes."""
    seen = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = Path(root, name)
                st = path.lstat()
                digest = hashlib.sha1(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
                seen[str(path)] = (stat.S_IFMT(st.st_mode), digest)
    return seen


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny trained run (one epoch of a synthetic pair) and the inputs the cases read."""
    d = tmp_path_factory.mktemp("inputs")
    files = make_pair(n_sentences=120, vocab=30, seed=1).write(d)
    result = invoke("train", files["corpus"], "--langs", "src,tgt", "--tokenize", "none", "--subword", "none",
                    "--dim", "16", "--epochs", "1", "-o", d / "run", "--json", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 1  # `--json -`: the JSON alone on standard output
    lines = files["corpus"].read_text(encoding="utf-8").splitlines()[:6]
    (d / "six.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (d / "six.src").write_text("".join(line.split("\t")[0] + "\n" for line in lines), encoding="utf-8")
    (d / "six.tgt").write_text("".join(line.split("\t")[1] + "\n" for line in lines), encoding="utf-8")
    (d / "bad.tsv").write_text(lines[0] + "\nno separator here\n", encoding="utf-8")
    (d / "six.tsv.gz").write_bytes(gzip.compress((d / "six.tsv").read_bytes()))
    (d / "broken.tsv.gz").write_bytes((d / "six.tsv.gz").read_bytes()[:40])
    (d / "gold.align").write_text("0-0\n0-0\n", encoding="utf-8")
    (d / "notarun").mkdir()
    (d / "taken").write_text("a file where a folder is wanted\n", encoding="utf-8")
    (d / "existing.align").write_text("this must survive\n", encoding="utf-8")
    return {"dir": d, "run": d / "run", "corpus": files["corpus"], "lexicon": files["lexicon"]}


# One case per line: argv ({name} = a path of `env`, {tmp} = the test's own folder), exit code, fragments.
ERRORS = [
    ("output-impossible", ["align", "{run}", "{dir}/six.tsv", "-o", "/proc/xlfast-no-such/out.align"], 1,
     ["/proc/xlfast-no-such/out.align", "cannot write"]),
    ("output-is-a-directory", ["align", "{run}", "{dir}/six.tsv", "-o", "{tmp}"], 1, ["is a directory"]),
    ("bad-input-keeps-old-output", ["align", "{run}", "{dir}/bad.tsv", "-o", "{dir}/existing.align"], 1,
     ["bad.tsv:2:", "no TAB separator"]),
    ("two-outputs-on-stdout", ["align", "{run}", "{dir}/six.tsv", "-o", "-", "--json", "-"], 2,
     ["only one output can be standard output"]),
    ("two-inputs-on-stdin", ["align", "{run}", "-", "-", "-o", "{tmp}/o.align"], 2,
     ["only one input can be standard input"]),
    ("unknown-choice", ["align", "{run}", "{dir}/six.tsv", "-o", "{tmp}/o.align", "--emb", "bogus"], 2,
     ["'--emb'", "xlfast align -h"]),
    ("broken-gzip", ["align", "{run}", "{dir}/broken.tsv.gz", "-o", "{tmp}/o.align"], 1,
     ["broken.tsv.gz:", "broken gzip stream"]),
    ("nn-empty-word", ["nn", "{run}", "", "--lang", "src"], 2, ["'word'", "must not be empty"]),
    ("mine-knn-0", ["mine", "--src", "{dir}/six.src", "--tgt", "{dir}/six.tgt", "--model", "{run}", "-o",
                    "{tmp}/m.tsv", "--knn", "0"], 2, ["'--knn'"]),
    ("mine-mem-unreadable", ["mine", "--src", "{dir}/six.src", "--tgt", "{dir}/six.tgt", "--model", "{run}", "-o",
                             "{tmp}/m.tsv", "--mem", "lots"], 2, ["'--mem'", "cannot read memory budget 'lots'"]),
    ("mine-two-stdins", ["mine", "--src", "-", "--tgt", "-", "--model", "{run}", "-o", "{tmp}/m.tsv"], 2,
     ["only one input can be standard input"]),
    ("mine-iterations-negative", ["mine", "--src", "{dir}/six.src", "--tgt", "{dir}/six.tgt", "--model", "{run}",
                                  "-o", "{tmp}/m.tsv", "--iterations", "-1"], 2, ["'--iterations'"]),
    ("map-not-a-run", ["map", "{dir}/notarun"], 1, ["notarun: not an xlfast run directory"]),
    ("map-output-is-a-file", ["map", "{run}", "-o", "{dir}/taken"], 1, ["taken: exists and is not a directory"]),
    ("map-bad-normalisation", ["map", "{run}", "--normalize", "unit,l2"], 2, ["unknown normalisation step 'l2'"]),
    ("show-unknown-picture-format", ["show", "{run}", "--src", "a", "--tgt", "b", "-o", "{tmp}/p.bmpx"], 2,
     ["cannot draw a '.bmpx' picture"]),
    ("show-empty-sentence", ["show", "{run}", "--src", " ", "--tgt", "b", "-o", "{tmp}/p.png"], 2,
     ["'--src'", "must not be empty"]),
    ("aer-two-stdins", ["eval", "aer", "--gold", "-", "--pred", "-"], 2, ["only one input can be standard input"]),
    ("bli-one-vec", ["eval", "bli", "{run}/emb.src.vec", "--dict", "{lexicon}"], 2,
     ["give the source and the target .vec files"]),
]


@pytest.mark.parametrize("argv, code, fragments", [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_error_is_one_line_with_its_exit_code_and_changes_nothing(env, tmp_path, argv, code, fragments):
    argv = [a.format(tmp=tmp_path, **env) for a in argv]
    before = snapshot(env["dir"], tmp_path)
    result = invoke(*argv)
    assert result.exit_code == code, result.output
    line = error_line(result)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert snapshot(env["dir"], tmp_path) == before


# ---------------------------------------------------------------------------------------------- outputs
def aligned(env, tmp_path, *extra) -> list[str]:
    """The links `xlfast align` writes for the six pairs, into a plain new file."""
    out = tmp_path / "plain.align"
    result = invoke("align", env["run"], env["dir"] / "six.tsv", "-o", out, *extra)
    assert result.exit_code == 0, result.output
    return out.read_text().splitlines()


def test_a_fifo_is_written_as_a_stream_and_stays_a_fifo(env, tmp_path):
    fifo = tmp_path / "links.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    result = invoke("align", env["run"], env["dir"] / "six.tsv", "-o", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received[0].splitlines() == aligned(env, tmp_path)


def test_a_symlink_is_followed_and_its_target_replaced_in_its_own_folder(env, tmp_path):
    target_dir, link_dir = tmp_path / "real", tmp_path / "links"
    target_dir.mkdir()
    link_dir.mkdir()
    (target_dir / "out.align").write_text("old\n")
    (link_dir / "out.align").symlink_to(target_dir / "out.align")
    result = invoke("align", env["run"], env["dir"] / "six.tsv", "-o", link_dir / "out.align")
    assert result.exit_code == 0, result.output
    assert (link_dir / "out.align").is_symlink()
    assert (target_dir / "out.align").read_text().splitlines() == aligned(env, tmp_path)
    assert sorted(os.listdir(target_dir)) == ["out.align"] and sorted(os.listdir(link_dir)) == ["out.align"]


def test_a_link_to_a_character_device_is_written_through(env, tmp_path):
    null = tmp_path / "null"
    null.symlink_to(os.devnull)
    result = invoke("align", env["run"], env["dir"] / "six.tsv", "-o", null, "--scores", null)
    assert result.exit_code == 0, result.output
    assert null.is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert os.listdir(tmp_path) == ["null"]


def test_dash_is_standard_output_and_standard_input(env, tmp_path):
    expected = aligned(env, tmp_path)
    result = invoke("align", env["run"], env["dir"] / "six.tsv", "-o", "-")
    assert result.exit_code == 0 and result.stdout.splitlines() == expected
    # in a pipe like fast_align: pairs on standard input, links on standard output
    result = invoke("align", env["run"], "-", "-o", "-", stdin=(env["dir"] / "six.tsv").read_text())
    assert result.exit_code == 0 and result.stdout.splitlines() == expected
    result = invoke("align", env["run"], "-", env["dir"] / "six.tgt", "-o", "-",
                    stdin=(env["dir"] / "six.src").read_text())
    assert result.exit_code == 0 and result.stdout.splitlines() == expected
    gold = "\n".join(expected) + "\n"
    result = invoke("eval", "aer", "--gold", env["dir"] / "six.tsv.gz", "--pred", "-", stdin=gold)
    assert result.exit_code == 1 and "six.tsv.gz:1: malformed link" in error_line(result)  # gzip read as text
    (tmp_path / "gold.align").write_text(gold)
    result = invoke("eval", "aer", "--gold", tmp_path / "gold.align", "--pred", "-", "--json", "-", stdin=gold)
    assert result.exit_code == 0 and json.loads(result.stdout)["aer"] == 0.0


def test_gzip_inputs_read_as_the_plain_text(env, tmp_path):
    expected = aligned(env, tmp_path)
    out = tmp_path / "gz.align"
    result = invoke("align", env["run"], env["dir"] / "six.tsv.gz", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == expected
    vec = env["run"] / "emb.tgt.vec"
    (tmp_path / "tgt.vec.gz").write_bytes(gzip.compress(vec.read_bytes()))
    (tmp_path / "lex.gz").write_bytes(gzip.compress(env["lexicon"].read_bytes()))
    js = []
    for target, lexicon in ((vec, env["lexicon"]), (tmp_path / "tgt.vec.gz", tmp_path / "lex.gz")):
        result = invoke("eval", "bli", env["run"] / "emb.src.vec", target, "--dict", lexicon, "--json", "-")
        assert result.exit_code == 0, result.output
        js.append(json.loads(result.stdout)["csls"])
    assert js[0] == js[1]


# ---------------------------------------------------------------------------------------------- --json -
JSON_COMMANDS = [
    ("align", ["align", "{run}", "{dir}/six.tsv", "-o", "{tmp}/o.align", "--json", "-"], "links"),
    ("eval aer", ["eval", "aer", "--gold", "{dir}/gold.align", "--pred", "{dir}/gold.align", "--json", "-"], "aer"),
    ("eval bli", ["eval", "bli", "{run}", "--dict", "{lexicon}", "--json", "-"], "csls"),
    ("nn", ["nn", "{run}", "{word}", "--lang", "src", "--json", "-"], "neighbours"),
    ("map", ["map", "{run}", "-o", "{tmp}/mapped", "--iterations", "1", "--json", "-"], "history"),
    ("mine", ["mine", "--src", "{dir}/six.src", "--tgt", "{dir}/six.tgt", "--model", "{run}", "-o", "{tmp}/m.tsv",
              "--json", "-"], "pairs"),
]


@pytest.mark.parametrize("argv, key", [c[1:] for c in JSON_COMMANDS], ids=[c[0] for c in JSON_COMMANDS])
def test_json_to_stdout_is_json_alone(env, tmp_path, argv, key):
    word = (env["dir"] / "six.src").read_text().split()[0]
    result = invoke(*[a.format(tmp=tmp_path, word=word, **env) for a in argv])
    assert result.exit_code == 0, result.output
    assert key in json.loads(result.stdout)  # tables, notes and progress went to standard error
    assert result.stderr.strip()


def test_json_alone_and_backend_lines_only_with_v_in_a_real_process(env, tmp_path):
    """In a fresh process (the backend choice is announced once per process): `--json -` keeps standard
    output to the JSON, and the backend lines appear on standard error with `-v` only."""
    argv = [sys.executable, "-m", "xlfast.cli.main", "eval", "bli", str(env["run"] / "emb.src.vec"),
            str(env["run"] / "emb.tgt.vec"), "--dict", str(env["lexicon"]), "--json", "-"]
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["csls"]["n_eval"] > 0
    assert "using backend" not in quiet.stderr and "P@1" in quiet.stderr
    verbose = subprocess.run(argv[:3] + ["-v"] + argv[3:], capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0 and "csls: using backend" in verbose.stderr


# ---------------------------------------------------------------------------------------------- reading
def test_vec_with_a_repeated_word_warns_once_and_keeps_the_first(env, tmp_path):
    src = tmp_path / "src.vec"
    src.write_text("3 2\ncasa 1 0\ncasa 0 1\ngatto 0 1\n")
    tgt = tmp_path / "tgt.vec"
    tgt.write_text("2 2\nhouse 1 0\ncat 0 1\n")
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("casa house\ngatto cat\n")
    result = invoke("eval", "bli", src, tgt, "--dict", lexicon, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {src}:3: the word 'casa' appears again; its first vector is kept"]
    assert json.loads((tmp_path / "r.json").read_text())["nn"]["p@1"] == 100.0  # casa = (1, 0) = house


def test_mine_names_the_lines_it_skips(env, tmp_path):
    src = tmp_path / "src.txt"
    lines = (env["dir"] / "six.src").read_bytes().splitlines(keepends=True)
    src.write_bytes(lines[0] + b"caf\xe9\n" + b"\n" + b"".join(lines[1:]))
    result = invoke("mine", "--src", src, "--tgt", env["dir"] / "six.tgt", "--model", env["run"],
                    "-o", tmp_path / "m.tsv")
    assert result.exit_code == 0, result.output
    assert f"warning: {src}:2: invalid UTF-8 at byte offset" in result.stderr
    assert f"warning: {src}:3: empty line" in result.stderr


def test_mine_files_is_the_whole_command(env, tmp_path, caplog):
    """The library call behind `xlfast mine`: it reads, loads the encoder, says which, and mines what the
    command line mines."""
    from xlfast import mine

    src = tmp_path / "src.txt"
    src.write_bytes((env["dir"] / "six.src").read_bytes() + b"\n\n")
    said = []
    summary = mine.mine_files(src, env["dir"] / "six.tgt", tmp_path / "lib.tsv", model=env["run"], threshold=-1,
                              say=said.append)
    assert said == ["encoder: xlfast run (src-tgt), dim 16; search: xlfast.kernels.csls, 1 process(es)"]
    assert f"{src}: skipped 2 empty or undecodable line(s) in all" in caplog.messages
    assert summary.encoder == "xlfast run (src-tgt)" and summary.pairs > 0
    result = invoke("mine", "--src", src, "--tgt", env["dir"] / "six.tgt", "--model", env["run"],
                    "-o", tmp_path / "cli.tsv", "--threshold", "-1")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.tsv").read_text() == (tmp_path / "lib.tsv").read_text()


def test_mine_reads_standard_input_and_takes_both_lowercase_spellings(env, tmp_path):
    outputs = []
    for src, stdin, flag in ((env["dir"] / "six.src", None, "--no-lowercase"),
                             ("-", (env["dir"] / "six.src").read_text(), "--no-lowercase"),
                             (env["dir"] / "six.src", None, "--lowercase")):
        out = tmp_path / f"m{len(outputs)}.tsv"
        result = invoke("mine", "--src", src, "--tgt", env["dir"] / "six.tgt", "--model", env["run"], "-o", out,
                        "--threshold", "-1", flag, stdin=stdin)
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text())
    assert outputs[0] and outputs[0] == outputs[1]
    assert outputs[2] == outputs[0]  # the synthetic corpus is lowercase already: same words, same pairs


# ---------------------------------------------------------------------------------------------- rendering
def test_tables_in_a_pipe_are_never_cut(env, tmp_path):
    long = "a-word-long-enough-to-push-any-table-past-eighty-columns"
    src, tgt = tmp_path / "src.vec", tmp_path / "tgt.vec"
    src.write_text(f"2 2\n{long}-one 1 0\n{long}-two 0 1\n")
    tgt.write_text(f"2 2\n{long}-uno 1 0\n{long}-due 0 1\n")
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text(f"{long}-one {long}-uno\n{long}-two {long}-due\n")
    result = invoke("eval", "bli", src, tgt, "--dict", lexicon, "--details")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and f"{long}-one" in result.stdout and "rank CSLS" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) > 80


def test_show_writes_exactly_the_named_file_and_caps_long_sentences(env, tmp_path):
    pytest.importorskip("matplotlib")
    src, tgt = (env["dir"] / "six.src").read_text().splitlines()[0], (env["dir"] / "six.tgt").read_text().splitlines()[0]
    result = invoke("show", env["run"], "--src", src, "--tgt", tgt, "-o", tmp_path / "picture", "--no-lowercase")
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path) == ["picture"] and (tmp_path / "picture").read_bytes()[:4] == b"\x89PNG"
    long = " ".join([src] * 40)
    result = invoke("show", env["run"], "--src", long, "--tgt", tgt, "-o", tmp_path / "long.png")
    assert result.exit_code == 0, result.output
    header = (tmp_path / "long.png").read_bytes()[16:24]
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")
    assert len(long.split()) * 0.5 * 120 > height and max(width, height) <= 30 * 120


def test_show_draws_the_links_align_writes(env, tmp_path):
    pytest.importorskip("matplotlib")
    expected = aligned(env, tmp_path, "--sym", "union", "--static-weight", "0.3")
    src, tgt = (env["dir"] / "six.src").read_text().splitlines()[2], (env["dir"] / "six.tgt").read_text().splitlines()[2]
    result = invoke("show", env["run"], "--src", src, "--tgt", tgt, "-o", tmp_path / "p.png", "--sym", "union",
                    "--static-weight", "0.3")
    assert result.exit_code == 0, result.output
    shown = sorted(line.split("│")[1].strip() for line in result.stdout.splitlines()
                   if line.startswith("│") and "-" in line.split("│")[1])
    assert shown == sorted(expected[2].split())


# ---------------------------------------------------------------------------------------------- alignment outputs
@pytest.mark.parametrize("sym, combine", [("intersect", set.__and__), ("union", set.__or__)])
def test_both_directions_scores_and_word_pairs_belong_to_the_links(env, tmp_path, sym, combine):
    out = {name: tmp_path / name for name in ("links", "fwd", "rev", "scores", "pairs")}
    result = invoke("align", env["run"], env["dir"] / "six.tsv", "-o", out["links"], "--sym", sym, "--fwd",
                    out["fwd"], "--rev", out["rev"], "--scores", out["scores"], "--word-pairs", out["pairs"])
    assert result.exit_code == 0, result.output
    read = {name: path.read_text().splitlines() for name, path in out.items()}
    assert len(read["links"]) == len(read["fwd"]) == len(read["rev"]) == len(read["scores"]) == 6
    words = [line.split("\t") for line in (env["dir"] / "six.tsv").read_text().splitlines()]
    pairs = iter(read["pairs"])
    for links, fwd, rev, scores, (src, tgt) in zip(read["links"], read["fwd"], read["rev"], read["scores"], words):
        assert set(links.split()) == combine(set(fwd.split()), set(rev.split()))
        assert len(scores.split()) == len(links.split())
        for link in links.split():
            i, j = map(int, link.split("-"))
            assert next(pairs) == f"{src.split()[i]}\t{tgt.split()[j]}"
    assert next(pairs, None) is None


def test_one_spelling_for_lowercase(env, tmp_path):
    for flag in ("--lowercase", "--no-lowercase"):
        assert invoke("align", env["run"], env["dir"] / "six.tsv", "-o", tmp_path / "o", flag).exit_code == 0
    assert invoke("align", env["run"], env["dir"] / "six.tsv", "-o", tmp_path / "o", "--keep-case").exit_code == 2


def test_the_profiler_of_bench_train_prints_nothing_of_its_own():
    """`lookup_share` profiles training steps; kineto's start/stop lines must not reach the output."""
    code = ("import torch, xlfast.bench.train as bench\n"
            "bench._plan = lambda trainer: [(0, None)]\n"
            "bench._step = lambda trainer, item: torch.ones(64, 64) @ torch.ones(64, 64)\n"
            "bench.lookup_share(None)\n")
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "USDT" not in done.stderr and "profiler_start" not in done.stderr, done.stderr
