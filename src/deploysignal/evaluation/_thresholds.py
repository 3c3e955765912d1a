"""Threshold baselines: a classical deployment controller's static checks, and Flagger-style analysis.

Neither controls any error rate; both are what many pipelines run today.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..telemetry import Frame
from ._method import MethodResult, finish, harm_signs

__all__ = ["FlaggerAnalysis", "StaticThresholds", "rolling_nanmean"]


def rolling_nanmean(values: np.ndarray, span: int) -> np.ndarray:
    """Trailing mean over the last ``span`` rows ignoring NaN (NaN where the window has no value)."""
    v = np.where(np.isnan(values), 0.0, values)
    c = (~np.isnan(values)).astype(float)
    cs = np.cumsum(np.vstack([np.zeros((1, v.shape[1])), v]), axis=0)
    cc = np.cumsum(np.vstack([np.zeros((1, c.shape[1])), c]), axis=0)
    idx = np.arange(1, v.shape[0] + 1)
    lo = np.maximum(idx - span, 0)
    s, k = cs[idx] - cs[lo], cc[idx] - cc[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k > 0, s / np.where(k > 0, k, 1.0), np.nan)


@dataclass
class StaticThresholds:
    """Static checks of a classical deployment controller, on a trailing ``span``-tick average.

    Rules (``signal``, ``kind``, ``value``):

    * ``("downstream_error_rate", "relative", 0.5)``: error rate more than 50% above the reference;
    * ``("p99_latency_ms", "ratio", 2.0)`` and ``("ttft_ms", "ratio", 2.0)``: latency above twice the
      reference;
    * ``("tool_success_rate", "min", 0.70)``: success rate below 70%.

    The reference is the baseline mean (one-sample) or the control's trailing average (two-sample).
    Signals absent from the frame are skipped. When none of the rule signals is present (real-data
    benchmarks with anonymous metrics) every signal gets the error-rate rule in its direction of harm
    (both directions for ``both`` signals): trailing mean more than ``fallback_relative`` (50%) away from
    the reference mean, measured in units of the reference mean's absolute value.
    The controller rolls back at the first failing check and proceeds when the window ends clean.

    ``scale`` (default 1): a check fails when its margin ratio (relative excess / allowed excess, latency
    ratio / 2, or 0.70 / success rate) exceeds ``scale``; the sensitivity knob the harness turns to compare
    methods at a matched false-rollback rate (:mod:`deploysignal.evaluation._matched`).
    """

    window: int = 480
    span: int = 5
    rules: tuple[tuple[str, str, float], ...] = (
        ("downstream_error_rate", "relative", 0.5),
        ("p99_latency_ms", "ratio", 2.0),
        ("ttft_ms", "ratio", 2.0),
        ("tool_success_rate", "min", 0.70),
    )
    fallback_relative: float = 0.5
    scale: float = 1.0
    name: str = "static"

    def run(self, baseline: Frame, canary: Frame, control: Frame | None = None) -> MethodResult:
        n = min(len(canary), self.window)
        cur = rolling_nanmean(canary.values[:n], self.span)
        if control is not None:
            ref = rolling_nanmean(control.select(canary.signals).values[:n], self.span)
        else:
            ref = np.broadcast_to(np.nanmean(baseline.select(canary.signals).values, axis=0), cur.shape)
        fail = np.zeros(n, dtype=bool)
        margin = np.full(n, -np.inf)
        rules = [r for r in self.rules if r[0] in canary.signals]
        if not rules:
            signs = harm_signs(canary)
            rules = [(s, "relative" if sg > 0 else "relative_down" if sg < 0 else "relative_both", self.fallback_relative) for s, sg in zip(canary.signals, signs)]
        with np.errstate(invalid="ignore", divide="ignore"):
            for sig, kind, val in rules:
                j = canary.signals.index(sig)
                x, r = cur[:, j], ref[:, j]
                scale = np.abs(r)
                if kind == "relative":
                    m = (x - r) / scale / val
                elif kind == "relative_down":
                    m = (r - x) / scale / val
                elif kind == "relative_both":
                    m = np.abs(x - r) / scale / val
                elif kind == "ratio":
                    m = x / r / val
                else:  # "min": absolute floor
                    m = val / x
                m = np.where(np.isfinite(m), m, np.where(np.isnan(x) | np.isnan(r), -np.inf, np.inf))
                fail |= m > self.scale
                margin = np.maximum(margin, m)
        trace = np.full(len(canary), np.nan)
        trace[:n] = margin
        hits = np.flatnonzero(fail)
        return finish(int(hits[0]) if hits.size else None, n, self.window, trace, float(self.scale), "threshold ratio")


@dataclass
class FlaggerAnalysis:
    """Flagger-style canary analysis: metric checks with a ``thresholdRange`` and a failed-checks counter.

    Every ``interval`` ticks each metric is queried as its trailing average over ``metric_window`` ticks and
    checked against its ``thresholdRange``; a check round fails if any metric is out of range or returns
    no data. The canary is rolled back when the number of failed rounds reaches ``threshold`` (Flagger's
    ``analysis.threshold``; the counter is not reset by passing rounds) and promoted after ``window`` ticks.

    Flagger thresholds are absolute numbers the user writes down. This baseline derives them the way a
    careful user would, from the healthy baseline: for each signal, the ``quantile`` (default 1.0: the
    worst value seen in healthy operation) of its ``metric_window``-tick trailing average over the
    baseline, on the harmful side (``max`` for ``up``, ``min`` for ``down``, both ends for ``both``,
    where the quantile's tail probability is split between the two ends). Two-sample mode does not change the thresholds (Flagger
    compares against fixed ranges, not the primary).

    References
    ----------
    Flagger documentation, "Canary analysis": ``analysis.interval``, ``analysis.threshold`` ("max number of
    failed metric checks before rollback"), ``metrics[].thresholdRange.{min,max}``.
    """

    window: int = 480
    interval: int = 1
    metric_window: int = 5
    threshold: int = 5
    quantile: float = 1.0
    signals: tuple[str, ...] | None = None
    name: str = "flagger"

    def ranges(self, baseline: Frame, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) per signal derived from the baseline (``-inf``/``inf`` on the harmless side)."""
        b = baseline.select(list(names))
        avg = rolling_nanmean(b.values, self.metric_window)
        signs = harm_signs(b)
        lo = np.full(len(names), -np.inf)
        hi = np.full(len(names), np.inf)
        for j, s in enumerate(signs):
            col = avg[:, j][~np.isnan(avg[:, j])]
            if col.size == 0:
                continue
            if s >= 0:
                hi[j] = np.quantile(col, self.quantile if s > 0 else 1 - (1 - self.quantile) / 2)
            if s <= 0:
                lo[j] = np.quantile(col, 1 - self.quantile if s < 0 else (1 - self.quantile) / 2)
        return lo, hi

    def run(self, baseline: Frame, canary: Frame, control: Frame | None = None) -> MethodResult:
        names = self.signals or canary.signals
        sel = canary.select(list(names))
        lo, hi = self.ranges(baseline, tuple(names))
        n = min(len(canary), self.window)
        avg = rolling_nanmean(sel.values[:n], self.metric_window)
        with np.errstate(invalid="ignore"):
            out = (avg < lo) | (avg > hi) | np.isnan(avg)
        checks = np.arange(self.interval - 1, n, self.interval)
        failed_round = out[checks].any(axis=1)
        counter = np.cumsum(failed_round)
        trace = np.full(len(canary), np.nan)
        trace[checks] = counter
        hit = np.flatnonzero(counter >= self.threshold)
        first = int(checks[hit[0]]) if hit.size else None
        return finish(first, n, self.window, trace, float(self.threshold), "failed checks")
