"""What every command shares: the Rich consoles, one-line errors, JSON output, backend reporting."""
from __future__ import annotations

import json
import logging
from enum import Enum
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from typer.core import TyperGroup

from xlfast.errors import XlfastError

console = Console()


class Tokenize(str, Enum):
    """`--tokenize`: every command that reads text takes it (a run remembers its choice)."""

    default = "default"
    none = "none"

err_console = Console(stderr=True)


def _check_threads(value: Optional[int]) -> Optional[int]:
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be at least 1 (the number of CPU threads), got {value}")
    return value


# `--threads` on every command that computes: one budget for all of the process's thread pools.
ThreadsOption = Annotated[Optional[int], typer.Option(
    "--threads", callback=_check_threads, show_default=False,
    help="CPU threads for every thread pool (torch, Numba, BLAS, OpenMP). Default: the CPUs this process may "
         "use (affinity mask and cgroup quota); fewer while other work keeps the CPUs busy (XLFAST_GOVERNOR=0: fixed).",
)]


def apply_threads(threads: Optional[int]) -> dict:
    """Apply the thread budget once at start-up (xlfast.threads.configure); `-v` logs what was applied."""
    from xlfast import threads as budget

    return budget.configure(threads)


class XlfastGroup(TyperGroup):
    """Turns every XlfastError raised below it into one red line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except XlfastError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


def setup_logging(verbose: bool = False) -> None:
    """Kernel dispatch reports its backend choice through the 'xlfast' logger."""
    logger = logging.getLogger("xlfast")
    if not logger.handlers:
        handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def write_json(path: Path | str, obj: Any) -> None:
    """Write JSON atomically ('-' means stdout)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        return
    from xlfast.io import atomic_write_text

    atomic_write_text(path, text + "\n")


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)
