r"""Run-time model check of the one-sample gate: does the compiled model still describe the canary's process?

The compile-time checks (:func:`~deploysignal.calibration.model_check`) and the backtest look at the
baseline; a departure that begins after it (a DST change between compile and canary, a regime the
baseline never showed, noise that grows) is invisible to them. (Of noise growth the variance part flags
only a sustained sd increase of about 30% or more: x1.3 from the first tick was flagged on 200/200 paths
by tick 480, x1.2 on 1%; docs/one-sample.md.) This check watches the canary's own
standardised innovations ``z`` (what the families are fed: oriented so that positive is harmful) for
three departures, each through anytime-valid e-processes under the model, with a fixed budget ``beta``
(``GateSettings.runtime_check``, default 0.01) split evenly over the three (Bonferroni).

**Phase** (a shift of the daily cycle). If the cycle runs ``theta`` hours later than the baseline's,
the de-seasonalised value at clock ``t`` is off by about ``theta (mu(t - 1h) - mu(t + 1h)) / 2`` and the
innovation by ``theta d_{c,j}`` with the predictable regressor

.. math:: d_{c,j} = s_j\,\frac{(1-\phi_j)\,(\mu_j(c - 1\,h) - \mu_j(c + 1\,h))}{2\,\sigma_{e,j}}

(compiled hour-cell levels ``mu`` of the cells one hour before and after the tick's cell ``c``,
orientation ``s``, AR(1) coefficient ``phi``, innovation scale ``sigma_e``; held constant per cell).
**Level** (the signals moving together, as in a regime switch or a load change the baseline did not
show): the regressor is the first principal direction of the compiled hour-cell levels across signals
(the baseline's own daily co-movement), in innovation units ``o_j = s_j v_j sqrt((1-phi_j)/(1+phi_j))``,
normalised to unit length. Both parts read ``clip(z, -3, 3) - m_j``, where ``m_j`` is the mean of the
clipped innovations on the baseline's held-out reference rows (:func:`clipped_centre`): cells are
medians, so for a skewed law the clipped mean is not 0 (centred exponential innovations fired on 29 of
100 healthy certified canaries without it); the variance of ``m_j`` is added to every cell's level-error
variance, as if independent per cell although the error is shared by all cells (an anti-conservative
approximation, like the day offset's; measured, and open where it exceeds the budget: docs/one-sample.md). **Variance**: disjoint pairs of consecutive ticks; per pair the count of
signals whose half-difference ``|z_t - z_{t-1}| / sqrt 2`` (``z`` clipped at ``C_HI``) exceeds 1.5,
divided by its null mean ``sum_j p_j`` over the signals seen in both ticks, where ``p_j`` is an upper
confidence bound on that exceedance rate for the baseline's *own* innovation law, from the disjoint
pairs of its held-out reference rows (:func:`exceedance_bound`: the compiler scales innovations by a
MAD, so their variance is above 1 whenever the tails are heavier than Gaussian: the rate, not a unit
variance, is what the baseline fixes); bet ``prod (1 + lambda (q - 1))`` mixed over ``lambda``. A
constant shift cancels in the difference.

**Not a regression detector (phase and level).** A regression moves signals in their *harmful*
direction; a phase shift or a common level move also moves, by the same regressor, signals whose
offset points the *benign* way. For each sign of ``theta`` the check keeps only the regressor's benign
half (the (signal, cell) pairs where the predicted offset is harmless) and tests it with a Gaussian
mixture likelihood ratio ``E_b`` that is nondecreasing in ``-z``; a part's e-value is the average of
``E_b`` over the two signs, and it fires at ``3 / beta``. Consequence, exact for any data: adding any
harmful shift (raising any oriented ``z`` of a one-sided signal, in any pattern and size) never raises
the e-value, so on a canary that is the model's healthy process plus any regression the phase and level
parts fire with probability at most their share of ``beta``, as without the regression.

What it cannot tell apart. A canary that is *better* than the baseline on signals that carry the daily
cycle is, to these parts, a benign offset, and they may fire on it (the run is then reported
uncertified and held at extend; ``runtime_check_proceed`` lets it proceed): in one-sample mode "the
process moved the harmless way" and "the canary is better" are the same data. (A first version also
required the harmful half to agree, which provably limits firing on a pure improvement; it fired after
family A's false rollbacks on the DST null too often to be worth it: docs/one-sample.md.) Two-sided
signals (direction ``both``) have no benign side and are left out of these two parts. A misfit that
points every signal the harmful way looks like a regression: the check does not fire, and the
false-rollback guarantee is lost without a word. The variance part is not protected this way: a regression that adds noise, bursts or
oscillation inflates it, and a mean step counts once, through the pair that straddles it.

**Guarantee.** Under the compiler's model (canary innovations ``z`` independent over time, Gaussian
with the compiled cross-signal covariance ``Sigma`` (Ledoit-Wolf, of the clipped innovations: it carries
both the correlation and a variance above 1 when the MAD-scaled tails are heavy); each hour cell's level
error Gaussian, independent across cells and signals with the compiled variance ``cell_bias_var`` plus
the day offset's ``day_bias_var + drift_allowance^2``, here added to every cell: an approximation of the
shared day offset), each of the four phase / level halves is ``exp(theta U - theta^2 A / 2)`` mixed over
``theta``, with ``U`` the sum of per-signal marginal statistics weighted by the regressor and ``A`` its
variance ``w' Sigma w`` (``w``: the regressor times the per-signal statistic's sd): a nonnegative
martingale when the cell-level error is negligible, exactly so for Gaussian ``z`` centred at ``m``; with a level error
its cross-signal terms are approximated (``sqrt(dA_j dA_l) Sigma_jl`` for the exact ``c_j c_l Sigma_jl``,
``c = 1 / (1 + N v) <= sqrt(dA)``: conservative where the weighted correlation is positive, slightly
anti-conservative where it is negative), and for non-Gaussian ``z`` the Gaussian moment bound is (the
clipping at 3 sd keeps it close: at 5 sd, correlated Student-t(3) innovations fired 11/2000, above the budget). A part (the average of its two halves) fires at ``3 / beta``, so
phase and level get ``beta / 3`` each by Ville. The variance part gets ``beta / 6`` for its e-process (fires at ``6 / beta``;
valid when consecutive pairs are independent draws of the baseline's innovation law, any law) and
``beta / 6`` for the failure of its null rate's bound. So P(the check ever fires on a healthy canary of
the model) <= beta, a budget separate from the rollback alpha. The measured rates, on Gaussian,
Student-t(3), t(5), Laplace, skewed (centred exponential of either sign, lognormal) and equicorrelated (0.3, 0.5, 0.8) innovations (Monte Carlo with a one-sided
99% Clopper-Pearson bound), are in docs/one-sample.md.

**What firing does** (:class:`~deploysignal.gate.Gate`): the analysis becomes "one-sample,
uncertified at tick t: <reason>" in every later gate record (``runtime_check``), ``gate --json`` and the
service; a rollback still rolls back; a proceed is not issued (the verdict extends) unless
``GateSettings.runtime_check_proceed`` is set. Before it fires the verdicts are exactly those of the
gate without the check.

References
----------
Ville, J. (1939). *Etude critique de la notion de collectif*. Robbins, H. (1970). Statistical methods
related to the law of the iterated logarithm (Gaussian mixture martingales). Ramdas, A. et al. (2023).
Game-theoretic statistics and safe anytime-valid inference. *Statistical Science* 38(4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import betaincinv  # not scipy.stats: seconds to import on a gate's start (tests/test_cli_start.py); same values as beta.ppf (checked bit for bit there)

from ..calibration import C_HI, CompiledConfig, stack_arrays

__all__ = ["RUNTIME_COMPONENTS", "RuntimeCheck", "clipped_centre", "exceedance_bound", "runtime_certification"]

#: the check's parts, in the order of ``RuntimeCheck.log_e``
RUNTIME_COMPONENTS = ("phase", "level", "variance")
#: mixture grids: phase shift in hours, common level move in pooled innovation sd, variance bet fractions
_THETA_PHASE = np.array([0.25, 0.5, 1.0, 2.0])
_THETA_LEVEL = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
_LAMBDA_VAR = np.array([0.05, 0.1, 0.2, 0.4])
#: innovations are clipped symmetrically at this many sd before entering the phase / level sums
_Z_CLIP = 3.0
#: the variance part counts pairs whose half-difference ``|z_t - z_{t-1}| / sqrt 2`` exceeds this (MAD units)
_Q_EDGE = 1.5


def exceedance_bound(reference: np.ndarray, delta: float) -> np.ndarray:
    """Per signal, an upper confidence bound on ``P(|z - z'| / sqrt 2 > 1.5)`` for two innovations of the
    baseline's own law, from its calibration-split reference rows.

    Parameters
    ----------
    reference : (n, k) array
        Standardised innovations (clipped at ``C_HI``) of rows held out of the fit
        (``CompiledConfig.reference``, all tiers), in time order.
    delta : float
        Total error probability, split evenly over the ``k`` signals.

    Returns
    -------
    (k,) array
        One-sided ``1 - delta / k`` Clopper-Pearson upper bound per signal, from the disjoint pairs of
        consecutive reference rows (1 when there is no pair).

    Notes
    -----
    Guarantee: when the pairs are independent draws of the law the canary's consecutive pairs follow,
    all ``k`` bounds hold together with probability at least ``1 - delta`` (Bonferroni). Pairs of rows
    that are not adjacent in time also carry the difference of two cells' level errors, which only
    raises the rate (a conservative bound).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> b = exceedance_bound(rng.standard_normal((2000, 2)), 0.001)
    >>> bool(((b > 0.134) & (b < 0.18)).all())  # Gaussian rate 0.134
    True
    """
    ref = np.asarray(reference, dtype=float)
    k = ref.shape[1]
    m = ref.shape[0] // 2
    if m == 0:
        return np.ones(k)
    x = (np.abs(ref[0:2 * m:2] - ref[1:2 * m:2]) / math.sqrt(2.0) > _Q_EDGE).sum(axis=0)
    return np.where(x >= m, 1.0, betaincinv(x + 1, np.maximum(m - x, 1), 1.0 - delta / k))


def clipped_centre(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per signal, the mean of the innovations clipped at ``_Z_CLIP`` sd on the baseline's held-out
    reference rows, and the variance of that estimate.

    The compiler centres each hour cell on a *median*; for a skewed innovation law the mean of the
    clipped innovations is then not 0 (centred exponential innovations: about -0.16 to +0.17 sd). The
    phase and level parts subtract this centre from every clipped innovation, and add its variance to
    every cell's level-error variance (as the level error itself is carried).

    Parameters
    ----------
    reference : (n, k) array
        Standardised oriented innovations of rows held out of the fit (``CompiledConfig.reference``).

    Returns
    -------
    centre, variance : (k,) arrays
        Sample mean of ``clip(z, -_Z_CLIP, _Z_CLIP)`` and its sample variance over ``n`` (0 and 0 when
        there are fewer than two rows: the check then assumes a mean of 0, as before).

    Notes
    -----
    Guarantee: the centre is unbiased for the clipped mean of the reference rows' law; its error is
    approximately Gaussian with the returned variance when the rows are independent (innovations).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c, v = clipped_centre(1.0 - rng.exponential(size=(4000, 1)) - (np.log(2.0) - 1.0))  # median 0, left skew
    >>> bool(c[0] > 0.2 and v[0] < 1e-3)
    True
    """
    ref = np.clip(np.asarray(reference, dtype=float), -_Z_CLIP, _Z_CLIP)
    n = ref.shape[0]
    if n < 2:
        return np.zeros(ref.shape[1]), np.zeros(ref.shape[1])
    return ref.mean(axis=0), ref.var(axis=0, ddof=1) / n


def runtime_certification(status: dict[str, Any], runtime: dict[str, Any] | None) -> dict[str, Any]:
    """A run's certification (:func:`~deploysignal.gate.certification_status`) with the run-time check's
    outcome (:attr:`~deploysignal.gate.Gate.runtime_status`): unchanged but for a ``runtime_check`` entry
    while the check has not fired (or does not run); once it has, ``certified`` false, the check's status
    (with its tick) first among the reasons and ``basis`` "one-sample, uncertified"."""
    out = dict(status)
    if runtime is None:
        return out
    out["runtime_check"] = runtime
    if runtime["fired_at"] >= 0:
        out.update(certified=False, reasons=[runtime["status"], *status["reasons"]], basis="one-sample, uncertified")
    return out


def _log_mix(u: np.ndarray, a: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """log of the mean over ``theta`` of ``exp(theta u - theta^2 a / 2)`` (elementwise in ``u``, ``a``)."""
    t = theta * u[..., None] - 0.5 * theta**2 * a[..., None]
    return np.logaddexp.reduce(t, axis=-1) - math.log(theta.size)


def _benign(u_pos: np.ndarray, a_pos: np.ndarray, u_neg: np.ndarray, a_neg: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per stream: log e-value of a phase / level part and which sign leads (+1 / -1). Under the + sign
    the benign half is the one with coefficients ``u_neg`` (evidence ``-u_neg``), under the - sign the
    one with ``u_pos`` (evidence ``-u_pos``); the part is their average."""
    plus, minus = _log_mix(-u_neg, a_neg, theta), _log_mix(-u_pos, a_pos, theta)
    return np.logaddexp(plus, minus) - math.log(2.0), np.where(plus >= minus, 1, -1)


class RuntimeCheck:
    """Sequential model check on a one-sample canary's standardised innovations (see the module).

    Parameters
    ----------
    config : CompiledConfig or sequence of CompiledConfig
        The compiled baseline(s) the gate runs on (``P`` streams).
    budget : float
        False-alarm budget ``beta`` on the model's null (``GateSettings.runtime_check``).
    drift_allowance : float
        The gate's ``drift_allowance`` (score sd), added to the day-offset variance.

    Notes
    -----
    Guarantee (under the assumptions of the module docstring): P(fires within any horizon) <= budget.
    """

    def __init__(self, config: CompiledConfig | Sequence[CompiledConfig], budget: float, drift_allowance: float = 0.0) -> None:
        a = stack_arrays(config)
        cfgs = [config] if isinstance(config, CompiledConfig) else list(config)
        self.budget = float(budget)
        self.log_thr = math.log(3.0 / self.budget)  # phase and level: beta / 3 each
        self.log_thr_var = math.log(6.0 / self.budget)  # variance: beta / 6 for the e-process, beta / 6 for its null rate's bound
        # cross-signal covariance of the standardised innovations (Ledoit-Wolf, per covariance block) and each cell's block
        self._cov = np.asarray(a["cov"], dtype=float)  # (P, B, k, k)
        self._cov_index = np.asarray(a["cov_index"], dtype=int)  # (P, C)
        # the variance part's null rate: bounded on the baseline's own held-out innovations (all tiers pooled)
        refs = [np.vstack([np.asarray(r, dtype=float).reshape(-1, len(c.signals)) for r in c.reference.values()]) for c in cfgs]
        self._p_up = np.stack([exceedance_bound(r, self.budget / 6.0) for r in refs])  # (P, k)
        #: reference pairs per stream (0: the variance part cannot fire, runtime_status says so)
        self.reference_pairs = np.array([r.shape[0] // 2 for r in refs])
        # the phase / level parts' null mean of the clipped innovations (not 0 for skewed laws: cells are medians)
        centres = [clipped_centre(r) for r in refs]
        self._centre = np.stack([c for c, _ in centres])  # (P, k)
        self._centre_var = np.stack([v for _, v in centres])  # (P, k): added to every cell's level-error variance
        orient = np.asarray(a["orient"], dtype=float)
        one = np.where(np.asarray(a["two_sided"], dtype=bool), 0.0, 1.0)
        phi, scale = np.asarray(a["phi"], dtype=float), np.asarray(a["innov_scale"], dtype=float)  # (P, k)
        self._loc = np.asarray(a["location"], dtype=float)  # (P, C, k)
        P, C, k = self._loc.shape
        self._P, self._k = P, k
        self._dcoef = orient * one * (1.0 - phi) / (2.0 * scale)
        marg = scale / np.sqrt(1.0 - phi**2)
        X = (self._loc - self._loc.mean(axis=1, keepdims=True)) / marg[:, None, :]
        v = np.linalg.svd(X, full_matrices=False)[2][:, 0, :]  # (P, k): first right singular vector
        # its sign is LAPACK's choice: fix it (largest entry positive) so "along / against" in a recorded reason replays anywhere
        v = v * np.where(np.take_along_axis(v, np.abs(v).argmax(axis=1)[:, None], axis=1) < 0, -1.0, 1.0)
        o = orient * one * v * np.sqrt((1.0 - phi) / (1.0 + phi))
        norm = np.linalg.norm(o, axis=1, keepdims=True)
        self._o = np.where(norm > 0, o / np.where(norm > 0, norm, 1.0), 0.0)
        self._o_halves = np.stack([np.maximum(self._o, 0.0), np.maximum(-self._o, 0.0)], axis=2)  # (P, k, 2)
        sd = np.asarray(a["score_sd"], dtype=float)[:, 0]  # (P, k)
        day = np.asarray(a["day_bias_var"], dtype=float)[:, 0] * sd**2 + float(drift_allowance) ** 2
        self._var = np.asarray(a["cell_bias_var"], dtype=float)[:, 0] * sd[:, None, :] ** 2 + day[:, None, :] + self._centre_var[:, None, :]
        self.reset()

    def reset(self) -> None:
        P, C, k = self._loc.shape
        self._R = np.full((P, C, k, 2), np.nan)  # phase regressor's halves (harmful, benign-for-later) per cell, fixed at its first visit
        self._S = np.zeros((P, C, k))
        self._N = np.zeros((P, C, k))
        self._U = np.zeros((P, 4))  # phase +, phase -, level +, level -
        self._A = np.zeros((P, 4))
        self._prev = np.full((P, k), np.nan)
        self._open = False  # a variance pair is open (its first tick seen)
        self._lw_var = np.zeros((P, _LAMBDA_VAR.size))
        self.fired_at = np.full(P, -1)
        self.reasons: list[str] = [""] * P

    # ------------------------------------------------------------------ evidence
    def log_e(self) -> np.ndarray:
        """(P, 3) current log e-values of the parts (:data:`RUNTIME_COMPONENTS` order); a part fires at
        ``log_thr``."""
        (lp, _), (ll, _) = self._parts()
        return np.stack([lp, ll, self._log_var()], axis=1)

    def _parts(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        U, A = self._U, self._A
        return _benign(U[:, 0], A[:, 0], U[:, 1], A[:, 1], _THETA_PHASE), _benign(U[:, 2], A[:, 2], U[:, 3], A[:, 3], _THETA_LEVEL)

    def _log_var(self) -> np.ndarray:
        return np.logaddexp.reduce(self._lw_var, axis=1) - math.log(_LAMBDA_VAR.size)

    def step(self, tick: int, z: np.ndarray, cell: int, before: int, after: int) -> np.ndarray:
        """Advance every stream by one tick; returns (P,) whether the check has fired by this tick.

        ``z``: (P, k) standardised oriented innovations (NaN = missing); ``cell``: the tick's cell;
        ``before`` / ``after``: the cells one hour earlier / later (the phase regressor)."""
        R = self._R[:, cell]
        if np.isnan(R[0, 0, 0]):
            d = self._dcoef * (self._loc[:, before] - self._loc[:, after])
            R = self._R[:, cell] = np.stack([np.maximum(d, 0.0), np.maximum(-d, 0.0)], axis=2)
        zc = np.clip(z, -_Z_CLIP, _Z_CLIP) - self._centre
        seen = ~np.isnan(zc)
        v, N, S = self._var[:, cell], self._N[:, cell], self._S[:, cell]
        N1, S1 = N + seen, S + np.where(seen, zc, 0.0)
        dU = S1 / (1.0 + N1 * v) - S / (1.0 + N * v)
        dA = N1 / (1.0 + N1 * v) - N / (1.0 + N * v)
        self._N[:, cell], self._S[:, cell] = N1, S1
        self._U[:, :2] += (dU[:, :, None] * R).sum(axis=1)
        self._U[:, 2:] += (dU[:, :, None] * self._o_halves).sum(axis=1)
        # compensator: the variance of the increment of U under the compiled cross-signal covariance,
        # w' Sigma w with w = regressor half * sqrt(dA) (dA is the per-signal variance of dU at unit variance)
        W = np.concatenate([R, self._o_halves], axis=2) * np.sqrt(dA)[:, :, None]  # (P, k, 4)
        cov = self._cov[np.arange(self._P), self._cov_index[:, cell]]  # (P, k, k)
        self._A += (W * np.matmul(cov, W)).sum(axis=1)
        zv = np.clip(z, -C_HI, C_HI)  # as the reference rows are clipped
        if self._open:
            both = ~np.isnan(zv) & ~np.isnan(self._prev)
            x = np.where(both, np.abs(np.where(both, zv, 0.0) - np.where(both, self._prev, 0.0)) / math.sqrt(2.0) > _Q_EDGE, False)
            null = np.where(both, self._p_up, 0.0).sum(axis=1)
            q = np.where(null > 0, x.sum(axis=1) / np.where(null > 0, null, 1.0), 1.0)  # null mean <= 1
            self._lw_var += np.log1p(_LAMBDA_VAR * (q[:, None] - 1.0))
            self._open = False
        else:
            self._prev = zv
            self._open = True
        return self._note(tick)

    def _note(self, tick: int) -> np.ndarray:
        # cheap bound first: a half's mixture never exceeds its best single theta, max(-u, 0)^2 / (2a), nor an
        # average its largest term: below the threshold everywhere, nothing can fire at this tick
        with np.errstate(divide="ignore", invalid="ignore"):
            top = np.where(self._U < 0, self._U * self._U / (2.0 * self._A), 0.0)
        if not (np.nan_to_num(top, nan=0.0) >= self.log_thr).any() and not (self._lw_var.max(axis=1) >= self.log_thr_var).any():
            return self.fired_at >= 0
        (lp, sp), (ll, sl) = self._parts()
        lv = self._log_var()
        new = (self.fired_at < 0) & ((lp >= self.log_thr) | (ll >= self.log_thr) | (lv >= self.log_thr_var))
        for p in np.flatnonzero(new).tolist():
            self.fired_at[p] = tick
            self.reasons[p] = self._reason(float(lp[p]), int(sp[p]), float(ll[p]), int(sl[p]), float(lv[p]))
        return self.fired_at >= 0

    def _reason(self, lp: float, sp: int, ll: float, sl: int, lv: float) -> str:
        thr = f">= {math.exp(self.log_thr):.0f} (budget {self.budget:g})"
        parts = []
        if lp >= self.log_thr:
            parts.append(f"run-time model check: the daily cycle runs {'later' if sp > 0 else 'earlier'} than the baseline's (a phase"
                         f" shift such as a DST change), seen on signals it moved the harmless way: e-value {math.exp(lp):.4g} {thr}")
        if ll >= self.log_thr:
            parts.append(f"run-time model check: the signals moved together ({'along' if sl > 0 else 'against'} the baseline's daily"
                         f" co-movement), some the harmless way, as in a regime or load the baseline did not show: e-value {math.exp(ll):.4g} {thr}")
        if lv >= self.log_thr_var:
            parts.append(f"run-time model check: the innovations vary more than the baseline's own (consecutive ticks differ by more"
                         f" than 1.5 sd more often than on held-out baseline rows): e-value {math.exp(lv):.4g} >= {math.exp(self.log_thr_var):.0f}"
                         f" (budget {self.budget:g})")
        return "; ".join(parts)

    # ------------------------------------------------------------------ persistence
    _FIELDS = ("_R", "_S", "_N", "_U", "_A", "_prev", "_lw_var", "fired_at")

    def snapshot(self) -> tuple[Any, ...]:
        """A copy of the evolving state (all streams), for :meth:`restore`."""
        return tuple(getattr(self, f).copy() for f in self._FIELDS) + (self._open, list(self.reasons))

    def restore(self, snap: tuple[Any, ...]) -> None:
        """Go back to the state of a :meth:`snapshot`."""
        for f, v in zip(self._FIELDS, snap):
            setattr(self, f, v.copy())
        self._open, self.reasons = snap[-2], list(snap[-1])

    def state(self) -> dict[str, Any]:
        """Exact JSON-serialisable state (single stream)."""
        seen = ~np.isnan(self._R[0, :, 0, 0])
        return {"R": {str(c): self._R[0, c].tolist() for c in np.flatnonzero(seen).tolist()}, "S": self._S[0].tolist(), "N": self._N[0].tolist(), "U": self._U[0].tolist(), "A": self._A[0].tolist(),
                "prev": [None if math.isnan(v) else v for v in self._prev[0].tolist()], "open": self._open,
                "lw_var": self._lw_var[0].tolist(), "fired_at": int(self.fired_at[0]), "reason": self.reasons[0]}

    def load_state(self, st: dict[str, Any]) -> None:
        self._R[0] = np.nan
        for c, halves in st["R"].items():
            self._R[0, int(c)] = np.array(halves, dtype=float)
        self._S[0], self._N[0] = np.array(st["S"], dtype=float), np.array(st["N"], dtype=float)
        self._U[0], self._A[0] = np.array(st["U"], dtype=float), np.array(st["A"], dtype=float)
        self._prev[0] = np.array([np.nan if v is None else v for v in st["prev"]], dtype=float)
        self._open = bool(st["open"])
        self._lw_var[0] = np.array(st["lw_var"], dtype=float)
        self.fired_at[0] = int(st["fired_at"])
        self.reasons[0] = str(st["reason"])
