"""Baseline curation for the fleet observer: screen a raw baseline before it becomes the reference.

Two screens, each logged per decision:

- **MCD screening** (:class:`sklearn.covariance.MinCovDet`, Rousseeuw & Van Driessen 1999): the
  per-tick fleet-median vector is scored by robust Mahalanobis distance; ticks above the
  ``chi2_{k}(1 - mcd_tail)`` quantile are dropped (fleet-level outliers).
- **Fleet-correlated screening**: each shard's value is standardised against its own baseline
  median/MAD; a tick where at least ``corr_fraction`` of the shards sit beyond ``corr_z`` at once is a
  fleet-correlated excursion (an incident shared by many shards that would bias the fleet reference
  and the AR(1) fits) and is dropped.

Drop-rate gate: ``< 5%`` -> ``ready``, ``5-15%`` -> ``warn``, ``>= 15%`` -> ``halt`` unless
``override=True`` (then ``overridden``). The report also carries the fleet reference (location and
robust scale of the cross-shard median) and AR(1) coefficients per (shard, signal) estimated on kept
ticks, clipped to [-0.9, 0.9]. Deterministic: MCD gets ``random_state`` from ``seed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from .._exceptions import InputError
from ..calibration._compiler import _fit_mcd
from ._common_mode import CommonMode, fit_common_mode_or_reason

__all__ = ["CurationReport", "curate_baseline"]

log_ = logging.getLogger(__name__)
_MAD = 1.482602218505602


@dataclass(frozen=True)
class CurationReport:
    """Outcome of :func:`curate_baseline`.

    status : ``ready`` | ``warn`` | ``halt`` | ``overridden``. keep : bool mask over ticks.
    drop_rate : fraction dropped. baseline_loc / baseline_scale : fleet reference per signal.
    phi : AR(1) per (shard, signal), on the per-shard standardised deviations.
    center / scale : per-(shard, signal) median and robust scale (floored by ``min_scale``) of the
    deviation from the fleet median (for :class:`FleetObserver`). log : one dict per dropped tick (tick, screen, score, threshold).
    center_se : per-(shard, signal) standard error of ``center`` in units of ``scale``: a median of n
    Gaussian AR(1) values has variance :math:`(\\pi/2)(1 + 2\\sum_k (2/\\pi)\\arcsin\\phi^k)/n` (the
    lag-k correlation of the sign process); the observer widens its null by a multiple of it, since a
    baseline center is an estimate, not the truth.
    mcd_left_out : signals (indices) the MCD screen could not use: the fleet median is one value in more
    than about half the ticks (e.g. a rarely non-zero error count), so the MCD support has zero
    covariance. They are screened by the fleet-correlated screen only (logged as a warning, and listed
    in :meth:`summary` when not empty).
    common_mode : the one-factor model of the fleet median (:func:`fit_common_mode` on the kept ticks),
    ``None`` when it cannot be separated or is not identified; ``common_mode_note`` then says why (e.g.
    fewer than 30 kept ticks, fewer than two strongly loaded signals, a load too weak to identify the
    loadings), and :meth:`summary` carries it.
    """

    status: str
    keep: np.ndarray
    drop_rate: float
    n_mcd: int
    n_corr: int
    baseline_loc: np.ndarray
    baseline_scale: np.ndarray
    phi: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    log: list[dict[str, Any]] = field(default_factory=list)
    center_se: np.ndarray | None = None
    mcd_left_out: list[int] = field(default_factory=list)
    common_mode: CommonMode | None = None
    common_mode_note: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status, "ticks": int(self.keep.size), "kept": int(self.keep.sum()),
            "drop_rate": round(self.drop_rate, 6), "dropped_mcd": self.n_mcd, "dropped_fleet_correlated": self.n_corr,
            "baseline_loc": [round(float(v), 6) for v in self.baseline_loc],
            "baseline_scale": [round(float(v), 6) for v in self.baseline_scale],
            "phi_median": round(float(np.median(self.phi)), 6),
        } | ({"mcd_left_out": list(self.mcd_left_out)} if self.mcd_left_out else {}) | _common_mode_summary(self)


def _common_mode_summary(rep: CurationReport) -> dict[str, Any]:
    """The fitted loadings (and which signals carry the load), or why no shared load was fitted."""
    cm = rep.common_mode
    if cm is None:
        return {"common_mode": None, "common_mode_note": rep.common_mode_note} if rep.common_mode_note else {}
    return {"common_mode": {"loadings": [round(float(v), 6) for v in cm.loadings],
                            "strong": [bool(v) for v in cm.strong]}}


def _median_lrv(phi: np.ndarray) -> np.ndarray:
    """Long-run variance factor of the sample median of a Gaussian AR(1) series (1 for iid)."""
    ph = np.asarray(phi, dtype=float)
    k = np.arange(1, 400, dtype=float)
    rho = np.sign(ph)[..., None] ** k * np.abs(ph)[..., None] ** k  # phi^k, sign-safe
    return np.maximum(1.0 + 2.0 * (2.0 / np.pi) * np.arcsin(rho).sum(axis=-1), 1e-3)


def curate_baseline(
    values: np.ndarray,
    *,
    mcd_tail: float = 0.001,
    corr_z: float = 4.0,
    corr_fraction: float = 0.3,
    override: bool = False,
    min_scale: float = 1e-6,
    seed: int = 0,
) -> CurationReport:
    """Screen a raw fleet baseline of shape (n_ticks, n_shards, n_signals); NaN = missing.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((400, 20, 3))
    >>> x[100:110] += 8.0                                     # a fleet-wide incident in the baseline
    >>> rep = curate_baseline(x)
    >>> rep.status, rep.n_mcd + rep.n_corr >= 10, bool(rep.keep[100:110].any())
    ('ready', True, False)
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 3 or x.shape[0] < 30 or x.shape[1] < 3:
        raise InputError(f"baseline must be (ticks >= 30, shards >= 3, signals), got shape {x.shape}")
    if not 0 < mcd_tail < 0.5 or corr_z <= 0 or not 0 < corr_fraction <= 1:
        raise InputError("mcd_tail in (0, 0.5), corr_z > 0, corr_fraction in (0, 1] required")
    n_t, n_s, n_k = x.shape
    med = np.nanmedian(x, axis=1)  # (T, K)
    if np.isnan(med).all(axis=0).any():
        j = int(np.flatnonzero(np.isnan(med).all(axis=0))[0])
        raise InputError("signal is missing in every tick", column=f"signal {j}")
    med_f = np.where(np.isnan(med), np.nanmedian(med, axis=0), med)
    log: list[dict[str, Any]] = []
    # --- MCD screen on fleet-median vectors (constant columns excluded)
    var = np.nanstd(med_f, axis=0) > 1e-12
    mcd_drop = np.zeros(n_t, dtype=bool)
    mcd = _fit_mcd(med_f[:, var], seed) if var.any() else None
    left_out: list[int] = []
    if var.any() and mcd is None:  # a signal mostly one value: leave such signals out of the MCD screen
        one_value = np.median(np.abs(med_f - np.median(med_f, axis=0)), axis=0) <= 1e-12
        left_out = [int(j) for j in np.flatnonzero(var & one_value)]
        var &= ~one_value
        mcd = _fit_mcd(med_f[:, var], seed) if var.any() else None
        if mcd is None:
            left_out, var = sorted(set(left_out) | {int(j) for j in np.flatnonzero(var)}), np.zeros_like(var)
        log_.warning("baseline curation: the MCD screen cannot use signal(s) %s (the fleet median is one value in "
                     "more than about half the ticks); they are screened for fleet-correlated excursions only",
                     ", ".join(map(str, left_out)))
    if mcd is not None:
        d2 = mcd.mahalanobis(med_f[:, var])
        thr = float(stats.chi2.ppf(1 - mcd_tail, int(var.sum())))
        mcd_drop = d2 > thr
        log += [{"tick": int(t), "screen": "mcd", "score": round(float(d2[t]), 6), "threshold": round(thr, 6)}
                for t in np.flatnonzero(mcd_drop)]
    # --- fleet-correlated screen: per-shard standardisation against its own baseline
    own_med = np.nanmedian(x, axis=0)
    own_scale = np.maximum(_MAD * np.nanmedian(np.abs(x - own_med), axis=0), max(min_scale, 1e-9))
    z = np.abs(x - own_med) / own_scale
    with np.errstate(invalid="ignore"):
        exceed = np.nanmax(np.where(np.isnan(z), -np.inf, z), axis=2) > corr_z  # (T, S)
    frac = exceed.mean(axis=1)
    corr_drop = (frac >= corr_fraction) & ~mcd_drop
    log += [{"tick": int(t), "screen": "fleet_correlated", "score": round(float(frac[t]), 6),
             "threshold": corr_fraction} for t in np.flatnonzero(corr_drop)]
    log.sort(key=lambda r: (r["tick"], r["screen"]))
    keep = ~(mcd_drop | corr_drop)
    rate = float(1 - keep.mean())
    status = "ready" if rate < 0.05 else "warn" if rate < 0.15 else ("overridden" if override else "halt")
    kept = med_f[keep] if keep.sum() >= 10 else med_f
    loc = np.median(kept, axis=0)
    scale = np.maximum(_MAD * np.median(np.abs(kept - loc), axis=0), 1e-6)
    xk = x[keep] if keep.sum() >= 10 else x
    dev = xk - np.nanmedian(xk, axis=1, keepdims=True)  # deviation of each shard from the fleet median
    center = np.nan_to_num(np.nanmedian(dev, axis=0))
    sc = np.nan_to_num(_MAD * np.nanmedian(np.abs(dev - center), axis=0), nan=min_scale)
    sc = np.maximum(sc, min_scale)
    r = np.where(np.isnan(dev), 0.0, (dev - center) / sc)
    a, b = r[1:], r[:-1]
    den = (b * b).sum(axis=0)
    phi = np.clip(np.where(den > 0, (a * b).sum(axis=0) / np.where(den > 0, den, 1), 0.0), -0.9, 0.9)
    n_obs = np.maximum((~np.isnan(dev)).sum(axis=0), 1)
    center_se = np.sqrt(np.pi / 2.0 * _median_lrv(phi) / n_obs)
    return CurationReport(status, keep, rate, int(mcd_drop.sum()), int(corr_drop.sum()), loc, scale, phi, center, sc,
                          log, center_se, left_out, *fit_common_mode_or_reason(kept, min_scale=min_scale))
