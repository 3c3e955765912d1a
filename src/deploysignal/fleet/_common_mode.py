"""The fleet-level e-process with a shared (common-mode) load component removed tick by tick.

A fleet-wide load pattern (a daily cycle, a traffic ramp) moves the cross-shard median of every
load-sensitive signal together. Testing the median against a fixed baseline location reads that load
as a fleet fault whenever the observation window visits a load level the baseline did not (a
sinusoidal load fired the old fleet-level alarm in 10 of 10 healthy runs). This module models the
shared component as one factor with loadings fitted on the baseline and removes it *within each
tick*, so the load's own dynamics never enter the test.

Model
-----
Standardise the fleet median per signal, :math:`z_{t,j} = (m_{t,j} - \\ell_j)/s_j` (baseline median
and MAD scale of the median), and assume

.. math:: z_{t,j} = b_j f_t + \\varepsilon_{t,j},

with :math:`f_t` an **arbitrary** load process (any dynamics; it is never modelled over time) and
:math:`b` the loadings: the first principal component of the baseline's :math:`z` (sign fixed so the
loadings sum to >= 0). The *strong* signals :math:`S = \\{j : |b_j| \\ge \\tfrac12 \\max|b|\\}` carry
the factor. For each signal :math:`j` the factor is estimated from the **other** strong signals only,

.. math:: \\hat f_{t,-j} = \\operatorname{median}_{i \\in S \\setminus \\{j\\}} z_{t,i}/b_i,\\qquad
          e_{t,j} = d_j\\,\\frac{z_{t,j} - b_j \\hat f_{t,-j}}{r_j},

(:math:`d_j` the harmful orientation, :math:`r_j` the baseline MAD scale of the residual), so a fault on
signal :math:`j` enters :math:`e_{t,j}` with slope exactly 1: its own evidence is non-decreasing in the
fault's size and never explained away by the factor. The residual is prewhitened with an AR(1)
coefficient fitted on the baseline residuals (clipped to [-0.9, 0.9]),
:math:`u_{t,j} = e_{t,j} - \\phi_j e_{t-1,j}`, and bet on with the same bounded mixture as the shard
processes: :math:`W_{t,j}^{(k,\\pm)} = \\prod_s (1 \\pm \\lambda_k\\,\\mathrm{clip}(u_{s,j}/c, -1, 1))`
(the minus side only for ``both`` signals), averaged over signals and bets. The residual is centred by
its baseline median, and the bets carry the tolerance of that estimate (``CommonMode.tolerance``):
the +side bets on :math:`u - \\varepsilon`, the -side on :math:`u + \\varepsilon`,
:math:`\\varepsilon = \\text{tol}_j |1 - \\phi_j|`, as in the shard processes; the statement below then
holds while every centre is within its tolerance (probability :math:`\\ge 1 - \\delta` over the
baseline, ``delta`` of :func:`fit_common_mode`).

Guarantee and assumption
------------------------
*Proven*, with the true loadings and :math:`\\phi_j = 0`: if, given the past, the idiosyncratic terms
:math:`(\\varepsilon_{t,j})_j` are jointly symmetric about 0 (sign-flip invariant) and independent of
the load, then :math:`e_{t,j}` is odd in :math:`\\varepsilon_t` (the leave-one-out median of
:math:`\\varepsilon_{t,i}/b_i` flips sign with it, whatever :math:`f_t` is), so it is conditionally
symmetric about 0, each wealth is a test martingale and Ville gives
:math:`P(\\exists t: \\bar W_t \\ge 1/\\alpha_{fleet}) \\le \\alpha_{fleet}` over an unlimited horizon **for any
load process** :math:`f_t`; with the centre tolerance the rate is :math:`\\le \\alpha_{fleet} + \\delta`.

*Not proven, measured*: with :math:`\\phi_j \\ne 0` the prewhitened :math:`u_{t,j} = e_{t,j} - \\phi_j e_{t-1,j}`
is a difference of two medians: a median is not linear, so a symmetric AR(1) innovation does not make
:math:`u` odd in it, and the symmetry (hence the martingale) is an approximation. With *estimated*
loadings the residual also holds :math:`(b_j - \\hat b_j) f_t`, which the centre tolerance does not
cover. The bets carry a *loading band* for it: at load level :math:`\\hat f` up to
:math:`q\\,|\\hat f - \\bar f| / \\lVert \\hat f - \\bar f\\rVert_{base}` residual sds (a regression slope's
standard error times the load's distance from its baseline mean, with the same Bonferroni quantile
:math:`q` as the tolerance). The band is a **heuristic**: the leave-one-out factor's norm holds the
other signals' noise as well as the load, and principal-component loadings are biased towards noisier
signals, so it does not bound the loading error in general. Spending :math:`\\delta` on it as well as on
the centres, the budget would read :math:`\\alpha_{fleet} + 2\\delta` if the band were a bound; it is not
claimed. What is shown is the Monte Carlo of ``tests/fleet/test_common_mode.py`` (docs/fleet.md).

*Identification.* When the load is weak relative to the fleet-wide noise the first principal component
is mostly noise and the loadings are wrong (measured: (0.64, 0.39, 0.84, 0.56) for a truth of all
equal, and 47 of 200 healthy windows at a new load level fired). :func:`fit_common_mode` therefore
refuses to fit (``None``; :func:`fit_common_mode_or_reason` says why) unless the fitted load explains
at least :data:`MIN_LOAD_SHARE` of every strong signal's baseline variance, a measured threshold (it
separates the weak-load baselines of the tests, load share 0.15-0.49, from the identified ones, >= 0.58).

*Load range.* No validity is claimed at load levels outside the range the baseline visited
(:attr:`CommonMode.f_range`) beyond what the tests measure; :class:`CommonModeEProcess` counts such ticks
(``outside_ticks``) and ``fleet observe`` says so. Loadings that change between baseline and window (a
new load mix) are not covered.

What it cannot see: a fleet-wide fault that moves *every* strong signal in proportion to its loading
is indistinguishable from load (so is anything the load itself does); a fault on a majority of the
strong signals at once moves :math:`\\hat f` and is seen only in part. With fewer than two strong
signals (e.g. a one-signal fleet) the factor cannot be separated: :func:`fit_common_mode` returns
``None`` and the observer falls back to the stationary-median test (whose null the CLI then states).

References
----------
Ville (1939); Shafer & Vovk (2019); Waudby-Smith & Ramdas (2024), Estimating means of bounded random
variables by betting, JRSS-B; Stock & Watson (2002), Forecasting using principal components from a
large number of predictors, JASA (factor models estimated by principal components).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from .._exceptions import InputError

__all__ = ["MIN_LOAD_SHARE", "CommonMode", "CommonModeEProcess", "fit_common_mode", "fit_common_mode_or_reason"]

_MAD = 1.482602218505602
#: Smallest share of every strong signal's baseline variance the fitted load must explain for the loadings to
#: count as identified (a measured threshold, not a derived one: see the module docstring).
MIN_LOAD_SHARE = 0.5


@dataclass(frozen=True)
class CommonMode:
    """A one-factor model of the fleet median, fitted on the baseline by :func:`fit_common_mode`.

    loc, scale : (K,) baseline mean and MAD scale of the fleet median per signal (the mean, not the
    median: a loc error of the form :math:`b_j \\cdot c` is absorbed by the factor, and the baseline mean
    of a common load is exactly of that form). loadings : (K,) factor loadings of the standardised
    median. strong : (K,) bool, signals that estimate the factor. resid_loc, resid_scale : (K,) median
    and MAD scale of the baseline residuals. phi : (K,) AR(1) of the baseline residuals. tolerance :
    (K,) how far ``resid_loc`` may be off (a Bonferroni Gaussian quantile, over signals, of its
    standard error): the bets test "symmetric about some :math:`b`, :math:`|b| \\le` tolerance".
    f_center, f_norm, quantile : baseline mean and root sum of squares about it of the leave-one-out
    factor per signal, and the Bonferroni quantile: the loading-error band (:meth:`residuals_and_leak`).
    f_range : (2, K) smallest and largest leave-one-out factor per signal over the baseline, widened by
    10% of the range each side: the load levels the fit has seen (:meth:`outside_range`).
    """

    loc: np.ndarray
    scale: np.ndarray
    loadings: np.ndarray
    strong: np.ndarray
    resid_scale: np.ndarray
    phi: np.ndarray
    resid_loc: np.ndarray | None = None
    tolerance: np.ndarray | None = None
    f_center: np.ndarray | None = None
    f_norm: np.ndarray | None = None
    quantile: float = 0.0
    f_range: np.ndarray | None = None

    def residuals(self, median: np.ndarray) -> np.ndarray:
        """Unoriented, unwhitened residuals :math:`(z_j - b_j \\hat f_{-j} - c_j)/r_j` of one tick (or of
        ticks, shape (..., K)); NaN where the signal, or every other strong signal, is missing."""
        return self._parts(median)[0]

    def residuals_and_leak(self, median: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals and the bound on what misestimated loadings can leave in them at this load level:
        :math:`q\\,|\\hat f_{-j} - \\bar f_j| / \\lVert \\hat f_{-j} - \\bar f_j \\rVert_{base}` residual sds
        (the slope's standard error times the load's distance from its baseline mean; 0 without a fit)."""
        return self._parts(median)[:2]

    def _parts(self, median: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residuals, loading band and the leave-one-out factor of one tick (or of ticks)."""
        z = (np.asarray(median, dtype=float) - self.loc) / self.scale
        b = self.loadings
        f = self._factor(z)
        e = (z - b * f - (0.0 if self.resid_loc is None else self.resid_loc)) / self.resid_scale
        leak = np.zeros(z.shape) if self.f_norm is None else self.quantile * np.abs(f - self.f_center) / self.f_norm
        return e, np.where(np.isnan(leak), 0.0, leak), f

    def _factor(self, z: np.ndarray) -> np.ndarray:
        """Leave-one-out factor :math:`\\hat f_{t,-j}` per signal (NaN where every other strong signal is missing)."""
        b = self.loadings
        ratio = np.where(self.strong, z / np.where(self.strong, b, 1.0), np.nan)
        k = b.size
        f = np.empty(z.shape)
        for j in range(k):
            others = ratio[..., [i for i in range(k) if i != j]]
            ok = ~np.isnan(others).all(axis=-1)
            f[..., j] = np.where(ok, np.nanmedian(np.where(ok[..., None], others, 0.0), axis=-1), np.nan)
        return f

    def outside_range(self, median: np.ndarray) -> bool:
        """Whether this tick's load estimate lies outside the range the baseline visited (for any signal).

        Outside that range the residual holds :math:`(b_j - \\hat b_j) f_t` at a load level the fit has not
        seen; the loading band widens the null there, but it is a heuristic (module docstring), so the
        observer counts such ticks and the CLI says so.
        """
        return self._outside(self._factor((np.asarray(median, dtype=float) - self.loc) / self.scale))

    def _outside(self, f: np.ndarray) -> bool:
        if self.f_range is None:
            return False
        with np.errstate(invalid="ignore"):
            return bool(np.any((f < self.f_range[0]) | (f > self.f_range[1])))


def fit_common_mode(medians: np.ndarray, *, min_scale: float = 1e-6, delta: float = 0.01) -> CommonMode | None:
    """Fit :class:`CommonMode` on baseline fleet medians of shape (T, K); ``None`` when no load is identified.

    ``None`` with < 2 strong signals, a signal missing in every tick, or loadings the baseline does not
    identify (:func:`fit_common_mode_or_reason` says which). ``delta``: probability allowed for any
    residual centre to be off by more than its tolerance.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> load = 2.0 * np.sin(np.arange(300) / 30.0)[:, None]
    >>> cm = fit_common_mode(load * np.array([1.0, 1.0, -0.5]) + 0.3 * rng.standard_normal((300, 3)))
    >>> cm.strong.tolist(), bool(cm.loadings[2] < 0)
    ([True, True, True], True)
    >>> fit_common_mode(rng.standard_normal((300, 1))) is None
    True
    """
    m = np.asarray(medians, dtype=float)
    if m.ndim != 2 or m.shape[0] < 30:
        raise InputError(f"baseline medians must be (ticks >= 30, signals), got shape {m.shape}")
    return fit_common_mode_or_reason(m, min_scale=min_scale, delta=delta)[0]


def fit_common_mode_or_reason(medians: np.ndarray, *, min_scale: float = 1e-6,
                              delta: float = 0.01) -> tuple[CommonMode | None, str]:
    """:func:`fit_common_mode` that never raises on a short baseline and says why it did not fit.

    Returns ``(model, "")`` or ``(None, reason)``; the reason is a sentence for the user. Refused: fewer
    than 30 ticks or 2 signals, a signal missing in every tick, fewer than two strongly loaded signals,
    or a load that explains less than :data:`MIN_LOAD_SHARE` of some strong signal's baseline variance
    (then the principal component is mostly the signals' own noise and the loadings are not identified:
    with a weak load, loadings fitted as (0.64, 0.39, 0.84, 0.56) for a truth of all equal were measured,
    and a window at a new load level fired in 47 of 200 healthy runs).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> weak = 0.3 * np.sin(np.arange(300) / 30.0)[:, None] + 0.4 * rng.standard_normal((300, 4))
    >>> cm, why = fit_common_mode_or_reason(weak)
    >>> cm is None, "not identified" in why
    (True, True)
    """
    m = np.asarray(medians, dtype=float)
    if m.ndim != 2:
        raise InputError(f"baseline medians must be (ticks, signals), got shape {m.shape}")
    if m.shape[1] < 2:
        return None, "a shared load needs at least two signals to be separated from a fault, the fleet has one"
    if m.shape[0] < 30:
        return None, f"only {m.shape[0]} baseline tick(s) kept: at least 30 ticks are needed to fit a shared load"
    fill = np.nanmedian(m, axis=0)
    if np.isnan(fill).any():
        j = int(np.flatnonzero(np.isnan(fill))[0])
        return None, f"signal {j} is missing in every baseline tick, so no shared load can be fitted across signals"
    m = np.where(np.isnan(m), fill, m)
    loc = m.mean(axis=0)
    scale = np.maximum(_MAD * np.median(np.abs(m - np.median(m, axis=0)), axis=0), min_scale)
    z = np.clip((m - loc) / scale, -8.0, 8.0)  # bounded influence of baseline outliers on the loadings
    zc = z - z.mean(axis=0)
    _, sv, vt = np.linalg.svd(zc, full_matrices=False)
    v = vt[0] * (1.0 if vt[0].sum() >= 0 else -1.0)
    b = v * sv[0] / math.sqrt(z.shape[0])
    strong = np.abs(b) >= 0.5 * np.abs(b).max()
    if strong.sum() < 2:
        return None, "fewer than two signals load on a shared component in the baseline"
    share = b * b / np.maximum(zc.var(axis=0), 1e-300)
    weak = np.flatnonzero(strong & (share < MIN_LOAD_SHARE))
    if weak.size:
        j = int(weak[np.argmin(share[weak])])
        return None, (f"the baseline's shared load explains only {share[j]:.0%} of signal {j}'s fleet-median variance "
                      f"(< {MIN_LOAD_SHARE:.0%}): its loadings are not identified (a weak or absent load relative to "
                      "the fleet-wide noise)")
    cm = CommonMode(loc, scale, b, strong, np.ones_like(b), np.zeros_like(b))
    from ._curation import _median_lrv  # the same standard error as the shard centres (call time: no cycle)

    e = cm.residuals(m)
    e_loc = np.median(e, axis=0)
    rs = np.maximum(_MAD * np.median(np.abs(e - e_loc), axis=0), min_scale)
    r = (e - e_loc) / rs
    a, c = r[1:], r[:-1]
    den = (c * c).sum(axis=0)
    phi = np.clip(np.where(den > 0, (a * c).sum(axis=0) / np.where(den > 0, den, 1.0), 0.0), -0.9, 0.9)
    q = float(norm.isf(delta / (2 * b.size)))
    tol = q * np.sqrt(np.pi / 2.0 * _median_lrv(phi) / m.shape[0])
    z_all = (m - loc) / scale
    ratio = z_all / np.where(strong, b, 1.0)
    f = np.stack([np.median(ratio[:, [i for i in range(b.size) if i != j and strong[i]]], axis=1)
                  for j in range(b.size)], axis=1)
    f_center = f.mean(axis=0)
    # the residual-sd-scaled standard error of a loading fitted against f is 1/||f - mean|| (inflated by
    # the long-run variance factor of the residual's autocorrelation)
    f_norm = np.maximum(np.sqrt(((f - f_center) ** 2).sum(axis=0) / ((1 + np.abs(phi)) / (1 - np.abs(phi)))), 1e-12)
    lo, hi = f.min(axis=0), f.max(axis=0)  # the baseline's load range, widened by 10% of its width each side
    return CommonMode(loc, scale, b, strong, rs, phi, e_loc, tol, f_center, f_norm, q,
                      np.stack([lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)])), ""


class CommonModeEProcess:
    """Fleet-level e-process on the fleet median with the common-mode load removed per tick.

    See the module docstring for the model, the null and the guarantee (Ville at level
    ``1/threshold`` for any load process, under joint conditional symmetry of the idiosyncratic terms).

    Parameters
    ----------
    model : CommonMode
    directions : sequence of str
        ``up`` / ``down`` / ``both`` per signal.
    lambdas : sequence of float
        Bet sizes in (0, 1).
    clip : float

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> load = 3.0 * np.sin(np.arange(900) / 30.0)[:, None] + 0.3 * rng.standard_normal((900, 4))
    >>> cm = fit_common_mode(load[:300])
    >>> ep = CommonModeEProcess(cm, ["up"] * 4)
    >>> healthy = max(ep.update(load[t]) for t in range(300, 600))
    >>> load[600:, 2] += 1.0                       # signal 2 rises fleet-wide
    >>> faulty = max(ep.update(load[t]) for t in range(600, 900))
    >>> healthy < math.log(100) < faulty
    True
    """

    def __init__(self, model: CommonMode, directions: Sequence[str], *,
                 lambdas: Sequence[float] = (0.05, 0.1, 0.2, 0.4), clip: float = 2.0) -> None:
        k = model.loadings.size
        if len(directions) != k or any(d not in ("up", "down", "both") for d in directions):
            raise InputError(f"directions must be {k} of 'up'/'down'/'both', got {tuple(directions)!r}")
        self.model = model
        self._sign = np.array([-1.0 if d == "down" else 1.0 for d in directions])
        both = np.array([d == "both" for d in directions])
        lam = np.asarray(lambdas, dtype=float)
        # +side bets for every signal, -side bets for 'both' signals only (zero bet = factor 1 otherwise)
        self._grid = np.concatenate([np.broadcast_to(lam, (k, lam.size)), -lam[None, :] * both[:, None]], axis=1)
        self._n_bets = int(lam.size * k + lam.size * both.sum())
        self.clip = float(clip)
        self._tol = np.zeros(k) if model.tolerance is None else np.asarray(model.tolerance, dtype=float)
        self.log_w = np.zeros(self._grid.shape)
        self.prev = np.zeros(k)
        self.prev_leak = np.zeros(k)
        self.outside_ticks = 0  # ticks whose load estimate left the baseline's range (validity there is not shown)

    def update(self, median: np.ndarray, *, frozen: bool = False) -> float:
        """Feed one tick's fleet median (K,); return the log e-process (average over signals and bets)."""
        e, leak, f = self.model._parts(median)
        self.outside_ticks += self.model._outside(f)
        e = self._sign * e
        u = e - self.model.phi * self.prev
        # a residual centre off by b leaves (1 - phi) b in u, a loading error leaves at most leak_t + |phi| leak_{t-1}:
        # the +side bets on u - eps, the -side on u + eps
        eps = self._tol * np.abs(1.0 - self.model.phi) + leak + np.abs(self.model.phi) * self.prev_leak
        self.prev_leak = leak
        nobet = np.isnan(u) | frozen
        gp = np.where(nobet, 0.0, np.clip((u - eps) / self.clip, -1.0, 1.0))
        gm = np.where(nobet, 0.0, np.clip((u + eps) / self.clip, -1.0, 1.0))
        k = self._grid.shape[1] // 2
        self.log_w[:, :k] += np.log1p(gp[:, None] * self._grid[:, :k])
        self.log_w[:, k:] += np.log1p(gm[:, None] * self._grid[:, k:])
        self.prev = np.where(np.isnan(e), 0.0, e)
        lw = np.where(self._grid != 0, self.log_w, -np.inf).ravel()
        top = lw.max()
        return float(top + math.log(np.exp(lw - top).sum() / self._n_bets))
