"""The run directory (xlfast.rundir): names, damaged files as one line through every command that loads a
run, atomic writes by the background checkpoint writer."""
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from xlfast.cli.main import app
from xlfast.corpora import CorpusSpec
from xlfast.errors import XlfastError
from xlfast.run import Run
from xlfast.rundir import CheckpointWriter, RunDir, epoch_ends
from xlfast.synthetic import make_pair
from xlfast.tokenize import TokenizerSpec
from xlfast.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("rundir")
    files = make_pair(n_sentences=60, vocab=20, seed=5).write(d / "data")
    cfg = TrainConfig(corpora=[CorpusSpec(str(files["corpus"]), None, ("src", "tgt"))], out=str(d / "run"), dim=16,
                      epochs=1, spm_vocab=100, tokenizer=TokenizerSpec("none"))
    Trainer.new(cfg, log=lambda m: None).fit()
    return d / "run", files["corpus"]


@pytest.fixture
def run_copy(trained, tmp_path):
    return shutil.copytree(trained[0], tmp_path / "run")


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_names_and_languages(trained, tmp_path):
    run_dir, _ = trained
    rd = RunDir(run_dir)
    assert rd.is_run() and rd.holds_trained_run() and rd.langs() == ["src", "tgt"]
    assert rd.vec_path("tgt") == run_dir / "emb.tgt.vec" and rd.vec_path("tgt").is_file()
    assert rd.read_vocab("src")[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert [r["epoch"] for r in rd.read_log()] == [1]
    # a folder of vectors without a configuration: its languages are its emb.<lang>.vec files
    shutil.copy(rd.vec_path("src"), tmp_path / "emb.aa.vec")
    shutil.copy(rd.vec_path("tgt"), tmp_path / "emb.bb.vec")
    assert not RunDir(tmp_path).is_run() and RunDir(tmp_path).langs() == ["aa", "bb"]


def one_error_line(result, names: str):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], result.output


def test_a_truncated_model_is_one_line_for_align_and_nn(trained, run_copy, tmp_path):
    _, corpus = trained
    truncate(run_copy / "model.pt")
    expected = f"error: {run_copy / 'model.pt'}: not a readable checkpoint (truncated?)"
    one_error_line(CliRunner().invoke(app, ["align", str(run_copy), str(corpus), "-o", str(tmp_path / "a")]), expected)
    one_error_line(CliRunner().invoke(app, ["nn", str(run_copy), "w", "--lang", "src"]), expected)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("content, why", [
    ('{"train": {', "JSONDecodeError"),
    ("[1, 2]", "no 'train' and 'model' settings"),
    ("\xff\xfe not json", "UnicodeDecodeError"),
])
def test_a_damaged_config_is_one_line(trained, run_copy, tmp_path, content, why):
    _, corpus = trained
    (run_copy / "config.json").write_text(content, encoding="latin-1")
    expected = f"{run_copy / 'config.json'}: not a readable run configuration ({why})"
    one_error_line(CliRunner().invoke(app, ["align", str(run_copy), str(corpus), "-o", str(tmp_path / "a")]), expected)
    one_error_line(CliRunner().invoke(app, ["train", "-o", str(run_copy), "--resume"]), expected)


def every_command_that_loads_a_run(run_dir, corpus, tmp_path):
    """The command lines of align, nn, eval bli, show and mine on `run_dir` (each writes under tmp_path)."""
    words = tmp_path / "words.txt"
    words.write_text("a b\n", encoding="utf-8")
    side = tmp_path / "side.txt"
    side.write_text("a b c\n", encoding="utf-8")
    return {
        "align": ["align", str(run_dir), str(corpus), "-o", str(tmp_path / "out.align")],
        "nn": ["nn", str(run_dir), "w", "--lang", "src"],
        "eval bli": ["eval", "bli", str(run_dir), "--dict", str(words)],
        "show": ["show", str(run_dir), "--src", "a b", "--tgt", "c d", "-o", str(tmp_path / "out.png")],
        "mine": ["mine", "--src", str(side), "--tgt", str(side), "--model", str(run_dir), "-o", str(tmp_path / "out.tsv")],
    }


@pytest.mark.parametrize("command", ["align", "nn", "eval bli", "show", "mine"])
@pytest.mark.parametrize("damaged, expected", [
    ("model.pt", "{run}/model.pt: not a readable checkpoint (truncated?)"),
    ("config.json", "{run}/config.json: not a readable run configuration (JSONDecodeError)"),
])
def test_every_command_names_a_damaged_run_file_in_one_line(trained, run_copy, tmp_path, command, damaged, expected):
    _, corpus = trained
    truncate(run_copy / damaged)
    argv = every_command_that_loads_a_run(run_copy, corpus, tmp_path)[command]
    one_error_line(CliRunner().invoke(app, argv), expected.format(run=run_copy))
    assert not list(tmp_path.glob("out.*"))


def test_map_names_what_the_directory_lacks(run_copy, tmp_path):
    """map reads a run's languages and vectors through RunDir: a folder that is not a run says so."""
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(CliRunner().invoke(app, ["map", str(empty)]), f"{empty}: not an xlfast run directory")
    truncate(run_copy / "config.json")
    one_error_line(CliRunner().invoke(app, ["map", str(run_copy)]),
                   f"{run_copy / 'config.json'}: not a readable run configuration")
    assert not (run_copy / "mapped").exists()


def test_a_model_that_does_not_fit_its_configuration_is_one_line(run_copy):
    doc = json.loads((run_copy / "config.json").read_text())
    doc["model"]["dim"] = 32  # the saved tensors are 16 wide
    (run_copy / "config.json").write_text(json.dumps(doc))
    with pytest.raises(XlfastError, match=r"model\.pt: does not match config\.json"):
        Run.load(run_copy)


def test_a_truncated_checkpoint_is_one_line_for_resume_and_changes_nothing(run_copy):
    truncate(run_copy / "checkpoint.pt")
    before = {str(p.relative_to(run_copy)): p.read_bytes() for p in run_copy.rglob('*') if p.is_file()}
    r = CliRunner().invoke(app, ["train", "-o", str(run_copy), "--resume", "--epochs", "2"])
    one_error_line(r, f"error: {run_copy / 'checkpoint.pt'}: not a readable checkpoint (truncated?)")
    assert {str(p.relative_to(run_copy)): p.read_bytes() for p in run_copy.rglob('*') if p.is_file()} == before


def test_missing_run_files_name_themselves(run_copy):
    (run_copy / "vocab.tgt.txt").unlink()
    with pytest.raises(XlfastError, match=r"vocab\.tgt\.txt: missing from the run directory"):
        Run.load(run_copy)
    (run_copy / "model.pt").unlink()
    with pytest.raises(XlfastError, match=r"no model\.pt yet"):
        Run.load(run_copy)
    with pytest.raises(XlfastError, match=r"not an xlfast run directory \(no config\.json\)"):
        Run.load(run_copy / "nowhere")


def test_the_checkpoint_writer_writes_in_order_and_reports_failures(tmp_path):
    rd = RunDir(tmp_path)
    with CheckpointWriter(rd) as writer:
        state = {"model": {"w": torch.arange(4.0)}, "epoch": 1}
        writer.write(writer.snapshot(state), "checkpoint.pt")
        state["model"]["w"] += 1  # training goes on: the snapshot was copied
        writer.wait()
    assert torch.equal(rd.load_state("checkpoint.pt")["model"]["w"], torch.arange(4.0))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(XlfastError, match="cannot write a checkpoint"):
        with CheckpointWriter(RunDir(tmp_path / "checkpoint.pt")) as writer:  # a file, not a folder
            writer.write({"model": {}}, "x.pt")
            writer.wait()


def test_a_log_line_cut_short_by_a_kill_is_left_out(tmp_path):
    rd = RunDir(tmp_path)
    rd.append_log({"epoch": 1, "loss": 2.0})
    rd.append_log({"epoch": 2, "loss": 1.5})
    with open(rd.log_path, "a") as f:
        f.write('{"epoch": 3, "lo')  # killed while appending epoch 3
    assert [r["epoch"] for r in rd.read_log()] == [1, 2]
    rd.truncate_log(1)
    assert rd.log_path.read_text() == '{"epoch": 1, "loss": 2.0}\n'
    rd.log_path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(XlfastError, match=r"log\.jsonl:2: not a JSON record"):
        rd.read_log()


def test_a_resumed_run_keeps_the_log_up_to_its_checkpoint(tmp_path):
    """Evaluations within an epoch: a checkpoint taken at a step keeps the lines up to that step; one taken
    at an epoch's end (step None) keeps the whole epoch."""
    rd = RunDir(tmp_path)
    points = [(1, 5), (1, 10), (1, 15), (2, 5), (2, 10), (2, 15)]
    for epoch, step in points:
        rd.append_log({"epoch": epoch, "step": step, "epoch_steps": 15})
    rd.truncate_log(2, 5)
    assert [(r["epoch"], r["step"]) for r in rd.read_log()] == points[:4]
    assert [(r["epoch"], r["step"]) for r in epoch_ends(rd.read_log())] == [(1, 15)]
    rd.truncate_log(1)
    assert [(r["epoch"], r["step"]) for r in rd.read_log()] == points[:3]
