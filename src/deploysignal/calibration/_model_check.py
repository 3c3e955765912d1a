r"""Model check at compile time: does the baseline look like the one-sample model it is compiled into?

The one-sample model says that, per signal, the transformed telemetry is a cell level (hour x day-of-week
x tier, pooled), a day offset and an AR(1) process whose innovations are independent with one scale.
Its guarantees hold on that model (and on the harder nulls the Monte Carlo lists), not off it. The
checks below look for the departures that broke the default gate in measurement (issue 22): each is a
test of the baseline's own standardised innovations :math:`z_t` (the compiler's, clipped at
``C_HI``, each calendar day's mean removed per tier so that the day offsets the model carries do not
count) or a flag on a fitted quantity.

=================== ======================================================================================
check               statistic (null distribution under the model)
=================== ======================================================================================
autocorrelation     Ljung-Box :math:`Q` over lags 1..20 (statsmodels ``acorr_ljungbox``, one fitted
                    parameter: :math:`\chi^2_{19}`); catches AR(2), oscillation, a wrong phi
long_memory         aggregated variance: means of :math:`z` over (day, 4-hour clock slot), fitted by day
                    and slot effects (weighted least squares, weights = ticks); the weighted residual
                    sum of squares over :math:`\hat\sigma^2` is :math:`\chi^2` with the residual degrees
                    of freedom; the report gives it divided by them (1 under the model); catches
                    slow components, fractional noise, regime switches. (The slot effects absorb
                    the cell levels' estimation error, common to all days; block means without them
                    flagged most 2-day baselines of the model's own AR(0.85) + diurnal null.)
heteroscedasticity  Brown-Forsythe (``scipy.stats.levene``, ``center="median"``) across hours of the day,
                    counted when the largest hourly variance is >= 1.5 x the median hour's (the
                    statistic reported is that ratio); catches peak-hour variance the model's single
                    scale misses
daily_cycle         the same with 1-hour slots: the day x hour interaction of the hourly means of
                    :math:`z`; catches a daily cycle whose phase (DST) or shape changes between days
weekly_cells        the compiler's pooling statistic for hour x day-of-week effects
                    (:math:`\chi^2`), counted only when those cells are each estimated from a single
                    day: the model then assumes a weekly pattern recurs that the baseline shows once
phi_clip            flag, no test: phi at the compiler's clip (0.98 or -0.5)
=================== ======================================================================================

Levels are fixed in advance: every test runs at ``FAMILY_LEVEL / (5 * signals)`` (Bonferroni over the
five tests and the signals), and a test with several tiers or block sizes at that level divided by
their number, so a baseline that satisfies the model exactly (independent innovations, which the AR(1)
filter delivers only approximately) is flagged with probability about ``FAMILY_LEVEL`` = 1% or less.
The tests are asymptotic (chi-square approximations) and computed on fitted innovations.

Guarantee
---------
None: the checks are a screening device with their own false-flag rate (measured on the model's
AR(1) + diurnal null in ``tests/montecarlo/test_model_check.py``) and their own power, not a proof
that the model holds. A baseline that passes can still break the model in ways they do not test
(a departure that begins after the baseline ends, such as a DST change after compilation, is invisible
to any compile-time check).

References
----------
Ljung, G. M. and Box, G. E. P. (1978). On a measure of lack of fit in time series models. Biometrika 65.
Brown, M. B. and Forsythe, A. B. (1974). Robust tests for the equality of variances. JASA 69.
Beran, J. (1994). Statistics for Long-Memory Processes, ch. 4 (aggregated variance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ._transform import C_HI

__all__ = ["CHECKS", "FAMILY_LEVEL", "LB_LAGS", "model_check"]

#: probability that a baseline satisfying the model is flagged by any test (Bonferroni, approximately)
FAMILY_LEVEL = 0.01
#: lags of the Ljung-Box test
LB_LAGS = 20
#: slot length (clock hours) of the long-memory check's day x slot interaction
LONG_SLOT_HOURS = 4
#: the checks with a p-value (level FAMILY_LEVEL / (len(_TESTED) * signals) each)
_TESTED = ("autocorrelation", "long_memory", "heteroscedasticity", "daily_cycle", "weekly_cells")
#: check -> what a failure means, as printed by ``calibrate``
CHECKS: dict[str, str] = {
    "autocorrelation": "innovations still autocorrelated at lags 1-20: not AR(1) (AR(2), oscillation, wrong phi)",
    "long_memory": "block means vary more than independent innovations allow: slow component, long memory or regime switches",
    "heteroscedasticity": "innovation variance differs by hour of day (peak-hour variance the model's one scale misses)",
    "daily_cycle": "the hour-of-day profile differs between days: a phase shift (DST) or a changing daily cycle",
    "weekly_cells": "hour x day-of-week levels differ and each is seen on one day only: the model assumes they recur",
    "phi_clip": "AR(1) phi at the compiler's clip: the process is more persistent than the model allows",
}
PHI_CLIP = (-0.5, 0.98)
#: heteroscedasticity counts only when the largest hourly innovation variance is at least this multiple
#: of the median hour's. Without a floor the test flags the model's own simulated null: its rates get
#: hour-dependent innovation scales from the arcsine-sqrt transform (variance ratio about 1.3 between
#: peak and trough), which the gate tolerates (its Monte Carlo holds alpha on that null).
HETERO_RATIO = 1.5


@dataclass(frozen=True)
class _Series:
    """One signal's clipped, day-demeaned innovations of one tier in time order, with day and hour."""

    z: np.ndarray
    day: np.ndarray
    hour: np.ndarray


def _row(signal: str, check: str, statistic: float | None, p: float | None, level: float | None, passed: bool | None, note: str = "") -> dict[str, Any]:
    return {
        "signal": signal, "check": check, "statistic": None if statistic is None or not math.isfinite(statistic) else float(statistic),
        "p_value": None if p is None or not math.isfinite(p) else float(p), "level": level, "passed": passed,
        "meaning": CHECKS[check] if passed is False else (note or ("ok" if passed else "")),
    }


def _series(z: np.ndarray, ts: np.ndarray, tiers: np.ndarray) -> list[list[_Series]]:
    """Per signal, per tier: the innovations clipped at +-C_HI with each calendar day's mean removed."""
    day = np.floor(ts / 86400.0).astype(np.int64)
    hour = ((np.floor(ts).astype(np.int64) % 86400) // 3600).astype(np.int64)
    out: list[list[_Series]] = [[] for _ in range(z.shape[1])]
    for t in sorted(set(tiers.tolist())):
        rows = np.flatnonzero(tiers == t)
        rows = rows[np.argsort(ts[rows], kind="stable")]
        zc = np.clip(z[rows], -C_HI, C_HI)
        d = day[rows]
        for j in range(z.shape[1]):
            col = zc[:, j].copy()
            for dk in np.unique(d):
                sel = d == dk
                vals = col[sel]
                if np.any(~np.isnan(vals)):
                    col[sel] = vals - np.nanmean(vals)
            out[j].append(_Series(col, d, hour[rows]))
    return out


def _ljung_box(s: _Series) -> tuple[float, float] | None:
    """Ljung-Box Q over lags 1..LB_LAGS (statsmodels' FFT ``acf`` and ``q_stat``, the pieces
    ``acorr_ljungbox`` is made of; its own ``acf`` call is the O(n^2) direct sum), p from
    chi^2 with LB_LAGS - 1 degrees of freedom (phi was fitted)."""
    from statsmodels.tsa.stattools import acf, q_stat  # lazy: importing statsmodels costs seconds

    ok = ~np.isnan(s.z)
    if ok.sum() < 5 * LB_LAGS:
        return None
    x = np.where(ok, s.z, 0.0)  # day-demeaned: a missing tick counts as the day's mean
    if np.ptp(x) == 0:
        return None
    r = acf(x, nlags=LB_LAGS, fft=True)[1:]
    q = float(q_stat(r, x.size)[0][-1])
    return q, float(stats.chi2.sf(q, LB_LAGS - 1))


def _hour_groups(s: _Series) -> list[np.ndarray]:
    ok = ~np.isnan(s.z)
    return [g for g in (s.z[ok & (s.hour == h)] for h in range(24)) if g.size >= 10]


def _brown_forsythe(s: _Series) -> tuple[float, float] | None:
    """(largest hourly variance / median hourly variance, Brown-Forsythe p); p is set to 1 when that
    ratio is below HETERO_RATIO (see there)."""
    groups = _hour_groups(s)
    if len(groups) < 2 or all(np.ptp(g) == 0 for g in groups):
        return None
    res = stats.levene(*groups, center="median")
    var = np.array([float(np.var(g)) for g in groups])
    ratio = float(var.max() / max(float(np.median(var)), 1e-300))
    return ratio, float(res.pvalue) if ratio >= HETERO_RATIO else 1.0


def _interaction(s: _Series, slot_hours: int) -> tuple[float, float, int] | None:
    """(S/df, p, df): day x slot interaction of the means of ``z`` over slots of ``slot_hours`` clock
    hours (weighted least squares on day and slot effects, weights = tick counts; sigma^2 from the
    ticks). The slot effects absorb the cell levels' estimation error, which is common to all days."""
    ok = ~np.isnan(s.z)
    if ok.sum() < 10:
        return None
    sigma2 = float(np.nanvar(s.z[ok]))
    key = s.day[ok] * 24 + s.hour[ok] // slot_hours
    uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=s.z[ok])
    keep = cnt >= 6
    if sigma2 <= 0 or keep.sum() < 4:
        return None
    mean, w = sums[keep] / cnt[keep], cnt[keep].astype(float)
    d_codes, d_idx = np.unique(uniq[keep] // 24, return_inverse=True)
    h_codes, h_idx = np.unique(uniq[keep] % 24, return_inverse=True)
    if d_codes.size < 2 or h_codes.size < 2:
        return None
    design = np.zeros((mean.size, d_codes.size + h_codes.size))
    design[np.arange(mean.size), d_idx] = 1.0
    design[np.arange(mean.size), d_codes.size + h_idx] = 1.0
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], mean * sw, rcond=None)
    resid = mean - design @ coef
    df = mean.size - int(np.linalg.matrix_rank(design))
    if df < 1:
        return None
    stat = float(np.dot(w, resid**2)) / sigma2
    return stat / df, float(stats.chi2.sf(stat, df)), df


def _combine(results: list[tuple[float, float] | None]) -> tuple[float | None, float | None]:
    """Most significant of several (statistic, p) results, p Bonferroni-adjusted by their number."""
    got = [r for r in results if r is not None]
    if not got:
        return None, None
    stat, p = min(got, key=lambda r: r[1])
    return stat, min(1.0, p * len(got))


def model_check(
    z: np.ndarray,
    ts: np.ndarray,
    tiers: np.ndarray,
    names: tuple[str, ...],
    phi: np.ndarray,
    tick_seconds: float,
    weekly: list[tuple[float, int, bool]],
) -> list[dict[str, Any]]:
    r"""Run the model checks on a baseline's standardised innovations.

    Parameters
    ----------
    z : ndarray (n, k)
        Standardised AR(1) innovations of the baseline as the compiler computes them (NaN = missing).
    ts, tiers : ndarray (n,)
        Timestamps (epoch seconds, UTC calendar days and hours) and tier labels.
    names : tuple of str
    phi : ndarray (k,)
        Compiled AR(1) coefficients (clipped).
    tick_seconds : float
    weekly : list of (statistic Q, dof, single_day) per signal
        The compiler's pooling test of hour x day-of-week effects and whether every cell that keeps
        its own level was estimated from one calendar day.

    Returns
    -------
    list of dict
        One row per signal and check: ``signal, check, statistic, p_value, level, passed, meaning``
        (``passed`` ``None`` and statistic ``None`` when the baseline is too short or too constant
        for that check: a check that could not run leaves the config uncertified).

    Notes
    -----
    See the module docstring for the tests, their levels and what they do not guarantee.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ts = np.arange(2880) * 60.0
    >>> rows = model_check(rng.normal(size=(2880, 1)), ts, np.full(2880, ""), ("a",), np.array([0.3]), 60.0, [(20.0, 24, True)])
    >>> sorted({r["check"] for r in rows}) == sorted(CHECKS)
    True
    >>> all(r["passed"] is not False for r in rows)
    True
    """
    k = z.shape[1]
    level = FAMILY_LEVEL / (len(_TESTED) * max(k, 1))
    per_signal = _series(z, ts, tiers)
    rows: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        ser = per_signal[j]
        results: dict[str, tuple[float | None, float | None]] = {
            "autocorrelation": _combine([_ljung_box(s) for s in ser]),
            "long_memory": _combine([None if r is None else r[:2] for r in (_interaction(s, LONG_SLOT_HOURS) for s in ser)]),
            "heteroscedasticity": _combine([_brown_forsythe(s) for s in ser]),
            "daily_cycle": _combine([None if r is None else r[:2] for r in (_interaction(s, 1) for s in ser)]),
        }
        q, dof, single_day = weekly[j]
        if dof > 0 and single_day:
            results["weekly_cells"] = (q / dof, float(stats.chi2.sf(q, dof)))
        else:
            results["weekly_cells"] = (None, None)
        for check in _TESTED:
            stat, p = results[check]
            if p is None:
                note = ("no hour x day-of-week level seen on one day only" if check == "weekly_cells"
                        else "not run: too few (varying) baseline values, or too few days or hours, for this check")
                rows.append(_row(name, check, stat, None, level, None if check != "weekly_cells" else True, note))
            else:
                rows.append(_row(name, check, stat, p, level, p >= level))
        at_clip = bool(phi[j] >= PHI_CLIP[1] - 1e-12 or phi[j] <= PHI_CLIP[0] + 1e-12)
        rows.append(_row(name, "phi_clip", float(phi[j]), None, None, not at_clip))
    return rows
