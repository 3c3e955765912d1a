"""Progress display of long CLI runs (``calibrate``, ``gate``): on stderr only, shown when stderr is a
terminal or ``--progress`` asks for it, transient (erased when done). It never writes to stdout, so
``--json`` output and every written file are the same with or without it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["progress_enabled", "stage_progress"]


def progress_enabled(flag: bool | None) -> bool:
    """``--progress`` / ``--no-progress`` when given; otherwise on when stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag


@contextmanager
def stage_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A ``progress(stage, done, total)`` callback drawing one bar per stage on stderr, or ``None``."""
    if not enabled:
        yield None
        return
    console = Console(stderr=True, force_terminal=True if not sys.stderr.isatty() else None)
    tasks: dict[str, TaskID] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=sys.stderr.isatty()) as bar:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update
