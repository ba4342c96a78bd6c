"""The one exception type users see: the CLI prints it as a single red line and exits 1."""
from __future__ import annotations

import os


class XlfastError(Exception):
    """A problem with the user's input or request, worth one clear line (never a traceback)."""


class InputError(XlfastError):
    """Bad content in a file: names the file and, where it applies, the 1-based line number."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


class BackendUnavailable(XlfastError):
    """A backend the user asked for by name cannot run here (never raised for automatic choices)."""
