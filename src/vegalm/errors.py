"""Errors that the CLI turns into one clear message and a non-zero exit (no traceback)."""

from __future__ import annotations

from pathlib import Path


class VegaError(Exception):
    """A user-facing error: bad input, missing file, inconsistent run directory."""


class DataError(VegaError):
    """Bad data at a known place: formats as ``path:line: message``."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class DataErrors(VegaError):
    """Several DataErrors found in one validation pass (all are reported, not just the first)."""

    def __init__(self, errors: list[DataError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
