"""The exceptions users see: the CLI prints each as a single red line, never a traceback."""
from __future__ import annotations

import os


class XlfastError(Exception):
    """A problem with the user's input or request, worth one clear line (never a traceback); exit code 1."""


class UsageError(XlfastError):
    """The command line itself is wrong (options that do not combine, a malformed value): exit code 2,
    as for the options the CLI rejects while parsing."""


class InputError(XlfastError):
    """Bad content in a file: names the file ('<stdin>' for '-') and, where it applies, the 1-based line."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = shown_path(path) if path is not None else None
        self.line = line
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


def shown_path(path) -> str:
    """How a message names an input file: '-' (standard input) as '<stdin>'."""
    path = os.fspath(path)
    return "<stdin>" if path == "-" else path


class BackendUnavailable(XlfastError):
    """A backend the user asked for by name cannot run here (never raised for automatic choices)."""
