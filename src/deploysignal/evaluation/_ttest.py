"""Repeated Welch t-tests with peeking: the naive sequential user."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..telemetry import Frame
from ._method import MethodResult, finish, harm_signs, reference_values

__all__ = ["PeekingTTest", "cumulative_welch"]


def _cum(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ok = ~np.isnan(values)
    v = np.where(ok, values, 0.0)
    return np.cumsum(ok, axis=0).astype(float), np.cumsum(v, axis=0), np.cumsum(v * v, axis=0)


def cumulative_welch(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch t statistic and degrees of freedom of ``x[:t+1]`` vs ``y[:t+1]`` for every ``t`` (per column).

    NaN where either prefix has fewer than two values or zero variance.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x, y = rng.normal(size=(50, 1)), rng.normal(size=(50, 1))
    >>> t, df = cumulative_welch(x, y)
    >>> ref = stats.ttest_ind(x[:, 0], y[:, 0], equal_var=False)
    >>> bool(np.isclose(t[-1, 0], ref.statistic)), bool(np.isclose(df[-1, 0], ref.df))
    (True, True)
    """
    nx, sx, qx = _cum(x)
    ny, sy, qy = _cum(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = sx / nx, sy / ny
        vx = np.maximum(qx - nx * mx * mx, 0.0) / (nx - 1)
        vy = np.maximum(qy - ny * my * my, 0.0) / (ny - 1)
        a, b = vx / nx, vy / ny
        se = np.sqrt(a + b)
        t = (mx - my) / se
        df = (a + b) ** 2 / (a * a / (nx - 1) + b * b / (ny - 1))
    bad = (nx < 2) | (ny < 2) | ~(se > 0)
    return np.where(bad, np.nan, t), np.where(bad, np.nan, df)


@dataclass
class PeekingTTest:
    """Welch t-test per signal, recomputed at every tick on all canary data so far, stopping at the first p < level.

    The reference is the live control so far (two-sample) or the baseline ticks one day before the
    canary ticks seen so far (one-sample). Each signal is tested one-sided in its direction of harm
    (two-sided for ``both``) at level ``alpha / k`` when ``bonferroni`` (the one correction a careful
    but naive user applies: across signals, not across looks), else at ``alpha``. Tests start after
    ``min_ticks`` ticks. Under the null each look has level alpha, but the probability that *some* look
    rejects grows without bound with the number of looks (law of the iterated logarithm): this is the
    procedure whose false-rollback rate the harness expects to exceed alpha.
    """

    alpha: float = 0.05
    window: int = 480
    min_ticks: int = 10
    bonferroni: bool = True
    name: str = "ttest_peek"

    def run(self, baseline: Frame, canary: Frame, control: Frame | None = None) -> MethodResult:
        n = min(len(canary), self.window)
        x = canary.values[:n]
        y = reference_values(baseline, canary, control)[:n]
        t, df = cumulative_welch(x, y)
        signs = harm_signs(canary)
        k = x.shape[1]
        level = self.alpha / k if self.bonferroni else self.alpha
        oriented = np.where(signs == 0, np.abs(t), t * np.where(signs == 0, 1.0, signs))
        tail = np.where(signs == 0, level / 2, level)
        crit = stats.t.isf(tail[None, :], np.where(np.isnan(df), 1.0, df))
        ratio = oriented / crit
        ratio[: self.min_ticks - 1] = np.nan
        with np.errstate(invalid="ignore"):
            fired = np.nan_to_num(ratio, nan=-np.inf) >= 1.0
        stat = np.nanmax(np.where(np.isnan(ratio), -np.inf, ratio), axis=1)
        trace = np.full(len(canary), np.nan)
        trace[:n] = np.where(np.isfinite(stat), stat, np.nan)
        hits = np.flatnonzero(fired.any(axis=1))
        return finish(int(hits[0]) if hits.size else None, n, self.window, trace, 1.0, "max t / critical t")
