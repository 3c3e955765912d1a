"""Ordered fan-out of independent Monte-Carlo tasks over worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], tasks: Sequence[T], jobs: int = 1) -> Iterator[R]:
    """``fn`` over ``tasks`` in task order, in ``jobs`` processes when ``jobs > 1`` (results do not depend on it)."""
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            yield from ex.map(fn, tasks, chunksize=2)
    else:
        for t in tasks:
            yield fn(t)
