"""The data a split gate consumes: per-metric blocks of conditional counts, tick by tick.

A *block* is a set of units of one tick that were randomised with one canary share (one tick, tier and,
for sessions, start tick): under the null the canary units of a block are a uniformly random subset of
its units given their number, which is all the e-processes use. Per metric a block holds the number of
measured units ``n`` and canary units ``n_c`` among them, and per edge-event (the event itself, or
"value > edge" for each edge of a continuous metric) the canary event count ``a``, the number ``c1`` of
units with exactly one event and the units with more (``(k, y, count)`` triples, sessions only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BlockBuilder", "MetricBlocks", "SplitData"]


@dataclass(frozen=True)
class MetricBlocks:
    """One metric's blocks over ``T`` ticks (blocks of tick ``t``: ``tptr[t]:tptr[t+1]``).

    Attributes
    ----------
    tptr : (T+1,) int64
    nc, n : (nb,) int64
        Canary and all measured units of each block.
    a, c1 : (nb, K) int64
        Canary events and units with exactly one event, per edge-event.
    xptr : (nb+1,) int64; xk, xy, xc : int64
        Units with ``xy >= 2`` events at edge-event ``xk``, ``xc`` of them (rows ``xptr[b]:xptr[b+1]``).
    """

    tptr: np.ndarray
    nc: np.ndarray
    n: np.ndarray
    a: np.ndarray
    c1: np.ndarray
    xptr: np.ndarray
    xk: np.ndarray
    xy: np.ndarray
    xc: np.ndarray

    @property
    def n_ticks(self) -> int:
        return len(self.tptr) - 1

    def ticks(self, lo: int, hi: int) -> MetricBlocks:
        """Ticks ``lo:hi`` as their own :class:`MetricBlocks` (a copy with rebased pointers)."""
        b0, b1 = int(self.tptr[lo]), int(self.tptr[hi])
        x0, x1 = int(self.xptr[b0]), int(self.xptr[b1])
        return MetricBlocks(self.tptr[lo:hi + 1] - b0, self.nc[b0:b1].copy(), self.n[b0:b1].copy(), self.a[b0:b1].copy(),
                            self.c1[b0:b1].copy(), self.xptr[b0:b1 + 1] - x0, self.xk[x0:x1].copy(), self.xy[x0:x1].copy(),
                            self.xc[x0:x1].copy())


class BlockBuilder:
    """Accumulates blocks tick by tick into a :class:`MetricBlocks` (``k`` edge-events)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._tptr = [0]
        self._nc: list[int] = []
        self._n: list[int] = []
        self._a: list[np.ndarray] = []
        self._c1: list[np.ndarray] = []
        self._xptr = [0]
        self._x: list[tuple[int, int, int]] = []

    def add_block(self, nc: int, n: int, a: np.ndarray, c1: np.ndarray, extras: list[tuple[int, int, int]] = ()) -> None:  # type: ignore[assignment]
        self._nc.append(int(nc))
        self._n.append(int(n))
        self._a.append(np.asarray(a, dtype=np.int64))
        self._c1.append(np.asarray(c1, dtype=np.int64))
        self._x.extend(extras)
        self._xptr.append(len(self._x))

    def end_tick(self) -> None:
        self._tptr.append(len(self._nc))

    def build(self) -> MetricBlocks:
        nb = len(self._nc)
        x = np.array(self._x, dtype=np.int64).reshape(-1, 3)
        return MetricBlocks(
            np.array(self._tptr, dtype=np.int64), np.array(self._nc, dtype=np.int64), np.array(self._n, dtype=np.int64),
            np.array(self._a, dtype=np.int64).reshape(nb, self.k), np.array(self._c1, dtype=np.int64).reshape(nb, self.k),
            np.array(self._xptr, dtype=np.int64), np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1]),
            np.ascontiguousarray(x[:, 2]),
        )


@dataclass(frozen=True)
class SplitData:
    """A run of ticks: start timestamps, units per arm (for the sample-ratio check) and each metric's blocks.

    ``origin`` (not an argument): for data cut by :meth:`ticks`, ``(whole, lo, hi)``; the compiled gate
    step reads the whole run's packed arrays at ticks ``lo:hi`` instead of packing each cut
    (:func:`~deploysignal.split._step.packed`). ``packs`` caches those packed arrays per gate layout.
    """

    timestamps: np.ndarray
    canary_units: np.ndarray
    units: np.ndarray
    metrics: dict[str, MetricBlocks] = field(default_factory=dict)
    origin: tuple[SplitData, int, int] | None = field(default=None, init=False, compare=False, repr=False)
    packs: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def n_ticks(self) -> int:
        return len(self.timestamps)

    def ticks(self, lo: int, hi: int) -> SplitData:
        """Ticks ``lo:hi`` (``0 <= lo <= hi <= n_ticks``) as their own :class:`SplitData` (copies)."""
        if not 0 <= lo <= hi <= self.n_ticks:
            raise ValueError(f"ticks {lo}:{hi} of a run of {self.n_ticks}")
        out = SplitData(self.timestamps[lo:hi].copy(), self.canary_units[lo:hi].copy(), self.units[lo:hi].copy(),
                        {m: b.ticks(lo, hi) for m, b in self.metrics.items()})
        whole, base = (self, 0) if self.origin is None else (self.origin[0], self.origin[1])
        object.__setattr__(out, "origin", (whole, base + lo, base + hi))
        return out
