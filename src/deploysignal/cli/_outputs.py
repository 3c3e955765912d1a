"""Where a command that writes a report puts it: the ``--out`` path the user gave, or else a file in a
fresh directory (never a default path inside the working directory, which in a checkout of this
repository would overwrite the committed ``docs/``). The command prints the path either way."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["report_path"]


def report_path(out: Path | None, filename: str, command: str) -> Path:
    """``out`` (its parent directory created), or ``filename`` in a new directory
    ``deploysignal-<command>-XXXXXXXX`` under the system's temporary directory."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    return Path(tempfile.mkdtemp(prefix=f"deploysignal-{command}-")) / filename
