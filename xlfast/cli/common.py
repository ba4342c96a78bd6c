"""What every command shares: the Rich consoles, one-line errors, choices and options, JSON output, logging.

The contract every command keeps by using these:

* a usage error (an option that does not parse or combine) is one line and exit code 2; a problem with the
  data (XlfastError, InputError) is one line and exit code 1; never a traceback;
* with `--json -` standard output carries the JSON alone: tables, notes and progress go to standard error
  (register the command with `cls=XlfastCommand` and declare the option as `JsonOption`);
* a table is never cut to fit: off a terminal (a pipe, a file) lines are as wide as they need to be;
* the backend and thread lines of the 'xlfast' logger appear with `-v` only; warnings always.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator, Optional

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import Progress, ProgressColumn
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from xlfast.errors import UsageError, XlfastError
from xlfast.io import is_stdio
from xlfast.tokenize import SPLITTERS, TOKENIZERS

# Click's exceptions, wherever this Typer takes Click from (newer versions carry their own copy)
_click_errors = sys.modules[typer.BadParameter.__module__]
OFF_TERMINAL_WIDTH = 1000  # columns of a pipe or a file: wide enough that no table is ever cut


class _Console(Console):
    """A Rich console that lays out for where it writes now: a terminal's width on a terminal, and off one
    (a pipe, a file) as wide as a line needs, so no number or header ends as `1.2…`."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(OFF_TERMINAL_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    @contextmanager
    def on_stderr(self) -> Iterator[None]:
        """Print to standard error for a while (standard output carries JSON alone meanwhile)."""
        was = self.stderr
        self.stderr = True
        self._color_system = self._detect_color_system()  # colours as the new stream allows
        try:
            yield
        finally:
            self.stderr = was
            self._color_system = self._detect_color_system()


console = _Console()
err_console = _Console(stderr=True)


def choices(name: str, values: Iterable[Any]) -> type[Enum]:
    """A Typer choice type whose members are a tuple the core already has (one list of names)."""
    return Enum(name, {str(v): str(v) for v in values}, type=str)


Tokenize = choices("Tokenize", TOKENIZERS)  # xlfast train: auto decides from the corpora
Splitter = choices("Splitter", SPLITTERS)  # the other commands: the run's choice, or one they are given


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

JsonOption = Annotated[Optional[Path], typer.Option(
    "--json", show_default=False,
    help="Also write the results as JSON here; '-': standard output, with tables and notes on standard error.",
)]

# Choosing languages and tokenisation of a trained run: every command that reads a run spells them so.
SrcLangOption = Annotated[Optional[str], typer.Option(
    "--src-lang", show_default=False, help="Source language of the run. Default: its first.")]
TgtLangOption = Annotated[Optional[str], typer.Option(
    "--tgt-lang", show_default=False, help="Target language of the run. Default: its other one.")]
TokenizeOverride = Annotated[Optional[Splitter], typer.Option(
    "--tokenize", show_default=False,
    help="Override the run's tokenizer (none: split on spaces, for pre-tokenised text and gold data).")]
LowercaseOverride = Annotated[Optional[bool], typer.Option(
    "--lowercase/--no-lowercase", show_default=False, help="Override the run's lowercasing.")]


def apply_threads(threads: Optional[int]) -> dict:
    """Apply the thread budget once at start-up (xlfast.threads.configure); `-v` logs what was applied."""
    from xlfast import threads as budget

    return budget.configure(threads)


def parsed_by(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A Typer callback that checks an option with the core's own parser: what it rejects is a usage error
    (exit 2) before any work, and the option keeps the value as given."""

    def check(value):
        if value is not None:
            try:
                parse(value)
            except XlfastError as exc:
                raise typer.BadParameter(str(exc)) from None
        return value

    return check


def nonblank(value: Optional[str]) -> Optional[str]:
    """A Typer callback for a text argument that must say something."""
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


def _say_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class XlfastGroup(TyperGroup):
    """Turns every error raised below it into one line on standard error: usage errors (a bad option
    value, options that do not combine) exit 2, errors in the data exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _click_errors.UsageError as exc:
            if isinstance(exc, getattr(_click_errors, "NoArgsIsHelpError", ())):
                raise  # a bare `xlfast eval` shows its help
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            _say_error(f"{exc.format_message()} (see '{where} -h')")
            raise typer.Exit(2) from None
        except UsageError as exc:
            _say_error(str(exc))
            raise typer.Exit(2) from None
        except XlfastError as exc:
            _say_error(str(exc))
            raise typer.Exit(1) from None
        except BrokenPipeError:
            _quiet_stdout()
            raise typer.Exit(141) from None  # 128 + SIGPIPE: the reader went away, as `head` makes it
        except OSError as exc:  # the machine's side (a full disk, a permission): still one line
            where = f"{exc.filename}: " if exc.filename else ""
            _say_error(f"{where}{exc.strerror or exc}")
            raise typer.Exit(1) from None


def _quiet_stdout() -> None:
    """Point standard output at /dev/null so that flushing it at exit does not complain once more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test runner's stream)
        pass


class XlfastCommand(TyperCommand):
    """Every xlfast command: with `--json -`, standard output carries the JSON alone for the whole command
    (the shared `console` prints its tables and notes on standard error meanwhile)."""

    def invoke(self, ctx):
        json_to_stdout = any("--json" in getattr(p, "opts", ()) and is_stdio(ctx.params.get(p.name))
                             for p in self.params)
        if not json_to_stdout:
            return super().invoke(ctx)
        with console.on_stderr():
            return super().invoke(ctx)


def progress(*columns: ProgressColumn | str, transient: bool = True) -> Progress:
    """A progress display on standard error; off a terminal (a log file, a pipe) it stays silent."""
    return Progress(*columns, console=err_console, transient=transient, disable=not err_console.is_terminal)


class _LogToConsole(logging.Handler):
    """Records of the 'xlfast' logger on standard error: warnings as `warning: ...` lines, the rest as they are."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.WARNING:
            err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
        else:
            err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def setup_logging(verbose: Optional[bool] = None) -> None:
    """Route the 'xlfast' logger to standard error. `verbose` (the `-v` flag) shows the INFO and DEBUG
    lines too (backend choices, thread counts); without it only warnings. None keeps the level as set."""
    logger = logging.getLogger("xlfast")
    if not any(isinstance(h, _LogToConsole) for h in logger.handlers):
        logger.addHandler(_LogToConsole())
    if verbose is not None:
        logger.setLevel(logging.DEBUG if verbose else logging.WARNING)


def write_json(path: Path | str, obj: Any) -> None:
    """Write JSON as xlfast.io.atomic_open writes ('-' means standard output)."""
    from xlfast.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


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
    return escape(str(v))
