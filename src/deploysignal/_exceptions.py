"""Exceptions raised by deploysignal.

The tree::

    DeploySignalError
    ├── InputError (ValueError, TypeError)   bad telemetry, bad arguments, malformed files
    │   └── SchemaError                       missing / changed columns, wrong types
    ├── ConfigError (ValueError)              compiled config invalid, unknown keys, version mismatch
    └── ReplayMismatch                        replay did not reproduce an audit record

``InputError`` messages name the row (1-based data row, header excluded) and the column whenever the
problem is tied to one; CLI adapters turn any ``DeploySignalError`` into exit code 2.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DeploySignalError", "InputError", "ReplayMismatch", "SchemaError"]


class DeploySignalError(Exception):
    """Base class of every error raised on purpose by deploysignal."""


class InputError(DeploySignalError, ValueError, TypeError):
    """Malformed input: wrong type, NaN where not allowed, non-increasing timestamps, bad file."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        where = []
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)
        self.message = message
        self.row = row
        self.column = column


class SchemaError(InputError):
    """Columns missing, renamed or changed type relative to what was expected."""


class ConfigError(DeploySignalError, ValueError):
    """A compiled config or pipeline file that cannot be used."""


class ReplayMismatch(DeploySignalError):
    """Replaying a stream did not reproduce the recorded audit log byte for byte."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"audit line {line}: {message}" if line is not None else message)
        self.line = line
