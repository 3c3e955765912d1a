"""Calibration compiler: healthy baseline Frame -> :class:`CompiledConfig`."""

from __future__ import annotations

import hashlib
import logging
import warnings
from typing import Any

import numpy as np
from scipy.special import gammaincinv

from .. import __version__
from .._exceptions import InputError
from ..telemetry import Frame, check_domain, signal_domains
from ._certificate import uncertified
from ._columns import lag1_coefficients, mad_scales, nanstd_columns
from ._content_id import content_id
from ._config import SCHEMA_VERSION, Cell, CompiledConfig, CovarianceBlock, SignalMeta
from ._families import family_extras
from ._model_check import model_check
from ._transform import C_HI, C_LO, clip_scores, g_step_innovation, level_neighbour, transform_values

__all__ = ["baseline_hash", "compile_baseline"]

log = logging.getLogger(__name__)

_LEVELS = ("hour_dow_tier", "hour_tier", "tier")
#: lower chi^2 quantile for the upper confidence bound on the between-day level variance (80% bound)
DAY_VAR_CONFIDENCE = 0.2
#: level of the chi^2 test for day-to-day level variation (the bound is used only when it rejects)
DAY_TEST_LEVEL = 0.99


def _fit_mcd(data: np.ndarray, seed: int) -> Any:
    """MinCovDet fitted on ``data``, or ``None`` when its support (about half the rows) has zero covariance
    (sklearn's ValueError, e.g. a signal that is mostly one value); any other error propagates."""
    from sklearn.covariance import MinCovDet  # imported where used: it is most of a CLI/service start otherwise

    try:
        return MinCovDet(random_state=seed).fit(data)
    except ValueError as exc:
        if "support data is equal to 0" in str(exc):
            return None
        raise


def _chi2_ppf(q: float, df: np.ndarray) -> np.ndarray:
    """``scipy.stats._chi2_ppf(q, df)`` (the same expression scipy evaluates) without the distribution
    object's argument handling, which cost more than the quantile in the compiler's loops."""
    return 2.0 * gammaincinv(np.asarray(df, dtype=float) / 2.0, q)


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


def _discreteness(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: is the signal discrete (>= 20% of its values tied at one value), and its resolution
    (smallest positive gap between distinct values; 0 for continuous signals)."""
    k = values.shape[1]
    discrete, res = np.zeros(k, dtype=bool), np.zeros(k)
    for j in range(k):
        col = values[~np.isnan(values[:, j]), j]
        if col.size < 10:
            continue
        uniq, counts = np.unique(col, return_counts=True)
        if counts.max() >= 0.2 * col.size:
            discrete[j] = True
            gaps = np.diff(uniq)
            res[j] = float(gaps.min()) if gaps.size else 0.0
    return discrete, res


def _location_cols(x: np.ndarray, use_mean: np.ndarray) -> np.ndarray:
    """Column medians, or means where ``use_mean`` (discrete signals, e.g. low-count error rates: a
    median sits on the atom and misses the level the scores are centred on). Continuous rates and
    counts keep the median: with heavy tails a mean level made family D fire above its alpha."""
    med = _nanmedian_cols(x)
    if not use_mean.any() or x.shape[0] == 0:
        return med
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
    return np.where(use_mean, mean, med)


def _nanmedian_cols(x: np.ndarray) -> np.ndarray:
    if x.shape[0] == 0:
        return np.full(x.shape[1], np.nan)
    if not np.isnan(x).any():
        return np.median(x, axis=0)
    with warnings.catch_warnings():  # all-NaN columns give NaN, which callers handle
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=0)


def _cell_layout(cell_rows: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Buckets of cells of similar size for :func:`_cell_stats` (the global cell does not pad the hour
    cells): per bucket the cell indices, their rows as one (cells, width) index array (padding: row 0)
    and the (cells, width, 1) mask of real rows. Computed once per compile and shared by its calls."""
    n_cells = len(cell_rows)
    sizes = np.array([r.size for r in cell_rows])
    order = np.argsort(sizes, kind="stable")
    layout = []
    start = 0
    while start < n_cells:
        stop = start + 1
        while stop < n_cells and sizes[order[stop]] <= 2 * max(sizes[order[start]], 8):
            stop += 1
        group = order[start:stop]
        width = int(sizes[group].max())
        idx = np.full((group.size, width), -1)
        for g, c in enumerate(group):
            idx[g, : sizes[c]] = cell_rows[c]
        layout.append((group, np.maximum(idx, 0), (idx >= 0)[..., None]))
        start = stop
    return layout


def _cell_stats(x: np.ndarray, layout: list[tuple[np.ndarray, np.ndarray, np.ndarray]], use_mean: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell (the rows of each cell of ``layout``, :func:`_cell_layout`, of ``x``): location as
    :func:`_location_cols` (``None``: skip), NaN-ignoring sum and count of values, for all cells at once.

    Cells of similar size are stacked into one NaN-padded array; sorting puts NaN last, so the median
    of a column is read off at its own count. The sums add rows in order as ``np.nansum(x[rows], axis=0)``
    does, and the medians are the same order statistics as ``np.median``, so the results equal the
    per-cell calls.
    """
    n_cells, k = sum(g.size for g, _r, _m in layout), x.shape[1]
    loc = np.full((n_cells, k), np.nan)
    tot = np.zeros((n_cells, k))
    cnt = np.zeros((n_cells, k))
    for group, rows, real in layout:
        width = rows.shape[1]
        pad = np.where(real, x[rows], np.nan)  # (cells, width, k)
        present = ~np.isnan(pad)
        n_ok = present.sum(axis=1)
        cnt[group] = n_ok
        tot[group] = np.where(present, pad, 0.0).sum(axis=1)
        if use_mean is not None and width > 0:
            srt = np.ascontiguousarray(pad.transpose(0, 2, 1))  # (cells, k, width): each sort runs on contiguous memory
            srt.sort(axis=2)
            lo = np.take_along_axis(srt, np.maximum((n_ok - 1) // 2, 0)[:, :, None], axis=2)[:, :, 0]
            hi = np.take_along_axis(srt, np.maximum(n_ok // 2, 0)[:, :, None], axis=2)[:, :, 0]
            med = np.where(n_ok > 0, (lo + hi) / 2.0, np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = tot[group] / n_ok
            loc[group] = np.where(use_mean, np.where(n_ok > 0, mean, np.nan), med)
    return loc, tot, cnt


def _pool(
    est: np.ndarray, var: np.ndarray, parent: list[int], levels: list[str], root_value: np.ndarray, root_var: np.ndarray,
    tests: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Hierarchical pooling of cell estimates toward their parent cell, level by level.

    Per level and column, the cells' deviations from their parents are tested for being pure noise
    (:math:`Q = \sum_c d_c^2 / v_c` against the 99% quantile of :math:`\chi^2_K`). If cell effects are
    real, each cell keeps its own (unbiased) estimate and variance; otherwise the level is pooled into
    the parents: the parent's estimate, and the parent's variance plus a 90% upper bound on the
    between-cell variance (effects too small to detect are covered, not assumed away). A cell without
    an estimate (NaN) inherits.
    Unlike shrinkage, neither choice leaves a systematic bias given a fixed seasonal pattern, so the
    recorded variance describes the whole error. Cell 0 is the root. ``tests``, when given, receives
    per level the statistic Q and its degrees of freedom per column (used by the model check).
    """
    out = np.array(est, dtype=float, copy=True)
    post = np.array(var, dtype=float, copy=True)
    out[0], post[0] = root_value, root_var
    for level in ("tier", "hour_tier", "hour_dow_tier"):
        idx = [c for c in range(1, len(levels)) if levels[c] == level]
        if not idx:
            continue
        par = np.array([parent[c] for c in idx])
        d = est[idx] - out[par]
        ok = ~np.isnan(d)
        q = np.where(ok, d * d / np.maximum(var[idx], 1e-300), 0.0).sum(axis=0)
        dof = ok.sum(axis=0)
        kk = np.maximum(dof, 1)
        real = (dof > 0) & (q > _chi2_ppf(0.99, kk))
        if tests is not None:
            tests[level] = (q, dof)
        keep = ok & real[None, :]
        # pooled cells may still carry effects too small to detect: declare an upper bound on their
        # variance, tau2_up = mean v * (Q / chi2_0.10(K) - 1)+, so the error stays inside the variance
        vbar = np.where(ok, var[idx], 0.0).sum(axis=0) / kk
        tau2_up = vbar * np.maximum(q / _chi2_ppf(0.10, kk) - 1.0, 0.0)
        out[idx] = np.where(keep, est[idx], out[par])
        post[idx] = np.where(keep, var[idx], post[par] + tau2_up[None, :])
    return out, post


def _run_model_check(
    z: np.ndarray, ts: np.ndarray, tiers_arr: np.ndarray, names: tuple[str, ...], phi: np.ndarray, tick_seconds: float,
    pool_tests: dict[str, tuple[np.ndarray, np.ndarray]], cells_meta: list[tuple[str, str, np.ndarray]], parent: list[int], loc: np.ndarray,
) -> list[dict[str, Any]]:
    """The model check's table; hour x day-of-week cells that keep their own level (not pooled) and whose
    fitting rows lie on one calendar day mark that signal's weekly levels as seen once."""
    k = z.shape[1]
    single = np.zeros(k, dtype=bool)
    for c, (_key, level, rows) in enumerate(cells_meta):
        if level == "hour_dow_tier" and rows.size and np.unique(np.floor(ts[rows] / 86400.0)).size == 1:
            single |= loc[c] != loc[parent[c]]
    q, dof = pool_tests.get("hour_dow_tier", (np.zeros(k), np.zeros(k, dtype=int)))
    weekly = [(float(q[j]), int(dof[j]), bool(single[j])) for j in range(k)]
    return model_check(z, ts, tiers_arr, names, phi, tick_seconds, weekly)


def compile_baseline(
    frame: Frame,
    *,
    seed: int = 0,
    min_cell_samples: int = 40,
    calibration_fraction: float = 0.2,
    block_ticks: int = 60,
    reference_size: int = 1000,
    robust_covariance: bool = True,
    prewhiten: bool = True,
    check_model: bool = True,
) -> CompiledConfig:
    r"""Compile a healthy baseline into a frozen config.

    Parameters
    ----------
    frame : Frame
        Healthy baseline telemetry (any signals; NaN = missing).
    seed : int
        Seeds the fit / calibration split, the reference subsample and MCD; recorded in the config.
    min_cell_samples : int
        A cell hour x day-of-week x tier with fewer baseline rows is pooled into hour x tier, then tier,
        then the global cell; a level whose cell effects are not significant is pooled into its parents.
    calibration_fraction : float
        Share of contiguous blocks of ``block_ticks`` rows set aside as the calibration split
        (reference samples for families C/E), disjoint from the fitting split.
    reference_size : int
        At most this many calibration rows per tier are stored.
    robust_covariance : bool
        Also fit the MCD (``sklearn.covariance.MinCovDet``) per tier and globally. Where it cannot be
        fitted (its support, about half the rows, has zero covariance: e.g. the only signal is constant
        or mostly one value, as a rarely non-zero error count), that block stores no MCD
        (``mcd_location``/``mcd_covariance`` ``None``, as with ``robust_covariance=False``) and a
        warning is logged (logger ``deploysignal.calibration._compiler``); the gate does not use the
        MCD, and the signal is standardised with its sd or resolution floor as in any baseline.
    prewhiten : bool
        Fit AR(1) coefficients (default). ``False`` forces :math:`\phi = 0`; it exists only as the
        negative control showing that autocorrelated telemetry breaks the guarantees without it.
    check_model : bool
        Run the model check (:func:`~deploysignal.calibration.model_check`) on the baseline's
        innovations and store its table in ``certification["checks"]`` (default). ``False`` stores no
        certification (the backtest's own compiles skip it; such a config reads as uncertified). A
        config from this function alone is uncertified ("not backtested"): :func:`~deploysignal.gate.certify_baseline`
        (``deploysignal calibrate``) backtests it and decides.

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
    check_domain(frame.values, signal_domains(specs), frame.signals, what="baseline",  # a declared range the baseline breaks is wrong
                 hint=" (the built-in catalogue's range unless a signals file declares one: give this signal `range: [lo, hi]` in a"
                      " signals file, `calibrate --signals`, if its scale differs)")
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

    # ---- cells with hierarchical pooling. The layout depends on timestamps and tiers only (all rows),
    # not on values or the split, so baselines on one timeline share a layout; estimates use fit rows.
    tier_code = np.searchsorted(np.array(tiers), tiers_arr)

    def _codes(t: np.ndarray) -> dict[str, np.ndarray]:
        """One integer code per row and level, decoded into the key strings of ``cell_keys``."""
        sec = np.floor(t).astype(np.int64)
        hour = (sec % 86400) // 3600
        dow = (sec // 86400 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        return {"hour_dow_tier": (tier_code * 24 + hour) * 7 + dow, "hour_tier": tier_code * 24 + hour, "tier": tier_code}

    def _key(level: str, code: int) -> str:
        if level == "hour_dow_tier":
            t_, rem = divmod(code, 24 * 7)
            h_, d_ = divmod(rem, 7)
            return f"h={h_:02d}|d={d_}|t={tiers[t_]}"
        if level == "hour_tier":
            t_, h_ = divmod(code, 24)
            return f"h={h_:02d}|t={tiers[t_]}"
        return f"t={tiers[code]}"

    discrete, resolution = _discreteness(frame.values[fit])
    use_mean = discrete  # continuous rates/counts keep the median (robust to heavy tails); see _location_cols
    global_loc = _location_cols(x[fit], use_mean)
    global_raw = _location_cols(frame.values[fit], use_mean)
    cell_index: dict[str, int] = {"*": 0}
    cells_meta: list[tuple[str, str, np.ndarray]] = [("*", "global", np.flatnonzero(fit))]  # parents first
    kept: dict[str, dict[int, int]] = {}
    row_codes = _codes(ts)
    for level in ("tier", "hour_tier", "hour_dow_tier"):
        uniq, inverse, cnts = np.unique(row_codes[level], return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(cnts)])
        kept[level] = {}
        for key, u in sorted((_key(level, int(code)), u) for u, code in enumerate(uniq) if cnts[u] >= min_cell_samples):
            rows = order[bounds[u] : bounds[u + 1]]
            cell_index[key] = kept[level][int(uniq[u])] = len(cells_meta)
            cells_meta.append((key, level, rows[fit[rows]]))

    def _resolve(codes: dict[str, np.ndarray]) -> np.ndarray:
        """Finest kept cell per row (the same rule as the gate's key lookup)."""
        out = np.zeros(n, dtype=int)
        for level in ("tier", "hour_tier", "hour_dow_tier"):
            table = np.full(int(codes[level].max()) + 1, -1)
            for code, cell in kept[level].items():
                if code < table.size:
                    table[code] = cell
            idx = table[codes[level]]
            out = np.where(idx >= 0, idx, out)
        return out

    row_cell = _resolve(row_codes)
    nb_offset, w_own = level_neighbour(ts, tick_seconds)
    row_nb = _resolve(_codes(ts + nb_offset))
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
    cell_rows = [rows for _k, _lv, rows in cells_meta]
    layout = _cell_layout(cell_rows)
    loc_x, _sum, cnt = _cell_stats(x, layout, use_mean)
    loc_raw, _sum, _cnt = _cell_stats(frame.values, layout, use_mean)
    for c, rows in enumerate(cell_rows):  # parents come first
        enough = cnt[c] >= min(10, max(1, rows.size))
        med[c] = np.where(enough, loc_x[c], np.nan)
        raw = loc_raw[c]
        raw_loc[c] = np.where(enough & ~np.isnan(raw), raw, global_raw if c == 0 else raw_loc[parent[c]])
    med[0] = np.where(np.isnan(med[0]), global_loc, med[0])

    has_prev = prev_idx >= 0
    pair = fit & has_prev
    # AR(1) phi from day-lagged differences u_t = x_t - x_{t - 1 day}: they remove any daily
    # seasonality exactly and are AR(1) with the same phi, so phi is not biased by demeaning within
    # hour cells (Kendall / Nickell bias). Falls back to cell-demeaned levels for baselines < ~1.5 days.
    lag_row = np.full(n, -1)
    for tier in tiers:
        idx = np.flatnonzero(tiers_arr == tier)
        pos = np.searchsorted(ts[idx], ts[idx] - 86400.0)
        pos_c = np.minimum(pos, idx.size - 1)
        hit = np.abs(ts[idx][pos_c] - (ts[idx] - 86400.0)) <= 0.25 * tick_seconds
        lag_row[idx[hit]] = idx[pos_c[hit]]
    u = np.where((lag_row >= 0)[:, None], x - x[np.maximum(lag_row, 0)], np.nan)

    def _phi_from(series: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return lag1_coefficients(series[rows], series[prev_idx[rows]], -0.5, 0.98)

    def _ar1(loc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = x - (w_own[:, None] * loc[row_cell] + (1.0 - w_own)[:, None] * loc[row_nb])
        rows = np.flatnonzero(pair)
        if np.sum(~np.isnan(u[rows]).any(axis=1)) >= 200:
            phi, cnt = _phi_from(u, rows)
        else:
            phi, cnt = np.full(k, np.nan), np.zeros(k)
        phi_y, cnt_y = _phi_from(y, rows)
        phi, cnt = np.where(np.isnan(phi), phi_y, phi), np.where(np.isnan(phi), cnt_y, cnt)
        phi = np.where(np.isnan(phi), 0.0, phi)
        se = np.sqrt((1.0 - phi**2) / np.maximum(cnt, 1.0))
        if not prewhiten:
            return y, np.zeros(k), np.zeros(k)
        return y, phi, se

    # ---- hierarchical pooling of cell levels toward the parent cell
    loc0 = np.where(np.isnan(med), med[0], med)
    y0, phi, _se = _ar1(loc0)
    # error variance of the cell levels: a median's is (pi/2) MAD^2 / n_eff, a mean's sd^2 / n_eff (with
    # heavy tails the sd exceeds the MAD scale, so a mean level must not borrow the median's variance)
    y0_fit = y0[fit]
    sd_y = nanstd_columns(y0_fit)
    sig_y = np.where(use_mean, sd_y, mad_scales(y0_fit))
    inflate = np.where(use_mean, 1.0, np.pi / 2.0) * (1.0 + phi) / np.maximum(1.0 - phi, 1e-3)
    med_var = sig_y**2 * inflate / np.maximum(cnt, 1)
    pool_tests: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    loc, loc_var = _pool(med, med_var, parent, levels, med[0], med_var[0], pool_tests)

    # ---- AR(1) prewhitening on the pooled levels
    y, phi, phi_se = _ar1(loc)
    # g-step innovations from the last observed value of each signal (as the gate does), so missing
    # ticks in the baseline standardise exactly like missing ticks in the canary
    y_last = np.full_like(y, np.nan)
    gap = np.full_like(y, np.nan)
    for tier in tiers:
        idx = np.flatnonzero(tiers_arr == tier)
        pos = np.where(np.isnan(y[idx]), -1, np.arange(idx.size)[:, None])
        last = np.vstack([np.full((1, k), -1), np.maximum.accumulate(pos, axis=0)[:-1]])
        seen = last >= 0
        rows = idx[np.maximum(last, 0)]
        y_last[idx] = np.where(seen, y[rows, np.arange(k)], np.nan)
        gap[idx] = np.where(seen, (ts[idx][:, None] - ts[rows]) / tick_seconds, np.nan)
    innov, _lag = g_step_innovation(y, y_last, gap, phi, np.sqrt(1.0 - phi**2))
    scale = np.empty(k)
    innov_fit = innov[fit]
    mads = mad_scales(innov_fit[:, ~discrete])
    mad_of = dict(zip(np.flatnonzero(~discrete).tolist(), mads.tolist()))
    for j in range(k):
        s_ = mad_of.get(j, 0.0)  # a MAD collapses on an atom: 0 for discrete signals
        if s_ <= 0:  # discrete or (near-)constant signal: the sd, then a resolution floor
            col = innov_fit[:, j]
            s_ = float(np.nanstd(col)) if np.sum(~np.isnan(col)) > 1 else 0.0
        floor = 1e-3 if (kind_rate[j] or kind_count[j]) else max(1e-9, 1e-6 * abs(float(global_loc[j])))
        scale[j] = max(s_, floor)
    z = orient * innov / scale
    checks = _run_model_check(z, ts, tiers_arr, frame.signals, phi, tick_seconds, pool_tests, cells_meta, parent, loc) if check_model else None

    # ---- day-to-day level drift: between-day variance tau^2 of the de-seasonalised level, from the
    # daily means D_d of the day-lag differences u (D_d = offset_d - offset_{d-1} + noise). With
    # n_d ticks, E[D_d^2] = 2 tau^2 + 2 sig_y^2 (1 + phi) / ((1 - phi) n_d) (AR(1) sampling variance).
    # Needs a baseline longer than one day; 0 otherwise.
    day_key = np.floor(ts / 86400.0).astype(np.int64)
    d2_sum, samp_sum, n_days, t_stat = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    for tier in tiers:
        for dk in np.unique(day_key[tiers_arr == tier]):
            rows_d = np.flatnonzero((tiers_arr == tier) & (day_key == dk) & fit)
            if rows_d.size == 0:
                continue
            ud = u[rows_d]
            n_d = np.sum(~np.isnan(ud), axis=0)
            use = n_d >= 0.5 * 86400.0 / tick_seconds
            mean_d = np.nansum(ud, axis=0) / np.maximum(n_d, 1)
            samp_d = 2.0 * sig_y**2 * (1.0 + phi) / (np.maximum(1.0 - phi, 1e-3) * np.maximum(n_d, 1))
            d2_sum += np.where(use, mean_d**2, 0.0)
            samp_sum += np.where(use, samp_d, 0.0)
            t_stat += np.where(use, mean_d**2 / np.maximum(samp_d, 1e-300), 0.0)
            n_days += use
    # Test, then bound: without day effects T = sum D_d^2 / s_d ~ chi^2_n (approximately: adjacent
    # differences share a day and are correlated, so the test is somewhat liberal); when T exceeds its
    # DAY_TEST_LEVEL quantile, tau^2 is its upper 80% confidence bound (sum D_d^2 ~ (2 tau^2 + s)
    # chi^2_n), biased upward because an underestimate costs validity and an overestimate power;
    # otherwise 0, so baselines without day effects keep full power against sustained shifts.
    has_days = (n_days > 0) & (t_stat > _chi2_ppf(DAY_TEST_LEVEL, np.maximum(n_days, 1)))
    chi_lo = _chi2_ppf(DAY_VAR_CONFIDENCE, np.maximum(n_days, 1))
    upper = d2_sum / chi_lo - samp_sum / np.maximum(n_days, 1)
    day_tau2 = np.where(has_days, np.maximum(0.0, upper) / 2.0, 0.0)

    # ---- clipped scores: per-cell centres (pooled) and the variance of their error (family A)
    means, sds, centers, bias_var, day_bias, lag1 = [], [], [], [], [], np.zeros(k)
    prev_rows = prev_idx[pair]
    for d, sign in enumerate((1.0, -1.0)):
        psi = clip_scores(sign * z)
        cnt_fit = np.sum(~np.isnan(psi[fit]), axis=0)
        m = np.nansum(psi[fit], axis=0) / np.maximum(cnt_fit, 1)
        sd = np.sqrt(np.nansum((psi[fit] - m) ** 2, axis=0) / np.maximum(cnt_fit - 1, 1))
        sd = np.where(sd > 1e-12, sd, 1.0)
        a_all, b_all = psi[pair] - m, psi[prev_rows] - m
        r = np.nan_to_num(lag1_coefficients(a_all, b_all, 0.0, 0.9)[0], nan=0.0)
        if d == 0:
            lag1 = r
        neff_factor = (1.0 - r) / (1.0 + r)
        _loc, cell_sum, cell_cnt = _cell_stats(psi, layout, None)
        cell_mean = np.where(cell_cnt >= 10, cell_sum / np.maximum(cell_cnt, 1), np.nan)
        est_var = sd**2 / np.maximum(cell_cnt * neff_factor, 1.0)
        root_var = sd**2 / np.maximum(cnt_fit * neff_factor, 1.0)
        cen, post = _pool(cell_mean, est_var, parent, levels, m, root_var)
        # A canary level off by delta from the pooled cell level shifts the innovations by
        # (1 - phi) delta / sigma_e and the clipped score by sens times that (sens = share of unclipped
        # scores). The centres cannot see this error (they are computed on the rows that set the level),
        # so its posterior variance is added to the centre's.
        sens = np.mean((psi[fit] > -C_LO) & (psi[fit] < C_HI), axis=0)
        level_bias = loc_var * ((1.0 - phi) * sens / (scale * sd)) ** 2
        # the canary's day offset against the baseline's (conservatively: two independent day offsets)
        day_bias.append((2.0 * day_tau2 * ((1.0 - phi) * sens / (scale * sd)) ** 2).tolist())
        means.append(m.tolist())
        sds.append(sd.tolist())
        centers.append((cen / sd).tolist())  # x = psi/sd - centre
        bias_var.append((post / sd**2 + level_bias).tolist())

    # ---- covariance of the standardised innovations (per tier and global), reference samples
    zc = np.clip(z, -C_HI, C_HI)
    complete = ~np.isnan(zc).any(axis=1)
    blocks: list[CovarianceBlock] = []
    cov_of_key: dict[str, int] = {}
    reference: dict[str, list[list[float]]] = {}
    ref_arrays: dict[str, np.ndarray] = {}
    fits: dict[bytes, tuple[np.ndarray, float, np.ndarray]] = {}
    for key, rows_mask in [("*", fit & complete)] + [(f"t={t}", fit & complete & (tiers_arr == t)) for t in tiers]:
        rows = np.flatnonzero(rows_mask)
        if rows.size < max(2 * k, 10):
            continue
        data = zc[rows]
        if rows.tobytes() not in fits:  # a single tier has the global rows: fit them once
            from sklearn.covariance import LedoitWolf

            lw = LedoitWolf().fit(data)
            fits[rows.tobytes()] = (lw.covariance_, float(lw.shrinkage_), np.linalg.cholesky(lw.covariance_ + 1e-12 * np.eye(k)))
        cov, shrinkage, chol = fits[rows.tobytes()]
        mloc = mcov = None
        if robust_covariance and rows.size > 2 * k + 2:
            sub = data if rows.size <= 2000 else data[np.sort(rng.choice(rows.size, 2000, replace=False))]
            mcd = _fit_mcd(sub, int(rng.integers(2**31 - 1)))
            if mcd is not None:
                mloc, mcov = mcd.location_.tolist(), mcd.covariance_.tolist()
            else:  # support covariance 0 (most rows share one value): no MCD, as without robust_covariance
                log.warning("covariance block %s: the MCD cannot be fitted (about half of its %d rows share one "
                            "value in every signal: zero covariance); no robust covariance is stored for it",
                            key, int(sub.shape[0]))
        cov_of_key[key] = len(blocks)
        blocks.append(
            CovarianceBlock(
                key=key, n=int(rows.size), ledoit_wolf=cov.tolist(), shrinkage=shrinkage,
                cholesky=chol.tolist(), mcd_location=mloc, mcd_covariance=mcov,
            )
        )
    if "*" not in cov_of_key:
        raise InputError(f"baseline has too few complete rows ({int((fit & complete).sum())}) to estimate a covariance")
    for t in tiers:
        cal_rows = np.flatnonzero(is_cal & complete & (tiers_arr == t))
        if cal_rows.size > reference_size:
            cal_rows = np.sort(rng.choice(cal_rows, reference_size, replace=False))
        ref_arrays[t] = zc[cal_rows]
        reference[t] = ref_arrays[t].tolist()

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
        SignalMeta(name=s.name, direction=s.direction, kind=s.kind, phi=float(phi[j]), phi_se=float(phi_se[j]), innov_scale=float(scale[j]), score_lag1=float(lag1[j]), resolution=float(resolution[j]),
                   range=None if s.range is None else list(s.range))
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
        split={"calibration_fraction": calibration_fraction, "block_ticks": block_ticks, "n_fit": int(fit.sum()), "n_calibration": int(is_cal.sum()), "prewhiten": prewhiten},
        signals=[s.model_dump() for s in signals],
        tiers=tiers,
        cells=[c.model_dump() for c in cells],
        cell_map=dict(sorted(cell_index.items())),
        covariances=[b.model_dump() for b in blocks],
        reference=reference,
        score_calibration={"clip": [C_LO, C_HI], "mean": means, "sd": sds, "cell_center": centers, "cell_bias_var": bias_var, "day_bias_var": day_bias},
        extras=family_extras(ref_arrays, k),
    )
    if checks is not None:
        payload["certification"] = uncertified(checks, ["not backtested: compiled without `calibrate`'s backtest"])
    payload["version_id"] = content_id(payload, {"reference": ref_arrays})
    log.debug("compiled %d cells from %d baseline rows", n_cells, n)
    return CompiledConfig.model_validate(payload)
