"""Per-column statistics of the compiler, computed for all columns at once with the same bits as the
per-column calls they replace.

The compiler used to slice one column at a time (``x[rows, j]``) and call ``np.median``,
``np.nanstd`` or ``np.dot`` on it; for the Monte-Carlo harness's 2,000 compiles per null that slicing
and call overhead was a visible share of ``compile_baseline``. Here each column becomes one contiguous
row of ``x.T`` and the reductions run along that last axis, where numpy reduces every row exactly as
it reduces a 1-D array of the same values (medians are exact order statistics, sums use the same
pairwise summation of a contiguous run, dots the same BLAS call on a contiguous vector). Columns with a
different set of missing rows fall back to the per-column call. ``tests/test_compiler_golden.py`` pins
the compiled configs' bytes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lag1_coefficients", "mad_scale", "mad_scales", "nanstd_columns"]

#: MAD -> sd of a normal law
_MAD_SD = 1.482602218505602


def mad_scale(x: np.ndarray) -> float:
    """MAD scale of the non-missing values of ``x`` (0 for fewer than two)."""
    x = x[~np.isnan(x)]
    if x.size < 2:
        return 0.0
    return float(_MAD_SD * np.median(np.abs(x - np.median(x))))


def _common_rows(cols: np.ndarray) -> np.ndarray | None:
    """``cols`` (columns as rows) without the missing positions when every column misses the same ones,
    else ``None``."""
    nan = np.isnan(cols)
    if not nan.any():
        return cols
    if (nan == nan[:1]).all():
        return np.ascontiguousarray(cols[:, ~nan[0]])
    return None


def mad_scales(x: np.ndarray) -> np.ndarray:
    """``[mad_scale(x[:, j]) for j]`` as an array, bit for bit."""
    cols = np.ascontiguousarray(x.T)
    clean = _common_rows(cols)
    if clean is None:
        return np.array([mad_scale(c) for c in cols])
    if clean.shape[1] < 2:
        return np.zeros(cols.shape[0])
    med = np.median(clean, axis=1)
    return _MAD_SD * np.median(np.abs(clean - med[:, None]), axis=1)


def nanstd_columns(x: np.ndarray) -> np.ndarray:
    """``[float(np.nanstd(x[:, j])) if x[:, j] has more than one value else 0.0 for j]``, bit for bit."""
    cols = np.ascontiguousarray(x.T)
    clean = _common_rows(cols)
    if clean is None:
        return np.array([float(np.nanstd(c)) if np.sum(~np.isnan(c)) > 1 else 0.0 for c in cols])
    if clean.shape[1] < 2:
        return np.zeros(cols.shape[0])
    return np.nanstd(clean, axis=1)


def lag1_coefficients(a: np.ndarray, b: np.ndarray, lo: float, hi: float, min_pairs: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per column ``j``: the least-squares coefficient of ``a[:, j]`` on ``b[:, j]`` over the rows where
    both are present, ``clip(a.b / b.b, lo, hi)``, and that number of rows; NaN and 0 where there are
    fewer than ``min_pairs`` rows or ``b.b`` is 0."""
    k = a.shape[1]
    out, cnt = np.full(k, np.nan), np.zeros(k)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    ok = ~(np.isnan(at) | np.isnan(bt))
    for j in range(k):
        aj, bj = (at[j], bt[j]) if ok[j].all() else (at[j][ok[j]], bt[j][ok[j]])
        n_ok = aj.size
        den = float(np.dot(bj, bj))
        if n_ok >= min_pairs and den > 0:
            out[j], cnt[j] = float(np.clip(np.dot(aj, bj) / den, lo, hi)), n_ok
    return out, cnt
