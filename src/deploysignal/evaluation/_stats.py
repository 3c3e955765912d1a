"""Binomial intervals and summaries used by the reports."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["clopper_pearson", "cp_upper", "cp_lower", "quantile_or_none"]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for a binomial proportion.

    Examples
    --------
    >>> lo, hi = clopper_pearson(0, 20)
    >>> lo, round(hi, 4)
    (0.0, 0.1684)
    """
    if n <= 0:
        return (math.nan, math.nan)
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def cp_upper(k: int, n: int, level: float = 0.95) -> float:
    """One-sided upper Clopper-Pearson bound: ``P(rate <= bound) >= level``."""
    return 1.0 if k >= n else float(stats.beta.ppf(level, k + 1, n - k))


def cp_lower(k: int, n: int, level: float = 0.95) -> float:
    """One-sided lower Clopper-Pearson bound."""
    return 0.0 if k <= 0 else float(stats.beta.ppf(1 - level, k, n - k + 1))


def quantile_or_none(values: list[int] | np.ndarray, q: float) -> float | None:
    """``numpy.quantile`` (linear) or ``None`` for an empty sample."""
    arr = np.asarray(values, dtype=float)
    return None if arr.size == 0 else float(np.quantile(arr, q))
