"""Transforms shared by the compiler and the gate (one implementation, so replay and calibration agree)."""

from __future__ import annotations

import numpy as np

__all__ = ["C_HI", "C_LO", "cell_keys", "clip_scores", "g_step_innovation", "level_neighbour", "transform_values"]

#: Scores are the standardised innovations clipped to [-C_LO, C_HI] in the direction tested. The
#: lower clip gives the betting increments of family A a known lower bound (needed for validity);
#: the upper clip bounds the influence of a single outlier. Both only shape power.
C_LO = 2.0
C_HI = 6.0


def transform_values(values: np.ndarray, kind_rate: np.ndarray, kind_count: np.ndarray) -> np.ndarray:
    """Variance-stabilise: rates -> arcsin(sqrt(p)) (p clipped to [0, 1]), counts -> sqrt(x + 3/8).

    Keeps variances of rates near 0 or 1 and of small counts from collapsing to zero. Values outside a
    rate's [0, 1] range are clipped to it (documented safe behaviour for rounding noise).
    """
    out = np.array(values, dtype=float, copy=True)
    if kind_rate.any():
        out[..., kind_rate] = np.arcsin(np.sqrt(np.clip(out[..., kind_rate], 0.0, 1.0)))
    if kind_count.any():
        out[..., kind_count] = np.sqrt(np.maximum(out[..., kind_count], 0.0) + 0.375)
    return out


def clip_scores(z: np.ndarray) -> np.ndarray:
    """Clip oriented innovations to ``[-C_LO, C_HI]`` (NaN stays NaN)."""
    return np.clip(z, -C_LO, C_HI)


def cell_keys(timestamp: float, tier: str) -> tuple[str, str, str]:
    """Keys of the three pooled levels for one tick: hour x day-of-week x tier, hour x tier, tier (UTC)."""
    sec = int(np.floor(timestamp))
    days, rem = divmod(sec, 86400)
    hour = rem // 3600
    dow = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return f"h={hour:02d}|d={dow}|t={tier}", f"h={hour:02d}|t={tier}", f"t={tier}"


def level_neighbour(timestamp: np.ndarray | float, tick_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Where to interpolate a cell's level: neighbour time offset (-3600 or +3600 s) and own weight.

    Cell levels describe mid-hour values; a tick at fraction ``f`` of its hour takes
    ``w * level(own) + (1 - w) * level(neighbour)`` with the neighbour the previous hour for
    ``f < 1/2`` (``w = 1/2 + f``) and the next hour otherwise (``w = 3/2 - f``). The seasonal level is
    then piecewise linear instead of a staircase, so AR(1) prewhitening does not turn the diurnal slope
    into a persistent innovation bias.
    """
    ts = np.asarray(timestamp, dtype=float)
    frac = np.clip((np.floor(ts) % 3600.0 + 0.5 * tick_seconds) / 3600.0, 0.0, 1.0)
    before = frac < 0.5
    return np.where(before, -3600.0, 3600.0), np.where(before, 0.5 + frac, 1.5 - frac)


def g_step_innovation(y: np.ndarray, y_last: np.ndarray, gap: np.ndarray, phi: np.ndarray, root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised g-step AR(1) innovations (units of sigma_e) and the phi-error regressor.

    ``y``: de-seasonalised values; ``y_last``: last observed value (NaN = none); ``gap``: ticks since
    it (any float; rounded, at least 1); ``phi``/``root``: AR coefficient and ``sqrt(1 - phi^2)``.
    Shared by the compiler and the gate so both standardise identically.
    """
    have = ~np.isnan(y_last) & np.isfinite(gap)
    g = np.where(have, np.maximum(np.rint(np.where(have, gap, 1.0)), 1.0), 1.0)
    last = np.where(have, y_last, 0.0)
    with np.errstate(over="ignore", under="ignore"):
        phig = np.where(have, phi**g, 0.0)
        norm = np.sqrt(np.where(have, (1.0 - phig**2) / root**2, 1.0))
        innov = np.where(have, (y - phig * last) / norm, y * root)
        lag = np.where(have, g * phi ** (g - 1.0) * last / norm, 0.0)
    return innov, lag
