"""The in-memory telemetry table every source produces and every core routine consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._exceptions import InputError, SchemaError
from ._signals import SignalSpec, resolve_specs

__all__ = ["Frame"]


@dataclass(frozen=True)
class Frame:
    """A wide telemetry table: one row per tick.

    Parameters
    ----------
    timestamps : ndarray of float, shape (n,)
        Epoch seconds (UTC), strictly increasing within each cohort.
    values : ndarray of float, shape (n, k)
        One column per signal; NaN means missing.
    signals : tuple of str
        Column names, in the order of ``values``.
    cohort : ndarray of str, shape (n,), optional
        Tier / cohort label per row (``None`` when the table has no such column).
    specs : tuple of SignalSpec
        Direction and kind per signal (catalogue defaults unless a signals file said otherwise).

    Raises
    ------
    InputError
        Wrong shapes, non-finite or non-increasing timestamps (naming the row), infinite values.
    """

    timestamps: np.ndarray
    values: np.ndarray
    signals: tuple[str, ...]
    cohort: np.ndarray | None = None
    specs: tuple[SignalSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps, dtype=float)
        vals = np.asarray(self.values, dtype=float)
        if vals.ndim != 2:
            raise InputError(f"values must be 2-D (ticks x signals), got shape {vals.shape}")
        if ts.shape != (vals.shape[0],):
            raise InputError(f"{ts.shape[0]} timestamps for {vals.shape[0]} rows")
        if len(self.signals) != vals.shape[1]:
            raise SchemaError(f"{len(self.signals)} signal names for {vals.shape[1]} columns")
        if len(set(self.signals)) != len(self.signals):
            dup = sorted({s for s in self.signals if self.signals.count(s) > 1})
            raise SchemaError(f"duplicate signal columns: {', '.join(dup)}")
        bad = np.flatnonzero(~np.isfinite(ts))
        if bad.size:
            raise InputError("timestamp is missing or not finite", row=int(bad[0]) + 1, column="timestamp")
        inf = np.argwhere(np.isinf(vals))
        if inf.size:
            r, c = inf[0]
            raise InputError("value is infinite", row=int(r) + 1, column=self.signals[c])
        coh = None if self.cohort is None else np.asarray(self.cohort, dtype=str)
        if coh is not None and coh.shape != ts.shape:
            raise InputError(f"{coh.shape[0]} cohort labels for {ts.shape[0]} rows")
        groups = [np.arange(ts.size)] if coh is None else [np.flatnonzero(coh == g) for g in np.unique(coh)]
        for idx in groups:
            d = np.diff(ts[idx])
            nz = np.flatnonzero(d <= 0)
            if nz.size:
                row = int(idx[nz[0] + 1]) + 1
                raise InputError(
                    "timestamps must be strictly increasing"
                    + ("" if coh is None else f" within cohort {coh[idx[0]]!r}"),
                    row=row,
                    column="timestamp",
                )
        specs = tuple(self.specs) if self.specs else tuple(resolve_specs(list(self.signals)))
        if tuple(s.name for s in specs) != tuple(self.signals):
            raise SchemaError("signal specs do not match the signal columns")
        ts.setflags(write=False)
        vals.setflags(write=False)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "signals", tuple(self.signals))
        object.__setattr__(self, "cohort", coh)
        object.__setattr__(self, "specs", specs)

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def n_signals(self) -> int:
        return len(self.signals)

    def column(self, name: str) -> np.ndarray:
        """Values of one signal (raises SchemaError naming the column when absent)."""
        try:
            return self.values[:, self.signals.index(name)]
        except ValueError:
            raise SchemaError(f"no such signal; have {', '.join(self.signals)}", column=name) from None

    def select(self, names: list[str] | tuple[str, ...]) -> Frame:
        """Reorder / subset columns; signals absent from this frame become all-NaN columns."""
        out = np.full((len(self), len(names)), np.nan)
        for j, n in enumerate(names):
            if n in self.signals:
                out[:, j] = self.values[:, self.signals.index(n)]
        specs = {s.name: s for s in self.specs}
        return Frame(
            self.timestamps, out, tuple(names), self.cohort, tuple(specs.get(n) or resolve_specs([n])[0] for n in names)
        )

    def rows(self, start: int, stop: int) -> Frame:
        """Row slice ``[start, stop)``."""
        coh = None if self.cohort is None else self.cohort[start:stop]
        return Frame(self.timestamps[start:stop], self.values[start:stop], self.signals, coh, self.specs)
