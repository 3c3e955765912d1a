"""Calibration compiler: healthy baseline Frame -> :class:`CompiledConfig`."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from sklearn.covariance import LedoitWolf, MinCovDet

from .. import __version__
from .._exceptions import InputError
from ..telemetry import Frame
from ._config import SCHEMA_VERSION, Cell, CompiledConfig, CovarianceBlock, SignalMeta
from ._transform import C_HI, C_LO, cell_keys, clip_scores, transform_values

__all__ = ["baseline_hash", "compile_baseline"]

log = logging.getLogger(__name__)

_LEVELS = ("hour_dow_tier", "hour_tier", "tier")


def baseline_hash(frame: Frame) -> str:
    """SHA-256 of the baseline's signals, timestamps, values and cohorts (NaN canonicalised)."""
    h = hashlib.sha256()
    h.update("\x1f".join(frame.signals).encode())
    h.update(np.ascontiguousarray(frame.timestamps, dtype="<f8").tobytes())
    vals = np.where(np.isnan(frame.values), np.nan, frame.values)
    h.update(np.ascontiguousarray(vals, dtype="<f8").tobytes())
    if frame.cohort is not None:
        h.update("\x1f".join(frame.cohort.tolist()).encode())
    return h.hexdigest()


def _nanmedian_cols(x: np.ndarray) -> np.ndarray:
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        col = x[:, j]
        col = col[~np.isnan(col)]
        if col.size:
            out[j] = float(np.median(col))
    return out


def _mad_scale(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    if x.size < 2:
        return 0.0
    return float(1.482602218505602 * np.median(np.abs(x - np.median(x))))


def _eb_shrink(
    est: np.ndarray, var: np.ndarray, parent: list[int], levels: list[str], parent_value: np.ndarray, parent_var: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical-Bayes shrinkage of cell estimates toward their parent cell, level by level.

    Model: a cell's true value is its parent's plus an offset ~ N(0, tau2) (tau2 per level and column,
    by the method of moments); the cell estimate adds noise of variance ``var``. Returns posterior means
    and posterior variances (the parent's variance added), cell 0 being the root.
    """
    out = np.array(est, dtype=float, copy=True)
    post = np.array(var, dtype=float, copy=True)
    out[0], post[0] = parent_value, parent_var
    for level in ("tier", "hour_tier", "hour_dow_tier"):
        idx = [c for c in range(1, len(levels)) if levels[c] == level]
        if not idx:
            continue
        par = np.array([parent[c] for c in idx])
        d = est[idx] - out[par]
        v = var[idx]
        ok = ~np.isnan(d)
        cnt = ok.sum(axis=0)
        tau2 = np.where(cnt > 0, (np.where(ok, d * d - v, 0.0)).sum(axis=0) / np.maximum(cnt, 1), 0.0)
        tau2 = np.maximum(tau2, 0.0)
        w = np.where(ok, tau2 / (tau2 + v), 0.0)
        out[idx] = out[par] + w * np.where(ok, d, 0.0)
        # error of the shrunk estimate: (1-w)(parent error - offset) + w noise
        post[idx] = w * v + (1.0 - w) ** 2 * post[par]
    return out, post


def compile_baseline(
    frame: Frame,
    *,
    seed: int = 0,
    min_cell_samples: int = 40,
    calibration_fraction: float = 0.2,
    block_ticks: int = 60,
    reference_size: int = 1000,
    robust_covariance: bool = True,
) -> CompiledConfig:
    """Compile a healthy baseline into a frozen config.

    Parameters
    ----------
    frame : Frame
        Healthy baseline telemetry (any signals; NaN = missing).
    seed : int
        Seeds the fit / calibration split, the reference subsample and MCD; recorded in the config.
    min_cell_samples : int
        A cell hour x day-of-week x tier with fewer fitting rows is pooled into hour x tier, then tier,
        then the global cell (hierarchical pooling toward coarser cells).
    calibration_fraction : float
        Share of contiguous blocks of ``block_ticks`` rows set aside as the calibration split
        (reference samples for families C/E), disjoint from the fitting split.
    reference_size : int
        At most this many calibration rows per tier are stored.
    robust_covariance : bool
        Also fit the MCD (``sklearn.covariance.MinCovDet``) per tier and globally.

    Returns
    -------
    CompiledConfig

    Notes
    -----
    Per signal the compiler: variance-stabilises (rates, counts); removes a per-cell median
    (seasonality); fits AR(1) :math:`\\phi` on consecutive de-seasonalised pairs; forms innovations

    .. math:: e_t = y_t - \\phi\\, y_{t-1}, \\qquad z_t = s\\, e_t / \\hat\\sigma_e,

    with :math:`s=-1` for ``down`` signals (positive z = harmful) and :math:`\\hat\\sigma_e` the MAD
    scale; then records, per cell and direction, the mean of the clipped score and the variance of that
    estimate (``1/n_eff``), which family A uses to account for finite-baseline estimation error.

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.telemetry import Frame
    >>> rng = np.random.default_rng(0)
    >>> f = Frame(np.arange(600.0) * 60, rng.normal(size=(600, 2)), ("a", "b"))
    >>> cfg = compile_baseline(f, seed=1)
    >>> cfg.version_id == compile_baseline(f, seed=1).version_id
    True
    >>> cfg.version_id.startswith("cc-")
    True
    """
    n, k = len(frame), frame.n_signals
    if n < 3 * min_cell_samples // 2 or n < 30:
        raise InputError(f"baseline has {n} rows; need at least {max(30, 3 * min_cell_samples // 2)}")
    all_nan = [frame.signals[j] for j in range(k) if np.all(np.isnan(frame.values[:, j]))]
    if all_nan:
        raise InputError(f"baseline signal has no values (all missing): {', '.join(all_nan)}", column=all_nan[0])
    specs = frame.specs
    kind_rate = np.array([s.kind == "rate" for s in specs])
    kind_count = np.array([s.kind == "count" for s in specs])
    orient = np.array([-1.0 if s.direction == "down" else 1.0 for s in specs])
    rng = np.random.default_rng(seed)
    ts = frame.timestamps
    tiers_arr = frame.cohort if frame.cohort is not None else np.full(n, "", dtype=str)
    tiers = sorted(set(tiers_arr.tolist()))
    x = transform_values(frame.values, kind_rate, kind_count)
    tick_seconds = float(np.median(np.diff(np.unique(ts)))) if n > 1 else 1.0

    # ---- fit / calibration split: contiguous blocks of rows within each tier
    is_cal = np.zeros(n, dtype=bool)
    prev_idx = np.full(n, -1)
    for tier in tiers:
        idx = np.flatnonzero(tiers_arr == tier)
        nb = int(np.ceil(idx.size / block_ticks))
        draw = rng.random(nb) < calibration_fraction
        if nb >= 5:
            draw[nb // 2] = True  # at least one calibration block
            draw[0] = False  # and the first block fits
        for b in np.flatnonzero(draw):
            is_cal[idx[b * block_ticks : (b + 1) * block_ticks]] = True
        consecutive = np.diff(ts[idx]) <= 1.5 * tick_seconds
        prev_idx[idx[1:][consecutive]] = idx[:-1][consecutive]
    fit = ~is_cal

    # ---- cells with hierarchical pooling (counts on the fitting split)
    keys = [cell_keys(float(t), str(c)) for t, c in zip(ts, tiers_arr)]
    counts: dict[str, int] = {}
    for i in np.flatnonzero(fit):
        for key in keys[i]:
            counts[key] = counts.get(key, 0) + 1
    global_loc = _nanmedian_cols(x[fit])
    global_raw = _nanmedian_cols(frame.values[fit])
    # levels: resolve each key to the finest level with enough rows
    cell_index: dict[str, int] = {}
    cells_meta: list[tuple[str, str, np.ndarray]] = []  # key, level, row indices

    def _add(key: str, level: str, rows: np.ndarray) -> int:
        cell_index[key] = len(cells_meta)
        cells_meta.append((key, level, rows))
        return cell_index[key]

    _add("*", "global", np.flatnonzero(fit))
    rows_by_key: dict[str, list[int]] = {}
    for i in np.flatnonzero(fit):
        for key in keys[i]:
            rows_by_key.setdefault(key, []).append(int(i))
    for level_pos, level in reversed(list(enumerate(_LEVELS))):
        for key in sorted(k_ for k_ in rows_by_key if k_.count("|") == 2 - level_pos):
            if counts[key] >= min_cell_samples:
                _add(key, level, np.asarray(rows_by_key[key]))
    row_cell = np.empty(n, dtype=int)
    for i in range(n):
        row_cell[i] = next((cell_index[key] for key in keys[i] if key in cell_index), 0)
    parent: list[int] = []
    for key, level, _ in cells_meta:
        if level == "global":
            parent.append(0)
        elif level == "tier":
            parent.append(0)
        else:
            tier_key = "t=" + key.split("|t=")[1]
            hour_key = key.split("|")[0] + "|" + tier_key
            parent.append(cell_index.get(hour_key if level == "hour_dow_tier" else tier_key, cell_index.get(tier_key, 0)))

    # per-cell medians; cells with fewer than 10 values of a signal borrow their parent's
    n_cells = len(cells_meta)
    levels = [lv for _k, lv, _r in cells_meta]
    med = np.full((n_cells, k), np.nan)
    raw_loc = np.empty((n_cells, k))
    cnt = np.zeros((n_cells, k))
    for c, (_key, _level, rows) in enumerate(cells_meta):  # parents come first
        cnt[c] = np.sum(~np.isnan(x[rows]), axis=0)
        enough = cnt[c] >= min(10, max(1, rows.size))
        med[c] = np.where(enough, _nanmedian_cols(x[rows]), np.nan)
        raw = _nanmedian_cols(frame.values[rows])
        raw_loc[c] = np.where(enough & ~np.isnan(raw), raw, global_raw if c == 0 else raw_loc[parent[c]])
    med[0] = np.where(np.isnan(med[0]), global_loc, med[0])

    def _ar1(loc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = x - loc[row_cell]
        y_prev = np.where(has_prev[:, None], y[np.maximum(prev_idx, 0)], np.nan)
        phi = np.zeros(k)
        for j in range(k):
            a, b = y[pair, j], y_prev[pair, j]
            ok = ~(np.isnan(a) | np.isnan(b))
            den = float(np.dot(b[ok], b[ok]))
            phi[j] = float(np.clip(np.dot(a[ok], b[ok]) / den, -0.5, 0.98)) if ok.sum() >= 10 and den > 0 else 0.0
        return y, y_prev, phi

    has_prev = prev_idx >= 0
    pair = fit & has_prev
    # ---- hierarchical pooling of cell levels (empirical Bayes toward the parent cell)
    loc0 = np.where(np.isnan(med), med[0], med)
    y0, _yp, phi = _ar1(loc0)
    sig_y = np.array([_mad_scale(y0[fit, j]) for j in range(k)])
    inflate = (np.pi / 2.0) * (1.0 + phi) / np.maximum(1.0 - phi, 1e-3)
    med_var = sig_y**2 * inflate / np.maximum(cnt, 1)
    loc, _ = _eb_shrink(med, med_var, parent, levels, med[0], med_var[0])

    # ---- AR(1) prewhitening on the pooled levels
    y, y_prev, phi = _ar1(loc)
    innov = np.where(np.isnan(y_prev), y * np.sqrt(1.0 - phi**2), y - phi * y_prev)
    scale = np.empty(k)
    for j in range(k):
        s_ = _mad_scale(innov[fit, j])
        if s_ <= 0:  # (near-)constant signal: fall back to the sd, then to a resolution floor
            col = innov[fit, j]
            s_ = float(np.nanstd(col)) if np.sum(~np.isnan(col)) > 1 else 0.0
        floor = 1e-3 if (kind_rate[j] or kind_count[j]) else max(1e-9, 1e-6 * abs(float(global_loc[j])))
        scale[j] = max(s_, floor)
    z = orient * innov / scale

    # ---- clipped scores: per-cell centres (pooled) and the variance of their error (family A)
    means, sds, centers, bias_var, lag1 = [], [], [], [], np.zeros(k)
    prev_rows = prev_idx[pair]
    for d, sign in enumerate((1.0, -1.0)):
        psi = clip_scores(sign * z)
        cnt_fit = np.sum(~np.isnan(psi[fit]), axis=0)
        m = np.nansum(psi[fit], axis=0) / np.maximum(cnt_fit, 1)
        sd = np.sqrt(np.nansum((psi[fit] - m) ** 2, axis=0) / np.maximum(cnt_fit - 1, 1))
        sd = np.where(sd > 1e-12, sd, 1.0)
        a_all, b_all = psi[pair] - m, psi[prev_rows] - m
        r = np.zeros(k)
        for j in range(k):
            ok = ~(np.isnan(a_all[:, j]) | np.isnan(b_all[:, j]))
            den = float(np.dot(b_all[ok, j], b_all[ok, j]))
            if ok.sum() >= 10 and den > 0:
                r[j] = float(np.clip(np.dot(a_all[ok, j], b_all[ok, j]) / den, 0.0, 0.9))
        if d == 0:
            lag1 = r
        neff_factor = (1.0 - r) / (1.0 + r)
        cell_mean = np.full((n_cells, k), np.nan)
        cell_cnt = np.zeros((n_cells, k))
        for c, (_key, _level, rows) in enumerate(cells_meta):
            vals = psi[rows]
            cell_cnt[c] = np.sum(~np.isnan(vals), axis=0)
            cell_mean[c] = np.where(cell_cnt[c] >= 10, np.nansum(vals, axis=0) / np.maximum(cell_cnt[c], 1), np.nan)
        est_var = sd**2 / np.maximum(cell_cnt * neff_factor, 1.0)
        root_var = sd**2 / np.maximum(cnt_fit * neff_factor, 1.0)
        cen, post = _eb_shrink(cell_mean, est_var, parent, levels, m, root_var)
        means.append(m.tolist())
        sds.append(sd.tolist())
        centers.append((cen / sd).tolist())  # x = psi/sd - centre
        bias_var.append((post / sd**2).tolist())

    # ---- covariance of the standardised innovations (per tier and global), reference samples
    zc = np.clip(z, -C_HI, C_HI)
    complete = ~np.isnan(zc).any(axis=1)
    blocks: list[CovarianceBlock] = []
    cov_of_key: dict[str, int] = {}
    reference: dict[str, list[list[float]]] = {}
    for key, rows_mask in [("*", fit & complete)] + [(f"t={t}", fit & complete & (tiers_arr == t)) for t in tiers]:
        rows = np.flatnonzero(rows_mask)
        if rows.size < max(2 * k, 10):
            continue
        data = zc[rows]
        lw = LedoitWolf().fit(data)
        cov = lw.covariance_
        chol = np.linalg.cholesky(cov + 1e-12 * np.eye(k))
        mloc = mcov = None
        if robust_covariance and rows.size > 2 * k + 2:
            sub = data if rows.size <= 2000 else data[np.sort(rng.choice(rows.size, 2000, replace=False))]
            mcd = MinCovDet(random_state=int(rng.integers(2**31 - 1))).fit(sub)
            mloc, mcov = mcd.location_.tolist(), mcd.covariance_.tolist()
        cov_of_key[key] = len(blocks)
        blocks.append(
            CovarianceBlock(
                key=key, n=int(rows.size), ledoit_wolf=cov.tolist(), shrinkage=float(lw.shrinkage_),
                cholesky=chol.tolist(), mcd_location=mloc, mcd_covariance=mcov,
            )
        )
    if "*" not in cov_of_key:
        raise InputError(f"baseline has too few complete rows ({int((fit & complete).sum())}) to estimate a covariance")
    for t in tiers:
        cal_rows = np.flatnonzero(is_cal & complete & (tiers_arr == t))
        if cal_rows.size > reference_size:
            cal_rows = np.sort(rng.choice(cal_rows, reference_size, replace=False))
        reference[t] = zc[cal_rows].tolist()

    cells = []
    for c, (key, level, rows) in enumerate(cells_meta):
        tier_key = "*" if key == "*" else "t=" + key.split("t=")[1]
        cells.append(
            Cell(
                key=key, level=level, n=int(rows.size), location=loc[c].tolist(), raw_location=raw_loc[c].tolist(),
                cov_index=cov_of_key.get(tier_key, cov_of_key["*"]),
            )
        )
    signals = [
        SignalMeta(name=s.name, direction=s.direction, kind=s.kind, phi=float(phi[j]), innov_scale=float(scale[j]), score_lag1=float(lag1[j]))
        for j, s in enumerate(specs)
    ]
    payload = dict(
        schema_version=SCHEMA_VERSION,
        library_version=__version__,
        seed=int(seed),
        baseline_hash=baseline_hash(frame),
        version_id="",
        tick_seconds=tick_seconds,
        n_baseline=n,
        min_cell_samples=int(min_cell_samples),
        split={"calibration_fraction": calibration_fraction, "block_ticks": block_ticks, "n_fit": int(fit.sum()), "n_calibration": int(is_cal.sum())},
        signals=[s.model_dump() for s in signals],
        tiers=tiers,
        cells=[c.model_dump() for c in cells],
        cell_map=dict(sorted(cell_index.items())),
        covariances=[b.model_dump() for b in blocks],
        reference=reference,
        score_calibration={"clip": [C_LO, C_HI], "mean": means, "sd": sds, "cell_center": centers, "cell_bias_var": bias_var},
        extras={},
    )
    cfg = CompiledConfig.model_validate(payload)
    payload = cfg.model_dump(mode="json")
    payload["version_id"] = CompiledConfig.content_id(payload)
    log.debug("compiled %d cells from %d baseline rows", n_cells, n)
    return CompiledConfig.model_validate(payload)
