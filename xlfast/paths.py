"""Where the shared real data lives: `XLFAST_DATA`, else `../shared/data` beside the repository."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    env = os.environ.get("XLFAST_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def data_file(*parts: str) -> Path:
    return data_dir().joinpath(*parts)
