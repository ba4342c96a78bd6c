"""Shared fixtures: the real data (skipped cleanly where absent) and a writer for small input files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from xlfast.paths import data_dir as _data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real corpora (`XLFAST_DATA` or ../shared/data); the test is skipped if they are absent."""
    d = _data_dir()
    if not (d / "README.md").is_file():
        pytest.skip(f"real data not found at {d} (set XLFAST_DATA)")
    return d


@pytest.fixture
def write(tmp_path):
    """write("name", text_or_bytes) -> path of a new file in the test's temporary directory."""

    def _write(name: str, content) -> Path:
        path = tmp_path / name
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)
        return path

    return _write


@pytest.fixture
def straight_and_resumed(tmp_path):
    """straight_and_resumed(config, epochs) -> (trainer, trainer): a run trained `epochs` epochs straight
    through, and one trained one epoch then resumed from its checkpoint to `epochs`. `config(out, epochs)`
    gives each run its TrainConfig."""
    from xlfast.train import Trainer

    def train(config, epochs: int):
        straight = Trainer.new(config(tmp_path / "straight", epochs), log=_quiet)
        straight.fit()
        Trainer.new(config(tmp_path / "resumed", 1), log=_quiet).fit()
        resumed = Trainer.resume(tmp_path / "resumed", {"epochs": epochs}, log=_quiet)
        resumed.fit()
        return straight, resumed

    return train


def _quiet(message: str) -> None:
    pass


# Tests compare runs bit for bit (resume, shards). The thread-pool governor (xlfast.threads) changes thread
# counts with the machine's load, and float sums round differently at different thread counts, so the
# suite runs with fixed threads; tests/test_threads.py drives the governor explicitly.
os.environ.setdefault("XLFAST_GOVERNOR", "0")

# The suite checks the CPU path, bit for bit where it can; on a machine with a GPU the automatic choices would
# move work there. XLFAST_DEVICE=cpu keeps them on the CPU; tests/test_gpu.py puts its tensors and its
# training run on the GPU explicitly.
os.environ.setdefault("XLFAST_DEVICE", "cpu")
