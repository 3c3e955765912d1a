"""The contract every evaluated method follows, and helpers the baselines share.

A *method* sees what a deploy pipeline sees: a healthy baseline table, the canary stream tick by tick and,
in two-sample mode, a live control stream beside it. It returns a :class:`MethodResult`: the first tick at
which it would have rolled back (or ``None``), its final verdict and, optionally, a per-tick statistic with
the bound it is compared to (for the wealth-vs-bound plots).

Methods are evaluated *under continuous monitoring*: every method watches every canary tick until it
decides, so an alarm at any tick counts as a rollback, whatever the method's nominal design (a fixed
horizon t-test looked at every tick is exactly the peeking user's procedure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .._exceptions import InputError
from ..telemetry import Frame

__all__ = ["VERDICTS", "Method", "MethodResult", "harm_signs", "finish", "reference_rows", "reference_values"]

#: Final verdicts a method may return.
VERDICTS = ("proceed", "extend", "rollback")


@dataclass(frozen=True)
class MethodResult:
    """What one method decided on one canary stream.

    Attributes
    ----------
    first_alarm : int or None
        0-based canary tick of the first rollback signal; ``None`` if the method never alarmed.
    verdict : {"proceed", "extend", "rollback"}
        Final verdict. ``rollback`` if and only if ``first_alarm`` is not ``None``.
    decided_at : int or None
        Tick at which the verdict became final (the alarm tick, the proceed tick, or ``None`` when the
        stream ended undecided, which reads as ``extend``).
    trace : ndarray or None
        Per-tick statistic (length = canary ticks, NaN after the method stopped), on a scale where the
        method alarms once ``trace >= bound``.
    bound : float or None
        The alarm bound for ``trace``.
    trace_label : str
        What ``trace`` is (for plot axes).
    """

    first_alarm: int | None
    verdict: str
    decided_at: int | None
    trace: np.ndarray | None = field(default=None, repr=False)
    bound: float | None = None
    trace_label: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise InputError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        if (self.verdict == "rollback") != (self.first_alarm is not None):
            raise InputError("verdict is rollback exactly when first_alarm is set")


@runtime_checkable
class Method(Protocol):
    """A change detector evaluated by the harness.

    ``name`` identifies it in reports; ``run`` must be deterministic given its inputs (any randomness
    flows from a seed given to the constructor) and must not mutate the frames.
    """

    name: str

    def run(self, baseline: Frame, canary: Frame, control: Frame | None = None) -> MethodResult: ...


def harm_signs(frame: Frame) -> np.ndarray:
    """Per signal: +1 when larger is harmful, -1 when smaller is harmful, 0 for ``both``."""
    return np.array([{"up": 1.0, "down": -1.0}.get(s.direction, 0.0) for s in frame.specs])


def reference_rows(baseline: Frame, canary: Frame, period: float = 86400.0) -> np.ndarray:
    """Baseline rows aligned with the canary ticks one ``period`` earlier ("same time yesterday").

    The comparison a one-sample user makes without a live control: each canary tick is paired with the
    baseline tick nearest to ``timestamp - k * period`` for the smallest ``k >= 1`` that lands inside the
    baseline. Returns an index array into ``baseline`` of the canary's length, ``-1`` where no baseline
    tick lies within half a tick interval. Falls back to the last ``len(canary)`` baseline rows (cycled)
    when the baseline is shorter than one period.
    """
    bt, ct = baseline.timestamps, canary.timestamps
    n = len(canary)
    if len(bt) == 0:
        raise InputError("baseline has no rows")
    step = float(np.median(np.diff(bt))) if len(bt) > 1 else period
    span = bt[-1] - bt[0]
    if span < period:
        tail = np.arange(max(0, len(bt) - n), len(bt))
        return np.resize(tail, n)
    k = np.maximum(1.0, np.ceil((ct - bt[-1]) / period))
    target = ct - k * period
    j = np.clip(np.searchsorted(bt, target), 1, len(bt) - 1)
    best = np.where(np.abs(bt[j - 1] - target) <= np.abs(bt[j] - target), j - 1, j)
    ok = np.abs(bt[best] - target) <= step / 2
    return np.where(ok, best, -1).astype(int)


def reference_values(baseline: Frame, canary: Frame, control: Frame | None = None) -> np.ndarray:
    """The comparison values for each canary tick: the control tick (two-sample) or the baseline tick one
    day earlier (one-sample, :func:`reference_rows`; NaN where none), columns in the canary's order."""
    if control is not None:
        if len(control) != len(canary):
            raise InputError(f"control has {len(control)} rows, canary {len(canary)}")
        return control.select(canary.signals).values
    rows = reference_rows(baseline, canary)
    base = baseline.select(canary.signals).values
    return np.where((rows >= 0)[:, None], base[np.clip(rows, 0, None)], np.nan)


def finish(first: int | None, n: int, window: int, trace: np.ndarray, bound: float | None, label: str) -> MethodResult:
    """Result of a method that watched ``n`` ticks of a ``window``-tick plan: rollback at ``first`` (the
    trace is blanked after it), else proceed at the window's last tick, else (stream too short) extend."""
    if first is not None:
        trace[first + 1 :] = np.nan
        return MethodResult(first, "rollback", first, trace, bound, label)
    if n < window:
        return MethodResult(None, "extend", None, trace, bound, label)
    return MethodResult(None, "proceed", n - 1, trace, bound, label)
