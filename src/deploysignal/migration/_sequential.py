"""Sequential tests for paired migration: betting e-processes, e-SR detector, Wald SPRT, Holm / Simes.

Every dimension is reduced to a bounded paired score ``x`` in ``[-1, 1]`` per paired observation
(incumbent and challenger answer the same query; see :class:`~deploysignal.migration.PairScores`),
oriented so that positive = the challenger is worse:

* binary dimensions (correctness, safety): ``x = +1`` when only the incumbent is right / safe, ``-1``
  when only the challenger is, ``0`` for a concordant pair (McNemar's discordant pairs carry the
  signal; concordant pairs enter as zeros, so the margin is on the unconditional difference of rates);
* ordinal dimensions (semantic equivalence grade): the sign of ``g_inc - g_chal`` (sign test, ties 0);
* latency: ``x = clip((L_chal - L_inc) / SLA, -1, 1)`` (paired difference in SLA units).

The harm null of a dimension is ``H0: E[x] <= 0`` (challenger no worse) and the non-inferiority null
is ``H0: E[x] >= margin`` (challenger worse by at least the margin; tested on ``-x`` with
``m = -margin``).  Both are tested by the same betting construction.

.. math::

    W_t = \\frac{1}{K} \\sum_{k=1}^K \\prod_{s \\le t} \\bigl(1 + \\lambda_k (x_s - m)\\bigr),
    \\qquad 0 \\le \\lambda_k < \\frac{1}{m - lo}

Each product is a nonnegative supermartingale under ``E[x_s | past] <= m``, so is their average, and
Ville's inequality gives :math:`P(\\sup_t W_t \\ge 1/\\alpha) \\le \\alpha` (anytime-valid, no
assumption beyond the conditional-mean bound: dependence over time and heavy tails are allowed).

The default bettor of the migration protocol is instead the *adaptive* one (``bettor="agrapa"``,
Waudby-Smith & Ramdas 2024, aGRAPA): a single product (averaged with a second one that bets for a
design alternative when ``target`` is given) whose bet :math:`\\lambda_t` is computed from
the observations before ``t`` (predictable) as the approximate Kelly bet
:math:`(\\hat\\mu_{t-1} - m)/(\\hat\\sigma^2_{t-1} + (\\hat\\mu_{t-1} - m)^2)`, truncated to
:math:`[0, c_{max}/(m - lo)]`. Any predictable bet in that range keeps every factor positive and the
product a nonnegative supermartingale under the null, so the same Ville bound holds; the fixed grid
pays up to :math:`\\log K` nats for averaging over fractions it does not need, the adaptive bet pays
its learning regret instead.

References
----------
Wald, A. (1945). Sequential tests of statistical hypotheses. Ann. Math. Statist. 16(2).
Waudby-Smith, I. & Ramdas, A. (2024). Estimating means of bounded random variables by betting. JRSS-B.
Shin, J., Ramdas, A. & Rinaldo, A. (2022). E-detectors: a nonparametric framework for sequential
change detection. arXiv:2203.03532.
Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scand. J. Statist. 6.
Simes, R. J. (1986). An improved Bonferroni procedure for multiple tests of significance. Biometrika 73.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._exceptions import InputError

__all__ = [
    "BettingEProcess",
    "ESRDetector",
    "WaldSPRT",
    "holm",
    "simes_global",
]

_GRID = np.array([0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85])


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise InputError(f"alpha must lie in (0, 1), got {alpha!r}")
    return float(alpha)


class BettingEProcess:
    """Anytime-valid one-sided test of ``H0: E[x_t | past] <= m`` for ``x`` in ``[lo, hi]``.

    Vectorised over a batch of independent streams (``batch`` paths, used by Monte Carlo and the
    simulation); a single live test uses ``batch=1``.

    Parameters
    ----------
    m : float
        Null bound on the conditional mean; wealth grows when the mean exceeds ``m``.
    lo, hi : float
        Bounds of ``x``; values outside are rejected.
    grid : array-like of float in (0, 1), optional
        Fractions ``c_k`` of the maximal bet, ``lambda_k = c_k / (m - lo)``; the e-process is the
        average of the ``K`` fixed-bet test martingales (a test supermartingale under ``H0``).
        With ``bettor="agrapa"`` only the largest fraction is used, as the cap ``c_max`` of the bet.
    bettor : {"grid", "agrapa"}
        ``grid``: average of the fixed-fraction martingales. ``agrapa``: one martingale with the
        predictable plug-in bet :math:`\\lambda_t = \\mathrm{clip}((\\hat\\mu_{t-1} - m) /
        (\\hat\\sigma^2_{t-1} + (\\hat\\mu_{t-1} - m)^2), 0, c_{max}/(m - lo))` with
        :math:`\\hat\\mu_t = (m + \\sum_{i \\le t} x_i)/(t + 1)` and :math:`\\hat\\sigma^2_t =
        (\\sigma_0^2 + \\sum_{i \\le t} (x_i - \\hat\\mu_i)^2)/(t + 1)`, :math:`\\sigma_0 = (hi - lo)/2`
        (Waudby-Smith & Ramdas 2024, with the prior mean at the null bound so that nothing is bet
        before the data point away from it).
    target : float, optional
        Only with ``bettor="agrapa"``: a design alternative ``m < target < hi`` (the mean at which the
        test should have its power, as in a fixed-sample sample-size calculation). The e-process is then
        the average of two test martingales, the adaptive one above and one whose predictable bet is the
        approximate Kelly bet *for that alternative*, :math:`\\mathrm{clip}((target - m) /
        (\\hat\\sigma^2_{t-1} + (target - m)^2), 0, c_{max}/(m - lo))`, with the same variance estimate.
        When the truth is near the design alternative the targeted bet avoids the adaptive bettor's
        learning cost (about :math:`\\tfrac12 \\log t` nats: its plug-in mean is noisy and bets
        nothing while it points the wrong way); averaging costs at most :math:`\\log 2` nats against
        either. Validity does not depend on ``target``.
    batch : int
        Number of independent streams.

    Notes
    -----
    Guarantee (Ville): :math:`P_{H_0}(\\exists t: W_t \\ge 1/\\alpha) \\le \\alpha`; hence
    ``p_t = min(1, 1 / max_{s<=t} W_s)`` is an anytime-valid p-value, valid at any stopping time.

    Examples
    --------
    >>> e = BettingEProcess(m=0.5, lo=0.0, hi=1.0)
    >>> for x in [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]:
    ...     _ = e.update(np.array([float(x)]))
    >>> round(float(e.p_value()[0]), 4)
    0.0718
    """

    def __init__(self, *, m: float, lo: float, hi: float, grid: ArrayLike | None = None, batch: int = 1,
                 bettor: Literal["grid", "agrapa"] = "grid", target: float | None = None) -> None:
        if not lo < m < hi:
            raise InputError(f"need lo < m < hi, got lo={lo}, m={m}, hi={hi}")
        if bettor not in ("grid", "agrapa"):
            raise InputError(f"bettor must be 'grid' or 'agrapa', got {bettor!r}", column="bettor")
        if target is not None:
            if bettor != "agrapa":
                raise InputError("a design alternative (target) needs bettor='agrapa'", column="target")
            if not m < float(target) < hi:
                raise InputError(f"need m < target < hi, got m={m}, target={target}, hi={hi}", column="target")
        self.target = None if target is None else float(target)
        self.m = float(m)
        self.lo = float(lo)
        self.hi = float(hi)
        self.bettor = bettor
        self.grid = np.asarray(_GRID if grid is None else grid, dtype=float)
        if self.grid.ndim != 1 or self.grid.size == 0 or np.any((self.grid <= 0) | (self.grid >= 1)):
            raise InputError("grid fractions must lie in (0, 1)")
        self.batch = int(batch)
        self._lam = self.grid / (self.m - self.lo)  # keeps 1 + lambda (x - m) > 0 on [lo, hi]
        self._lam_max = float(self.grid.max()) / (self.m - self.lo)
        self._var0 = ((self.hi - self.lo) / 2.0) ** 2
        self._tbet0 = float(self._design_bet(self._var0))  # design bet before any data: prior variance
        self._reset()

    def _reset(self) -> None:
        cols = self.grid.size if self.bettor == "grid" else 1 if self.target is None else 2
        self._logw = np.zeros((self.batch, cols))
        self._log_max = np.zeros(self.batch)
        self.n = np.zeros(self.batch, dtype=np.int64)
        # aGRAPA: running sum of (x - m), running sum of squared deviations, the bet for the next x
        self._sum = np.zeros(self.batch)
        self._ssd = np.zeros(self.batch)
        self._bet = np.zeros(self.batch)
        self._tbet = np.full(self.batch, self._tbet0)

    def _design_bet(self, var: NDArray[np.float64] | float) -> NDArray[np.float64]:
        """Approximate Kelly bet for the design alternative at variance ``var`` (0 without a target)."""
        d = 0.0 if self.target is None else self.target - self.m
        return np.clip(d / (var + d * d), 0.0, self._lam_max)

    def reset_rows(self, rows: NDArray[np.bool_]) -> None:
        """Restart the streams selected by the boolean mask ``rows`` (wealth 1, no observations)."""
        self._logw[rows] = 0.0
        self._log_max[rows] = 0.0
        self.n[rows] = 0
        self._sum[rows] = 0.0
        self._ssd[rows] = 0.0
        self._bet[rows] = 0.0
        self._tbet[rows] = self._tbet0

    def update(self, x: NDArray[np.float64], mask: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
        """Add one observation per stream (``mask`` False = no observation); return log-wealth."""
        x = np.asarray(x, dtype=float).reshape(self.batch)
        if mask is None:
            mask = np.ones(self.batch, dtype=bool)
        use = mask & np.isfinite(x)
        if np.any(use & ((x < self.lo - 1e-12) | (x > self.hi + 1e-12))):
            bad = int(np.flatnonzero(use & ((x < self.lo) | (x > self.hi)))[0])
            raise InputError(f"score {x[bad]} outside [{self.lo}, {self.hi}]", row=bad)
        y = np.where(use, x, self.m) - self.m
        if self.bettor == "agrapa":
            self._logw[:, 0] += np.log1p(self._bet * y)  # the bets were fixed before x was seen
            if self.target is not None:
                self._logw[:, 1] += np.log1p(self._tbet * y)
            self.n += use
            self._sum += y
            mu = self._sum / (self.n + 1)  # shrunk towards the null bound m (y = 0)
            self._ssd += np.where(use, (y - mu) ** 2, 0.0)
            var = (self._var0 + self._ssd) / (self.n + 1)
            self._bet = np.clip(mu / (var + mu * mu), 0.0, self._lam_max)
            if self.target is not None:
                self._tbet = self._design_bet(var)
        else:
            self._logw += np.log1p(self._lam[None, :] * y[:, None])
            self.n += use
        lw = self.log_wealth()
        self._log_max = np.maximum(self._log_max, lw)
        return lw

    def log_wealth(self) -> NDArray[np.float64]:
        """Log of the mixture wealth per stream."""
        mx = self._logw.max(axis=1)
        return mx + np.log(np.mean(np.exp(self._logw - mx[:, None]), axis=1))

    def p_value(self) -> NDArray[np.float64]:
        """Anytime-valid p-value ``min(1, 1/sup W)`` per stream."""
        return np.minimum(1.0, np.exp(-self._log_max))

    def state(self) -> dict[str, object]:
        """JSON-serialisable state (exact float round-trip)."""
        return {"m": self.m, "lo": self.lo, "hi": self.hi, "grid": self.grid.tolist(), "batch": self.batch,
                "bettor": self.bettor, "logw": self._logw.tolist(), "log_max": self._log_max.tolist(),
                "n": self.n.tolist(), "sum": self._sum.tolist(), "ssd": self._ssd.tolist(), "bet": self._bet.tolist(),
                "target": self.target, "tbet": self._tbet.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> BettingEProcess:
        """Rebuild an identical e-process from :meth:`state` (states without ``bettor`` are grid bettors,
        states without ``target`` have no design alternative)."""
        e = cls(m=state["m"], lo=state["lo"], hi=state["hi"], grid=state["grid"], batch=state["batch"],  # type: ignore[arg-type]
                bettor=state.get("bettor", "grid"), target=state.get("target"))  # type: ignore[arg-type]
        e._logw = np.asarray(state["logw"], dtype=float).reshape(e._logw.shape)
        e._log_max = np.asarray(state["log_max"], dtype=float)
        e.n = np.asarray(state["n"], dtype=np.int64)
        if e.bettor == "agrapa":
            e._sum, e._ssd, e._bet = (np.asarray(state[k], dtype=float).reshape(e.batch) for k in ("sum", "ssd", "bet"))
            if e.target is not None:
                e._tbet = np.asarray(state["tbet"], dtype=float).reshape(e.batch)
        return e


class ESRDetector:
    """e-detector (Shiryaev-Roberts over betting e-processes) for a harmful change at an unknown time.

    .. math::

        R^k_t = (R^k_{t-1} + 1)\\,(1 + \\lambda_k (x_t - m)), \\qquad R_t = \\tfrac{1}{K}\\sum_k R^k_t

    Under the pre-change null (``E[x_t | past] <= m`` at all times) ``R_t - t`` is a supermartingale
    with ``R_0 = 0``, so ``R`` is a nonnegative submartingale bounded in mean by ``t`` and Doob's
    maximal inequality gives the finite-horizon bound
    :math:`P(\\max_{t \\le T} R_t \\ge c) \\le T / c`; with ``c = horizon / alpha`` the probability
    of a false alarm within ``horizon`` observations is at most ``alpha`` (and ARL >= c).

    Examples
    --------
    >>> d = ESRDetector(m=0.5, lo=0.0, hi=1.0, horizon=100, alpha=0.05)
    >>> fired = [bool(d.update(np.array([1.0]))[0]) for _ in range(40)]
    >>> fired.index(True)
    13
    """

    def __init__(self, *, m: float, lo: float, hi: float, horizon: int, alpha: float, grid: ArrayLike | None = None,
                 batch: int = 1) -> None:
        self._e = BettingEProcess(m=m, lo=lo, hi=hi, grid=grid, batch=batch)
        self.alpha = _check_alpha(alpha)
        if horizon < 1:
            raise InputError(f"horizon must be >= 1, got {horizon}")
        self.horizon = int(horizon)
        self.log_threshold = math.log(horizon / self.alpha)
        self._logr = np.full((batch, self._e.grid.size), -np.inf)
        self.fired = np.zeros(batch, dtype=bool)

    def update(self, x: NDArray[np.float64], mask: NDArray[np.bool_] | None = None) -> NDArray[np.bool_]:
        """Add one observation per stream; return the (sticky) alarm flags."""
        e = self._e
        x = np.asarray(x, dtype=float).reshape(e.batch)
        use = (np.ones(e.batch, dtype=bool) if mask is None else mask) & np.isfinite(x)
        if np.any(use & ((x < e.lo - 1e-12) | (x > e.hi + 1e-12))):
            raise InputError("score outside bounds", row=int(np.flatnonzero(use & ((x < e.lo) | (x > e.hi)))[0]))
        xs = np.where(use, x, e.m)
        step = np.log1p(e._lam[None, :] * (xs - e.m)[:, None])
        new = np.logaddexp(self._logr, 0.0) + step
        self._logr = np.where(use[:, None], new, self._logr)
        self.fired |= self.log_statistic() >= self.log_threshold
        return self.fired.copy()

    def log_statistic(self) -> NDArray[np.float64]:
        """``log R_t`` per stream."""
        mx = self._logr.max(axis=1)
        fin = np.isfinite(mx)
        out = np.full(mx.shape, -np.inf)
        out[fin] = mx[fin] + np.log(np.mean(np.exp(self._logr[fin] - mx[fin, None]), axis=1))
        return out


@dataclass
class WaldSPRT:
    """Wald's SPRT for a Bernoulli parameter, ``H0: p = p0`` vs ``H1: p = p1`` (``p1 > p0``).

    Classical boundaries ``A = (1 - beta) / alpha``, ``B = beta / (1 - alpha)``: reject ``H0`` when the
    likelihood ratio reaches ``A``, accept when it falls to ``B``.  Wald's bound gives type-I error
    ``<= alpha / (1 - beta)`` approximately ``alpha`` for the simple point null; unlike the default
    betting e-process it is not valid against composite or dependent nulls, which is why it is an
    option and not the default.

    Examples
    --------
    >>> t = WaldSPRT(p0=0.5, p1=0.7, alpha=0.05, beta=0.1)
    >>> [t.update(1) for _ in range(12)][-1]
    'reject'
    """

    p0: float
    p1: float
    alpha: float = 0.05
    beta: float = 0.1
    llr: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.p0 < self.p1 < 1.0:
            raise InputError(f"need 0 < p0 < p1 < 1, got p0={self.p0}, p1={self.p1}")
        _check_alpha(self.alpha)
        _check_alpha(self.beta)
        self.upper = math.log((1 - self.beta) / self.alpha)
        self.lower = math.log(self.beta / (1 - self.alpha))

    def update(self, x: int | bool) -> Literal["reject", "accept", "continue"]:
        """Add one Bernoulli outcome; return the SPRT's decision."""
        if x not in (0, 1, True, False):
            raise InputError(f"SPRT observation must be 0/1, got {x!r}")
        self.llr += math.log(self.p1 / self.p0) if x else math.log((1 - self.p1) / (1 - self.p0))
        if self.llr >= self.upper:
            return "reject"
        if self.llr <= self.lower:
            return "accept"
        return "continue"


def holm(p: ArrayLike, alpha: float) -> NDArray[np.bool_]:
    """Holm's step-down procedure on the last axis: which hypotheses are rejected.

    Controls the family-wise error at ``alpha`` under any dependence between the p-values.
    With anytime-valid p-values it is valid at any stopping time.

    >>> holm([0.01, 0.04, 0.03], 0.05).tolist()
    [True, False, False]
    >>> holm([0.01, 0.02, 0.03], 0.05).tolist()
    [True, True, True]
    """
    alpha = _check_alpha(alpha)
    p = np.asarray(p, dtype=float)
    d = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ps = np.take_along_axis(p, order, axis=-1)
    ok = ps <= alpha / (d - np.arange(d))
    ok = np.cumprod(ok, axis=-1).astype(bool)
    out = np.zeros_like(ok)
    np.put_along_axis(out, order, ok, axis=-1)
    return out


def simes_global(p: ArrayLike, alpha: float) -> NDArray[np.bool_]:
    """Simes' test of the global null (does any dimension show harm?) on the last axis.

    Less conservative than Holm's first step (Bonferroni) but valid only under independence or
    positive regression dependence (PRDS) of the p-values; Holm needs no such assumption.

    >>> bool(simes_global([0.03, 0.04, 0.05], 0.05))
    True
    """
    alpha = _check_alpha(alpha)
    p = np.sort(np.asarray(p, dtype=float), axis=-1)
    d = p.shape[-1]
    return np.any(p <= alpha * np.arange(1, d + 1) / d, axis=-1)
