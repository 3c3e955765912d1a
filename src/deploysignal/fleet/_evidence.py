"""Per-shard e-processes against a robust fleet reference, vectorised across shards.

Construction
------------
At tick :math:`t` the fleet reports :math:`x_{t,i,j}` for shard :math:`i` and signal :math:`j`.
The robust fleet reference per signal is the cross-shard median :math:`m_{t,j}` and the scale is
:math:`s_{t,j} = 1.4826\\,\\mathrm{MAD}_i(x_{t,i,j})` (floored by ``scale_floor``), so a fleet-wide
load move shifts :math:`m_{t,j}` and cancels. The oriented residual is

.. math::

    r_{t,i,j} = d_j\\,\\frac{x_{t,i,j} - m_{t,j}}{s_{t,j}},\\qquad
    u_{t,i,j} = r_{t,i,j} - \\phi_{i,j}\\,r_{t-1,i,j}

(``d_j = +1`` for signals harmful upward, ``-1`` downward; :math:`\\phi` an AR(1) coefficient fixed
in advance, e.g. by :func:`~deploysignal.fleet.curate_baseline`). Each (shard, signal) runs a mixture
of bounded-bet wealth processes

.. math::

    W^{(k)}_{t,i,j} = \\prod_{s\\le t} \\bigl(1 + \\lambda_k\\, g(u_{s,i,j})\\bigr),\\qquad
    g(u) = \\max(-1, \\min(1, u / c)),\\qquad 0 < \\lambda_k < 1,

and the shard e-process is the average :math:`E_{t,i} = \\frac{1}{JK}\\sum_{j,k} W^{(k)}_{t,i,j}`.

Null hypothesis and guarantee
-----------------------------
:math:`H_{0,i}`: given the fleet's past, every innovation :math:`u_{t,i,j}` of shard :math:`i` is
symmetric about 0 (this holds when the shard is exchangeable with the rest of the fleet under a joint
reflection-symmetric law: the median is reflection-equivariant). Because :math:`g` is odd and bounded
by 1, :math:`E[1+\\lambda g(u)\\mid\\mathcal F_{t-1}] = 1` and every factor is positive, so each
:math:`W^{(k)}` and their average :math:`E_{t,i}` are **test martingales** in the fleet filtration.
Hence (Ville) :math:`P(\\sup_t E_{t,i} \\ge 1/\\alpha) \\le \\alpha` and, by optional stopping,
:math:`E[E_{\\tau,i}] \\le 1` at any stopping time :math:`\\tau`: the shard values are e-values for
e-BH at the time the operator looks. No moment is needed (bets are bounded), so heavy tails are
harmless; serial dependence enters only through :math:`\\phi` (AR(1) prewhitening). Missing values
and frozen scopes bet 0 (factor 1), which is predictable and keeps the martingale property.

Contaminated fleets
-------------------
FDR only matters when some shards are faulty, and faulty shards move the median: a fraction
:math:`p` of faulty shards moves the cross-shard median by up to :math:`\\Phi^{-1}(1/(2(1-p)))` null
sds (population level), and faults sitting just past it also shrink the MAD that scales the
residuals. A one-sided signal whose faulty shards move the *harmful* way pushes the null shards the
harmless way (conservative), but faults the harmless way, or ``both`` signals, bias every null shard
towards a bet it wins, and with hundreds of ticks any fixed bias fires. ``margin``
:math:`\\varepsilon` removes that bias from the bets (see the class); :func:`contamination_margin`
gives the worst case over fault positions for a planned maximum faulty fraction :math:`p` and a
Gaussian null. With per-shard ``center`` the reference is the median of the offset-free values
:math:`x - \\text{center}`, so the bias is a quantile of the noise, not of the offsets' spread.
The guarantee under contamination is therefore: **e-values of null shards are valid while at most a
fraction p of shards is faulty**, an approximation at the population level (finite fleets pull the
median towards each shard, which helps; light-tailed, multi-modal or skewed nulls are not covered by
the Gaussian formula; a bias that changes from tick to tick enters the innovation as
:math:`b_t - \\phi b_{t-1}`, not :math:`(1-\\phi) b`). With per-shard centres, the centre tolerance
holds for all shards with probability :math:`1 - \\delta` over the baseline (``center_delta``), so
the FDR bound becomes :math:`q + \\delta`. The seeded Monte Carlo in ``tests/fleet/test_fdr.py``
checks FDR with faulty shards 2 sd away at the planned fraction (10% and 15%), Gaussian, Student-t(3)
and AR(1) noise, with and without per-shard offsets, and the supermartingale condition itself (the
healthy shards' bet payoff) with faults stuck at the worst position near the centre.

Cost: the margin is a drift of :math:`-\\lambda\\varepsilon/c` per tick in every healthy shard's
wealth, so a fault that starts after a long quiet stretch needs longer to win it back (the
e-processes test "shifted since the start", not "changed at some time").

Host / rack / zone e-processes are fixed-weight averages of their shards' e-processes: an average of
e-values is an e-value under any dependence, and in one filtration it is again a test martingale for
the intersection null of its members.

References
----------
Ville (1939); Shafer & Vovk (2019), *Game-Theoretic Foundations for Probability and Finance*;
Waudby-Smith & Ramdas (2024), Estimating means of bounded random variables by betting, JRSS-B;
Vovk & Wang (2021), E-values: calibration, combination and applications, Ann. Statist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from .._exceptions import InputError

__all__ = ["FleetEProcess", "FleetTick", "contamination_margin", "group_log_e", "robust_residuals"]

_MAD_TO_SD = 1.482602218505602
_DEFAULT_LAMBDAS = (0.05, 0.1, 0.2, 0.4)


def contamination_margin(max_faulty_fraction: float) -> float:
    """Margin covering the bias of the MAD-scaled median residual when a fraction ``p`` is faulty.

    Worst case at the population level for a Gaussian null (unit sd): the faulty shards sit just past
    the shifted median, which moves it by :math:`m = \\Phi^{-1}(1/(2(1-p)))` *and* shrinks the MAD of
    the mixture to :math:`d` solving :math:`(1-p)[\\Phi(m+d) - \\Phi(m-d)] + p = 1/2`; the bias in
    MAD-scale units is then :math:`m / (1.4826\\, d)`. Faults far from the centre give less (they
    widen the MAD). Heavy-tailed nulls stay below it (Student-t(1-3), Laplace, logistic: e.g. t(3) at
    p = 0.15 gives 0.262 against 0.271); light-tailed and multi-modal nulls can exceed it (uniform:
    0.289; two modes N(+-1, 0.5): 0.448 at p = 0.15).

    >>> round(contamination_margin(0.15), 3)
    0.271
    >>> round(contamination_margin(0.10), 3)
    0.158
    >>> contamination_margin(0.0)
    0.0
    """
    p = float(max_faulty_fraction)
    if not 0 <= p < 0.5:
        raise InputError(f"max_faulty_fraction must lie in [0, 0.5), got {p}", column="max_faulty_fraction")
    if p == 0:
        return 0.0
    m = float(norm.ppf(0.5 / (1.0 - p)))
    d = float(brentq(lambda d: (1.0 - p) * (norm.cdf(m + d) - norm.cdf(m - d)) + p - 0.5, 1e-12, 10.0))
    return m / (_MAD_TO_SD * d)


def robust_residuals(values: np.ndarray, *, scale_floor: float = 1e-6) -> np.ndarray:
    """Residuals of each shard against the cross-shard median, scaled by the cross-shard MAD.

    Parameters
    ----------
    values : ndarray, shape (..., n_shards, n_signals)
        One tick of fleet telemetry (NaN = missing; ignored by the reference).
    scale_floor : float
        Lower bound of the scale (a flat signal across the fleet gives residual 0, not inf).

    Returns
    -------
    ndarray, same shape; NaN where the input is NaN.

    Examples
    --------
    >>> x = np.array([[1.0], [2.0], [3.0], [100.0]])
    >>> robust_residuals(x).ravel().round(3).tolist()
    [-1.012, -0.337, 0.337, 65.763]
    """
    return _residuals(values, scale_floor)[0]


def _median_scale(x: np.ndarray, scale_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Cross-shard median and MAD scale (floored), NaN ignored, shape kept along the shard axis."""
    if np.isnan(x).any():
        med = np.nanmedian(x, axis=-2, keepdims=True)
        mad = np.nanmedian(np.abs(x - med), axis=-2, keepdims=True)
    else:
        med = np.median(x, axis=-2, keepdims=True)
        mad = np.median(np.abs(x - med), axis=-2, keepdims=True)
    return med, np.maximum(_MAD_TO_SD * mad, scale_floor)


def _residuals(values: np.ndarray, scale_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Residuals and the median (kept once, for the fleet-level process)."""
    x = np.asarray(values, dtype=float)
    med, scale = _median_scale(x, scale_floor)
    return (x - med) / scale, med


@dataclass(frozen=True, slots=True)
class FleetTick:
    """What the shard e-processes say after one tick.

    Attributes
    ----------
    tick : int
    log_e : ndarray, shape (n_shards,)
        Log of each shard's e-process :math:`E_{t,i}`.
    log_e_max : ndarray, shape (n_shards,)
        Log of the running maximum :math:`\\sup_{s\\le t} E_{s,i}`.
    residuals : ndarray, shape (n_shards, n_signals)
        Oriented robust residuals of this tick.
    frozen : ndarray of bool, shape (n_shards,)
        Shards whose bets were frozen this tick.
    median : ndarray, shape (n_signals,)
        The fleet reference (cross-shard median) of this tick, unoriented.
    """

    tick: int
    log_e: np.ndarray
    log_e_max: np.ndarray
    residuals: np.ndarray
    frozen: np.ndarray
    median: np.ndarray


class FleetEProcess:
    """Per-shard bounded-bet e-processes on robust fleet residuals, all shards in one numpy state.

    Parameters
    ----------
    n_shards, n_signals : int
    directions : sequence of str, optional
        Per signal ``"up"`` / ``"down"`` (one-sided, harmful direction) or ``"both"`` (the mixture
        bets both ways). Default all ``"up"``.
    phi : ndarray, shape (n_shards, n_signals) or scalar, optional
        AR(1) prewhitening coefficients fixed in advance (default 0); must lie in (-1, 1).
    lambdas : sequence of float
        Bet sizes of the mixture, each in (0, 1).
    clip : float
        :math:`c` in :math:`g(u) = \\mathrm{clip}(u/c, -1, 1)`.
    center, scale : ndarray, shape (n_shards, n_signals), optional
        Per-shard baseline of the deviation from the fleet median (heterogeneous fleets: servers with
        persistent offsets). When given, :math:`r = d\\,(x - \\text{center} - m')/\\text{scale}` with
        :math:`m'` the cross-shard median of :math:`x - \\text{center}`, and the null is that the
        shard's offset-free value is symmetric about the fleet's (as in the baseline). Without them
        the cross-shard median and MAD of :math:`x` give the residual.
    margin : float
        Tolerance :math:`\\varepsilon \\ge 0`, in units of the cross-shard MAD scale: the +side bets on
        :math:`g(u - \\varepsilon')` and the -side on :math:`g(u + \\varepsilon')`,
        :math:`\\varepsilon' = \\varepsilon\\,|1-\\phi|` (in shard-scale units when ``scale`` is given), so the
        null widens to "symmetric about some :math:`b` with :math:`|b| \\le \\varepsilon'`". That is what
        keeps null shards' e-values valid while other shards are faulty (see *Contaminated fleets* in
        the module docstring). Default 0 (the exchangeable null).
    center_tolerance : float or ndarray, shape (n_shards, n_signals)
        Added to the margin, in residual units: how far the per-shard ``center`` (an estimate from a
        finite baseline) may be off. :class:`FleetObserver` sets it to a Bonferroni multiple of
        :attr:`CurationReport.center_se`. Default 0 (center known exactly).

    Notes
    -----
    State is ``(n_shards, n_signals, n_lambdas)`` relative wealth, ``(n_shards,)`` log e-value, plus ``(n_shards, n_signals)`` previous
    residual and ``(n_shards,)`` running maximum: constant memory in time. See the module docstring
    for the null and the guarantee.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ep = FleetEProcess(50, 3)
    >>> for t in range(200):
    ...     x = rng.standard_normal((50, 3))
    ...     x[7] += 1.5                     # shard 7 drifts upward on every signal
    ...     out = ep.update(x)
    >>> int(np.argmax(out.log_e)), bool(out.log_e[7] > math.log(1000))
    (7, True)
    """

    def __init__(
        self,
        n_shards: int,
        n_signals: int,
        *,
        directions: tuple[str, ...] | list[str] | None = None,
        phi: np.ndarray | float = 0.0,
        lambdas: tuple[float, ...] = _DEFAULT_LAMBDAS,
        clip: float = 2.0,
        scale_floor: float = 1e-6,
        center: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        margin: float = 0.0,
        center_tolerance: np.ndarray | float = 0.0,
    ) -> None:
        if int(n_shards) < 3 or int(n_signals) < 1:
            raise InputError(f"need >= 3 shards and >= 1 signal, got {n_shards} x {n_signals}")
        self.n_shards = int(n_shards)
        self.n_signals = int(n_signals)
        dirs = tuple(directions) if directions is not None else ("up",) * self.n_signals
        if len(dirs) != self.n_signals or any(d not in ("up", "down", "both") for d in dirs):
            raise InputError(f"directions must be {self.n_signals} of 'up'/'down'/'both', got {dirs!r}")
        self.directions = dirs
        lam = np.asarray(lambdas, dtype=float)
        if lam.ndim != 1 or lam.size == 0 or not np.all((lam > 0) & (lam < 1)):
            raise InputError(f"lambdas must be a non-empty sequence in (0, 1), got {lambdas!r}")
        self.lambdas = tuple(float(v) for v in lam)
        if not clip > 0:
            raise InputError(f"clip must be > 0, got {clip}")
        self.clip = float(clip)
        self.scale_floor = float(scale_floor)
        if not (math.isfinite(margin) and margin >= 0):
            raise InputError(f"margin must be finite and >= 0, got {margin}", column="margin")
        self.margin = float(margin)
        tol = np.broadcast_to(np.asarray(center_tolerance, dtype=float), (int(n_shards), int(n_signals))).copy()
        if not (np.all(np.isfinite(tol)) and np.all(tol >= 0)):
            raise InputError("center_tolerance must be finite and >= 0", column="center_tolerance")
        self.center_tolerance = tol
        ph = np.broadcast_to(np.asarray(phi, dtype=float), (self.n_shards, self.n_signals)).copy()
        if not np.all(np.abs(ph) < 1):
            raise InputError("phi must lie in (-1, 1)")
        self.phi = ph
        if (center is None) != (scale is None):
            raise InputError("give both center and scale (per-shard baseline), or neither", column="scale")
        self.center = self.scale = None
        if center is not None and scale is not None:
            shape = (self.n_shards, self.n_signals)
            c = np.broadcast_to(np.asarray(center, dtype=float), shape).copy()
            sc = np.broadcast_to(np.asarray(scale, dtype=float), shape).copy()
            if not (np.all(np.isfinite(c)) and np.all(sc > 0)):
                raise InputError("center must be finite and scale > 0", column="scale")
            self.center, self.scale = c, sc
        sign = np.array([-1.0 if d == "down" else 1.0 for d in dirs])
        both = np.array([d == "both" for d in dirs])
        # signed bet grid per signal: one-sided signals bet +lambda_k; 'both' signals alternate the sign
        # (+lambda_1, -lambda_2, +lambda_3, ...), so one mixture covers both directions at equal cost
        alt = np.where(np.arange(lam.size) % 2 == 0, 1.0, -1.0)
        self._sign = sign
        self._grid = np.where(both[:, None], lam[None, :] * alt[None, :], lam[None, :])
        self._grid_pos = np.maximum(self._grid, 0.0)
        self._grid_neg = np.minimum(self._grid, 0.0)
        self._has_neg = bool((self._grid < 0).any())
        self._reset()

    def _reset(self) -> None:
        # wealth kept relative to a per-shard offset: E_i = exp(_log_off[i]) * mean(_w[i]); a shard is
        # renormalised (mean 1) whenever its mean leaves [1e-100, 1e100], so nothing over- or underflows
        self._w = np.ones((self.n_shards, self.n_signals, self._grid.shape[1]))
        self._log_off = np.zeros(self.n_shards)
        self._log_e = np.zeros(self.n_shards)
        self._prev = np.zeros((self.n_shards, self.n_signals))
        self._log_e_max = np.zeros(self.n_shards)
        self._tick = 0

    # ------------------------------------------------------------------ update
    def update(self, values: np.ndarray, *, frozen: np.ndarray | None = None) -> FleetTick:
        """Feed one tick ``values`` of shape (n_shards, n_signals); NaN = missing.

        ``frozen`` (bool, shape (n_shards,)) marks shards whose bets are set to 0 for this tick
        (a cluster event in their scope); it must be decided before ``values`` is seen.
        """
        x = np.asarray(values, dtype=float)
        if x.shape != (self.n_shards, self.n_signals):
            raise InputError(f"tick {self._tick}: expected shape {(self.n_shards, self.n_signals)}, got {x.shape}")
        if np.isinf(x).any():
            i, j = np.argwhere(np.isinf(x))[0]
            raise InputError(f"tick {self._tick}: infinite value", row=int(i) + 1, column=f"signal {int(j)}")
        fz = np.zeros(self.n_shards, dtype=bool) if frozen is None else np.asarray(frozen, dtype=bool)
        if fz.shape != (self.n_shards,):
            raise InputError(f"frozen must have shape ({self.n_shards},), got {fz.shape}")
        if self.center is not None and self.scale is not None:
            # reference = median of the offset-free values x - center, so that faulty shards move it by
            # a noise quantile, not by a quantile of the (possibly wide) spread of shard offsets
            med = np.nanmedian(x, axis=0) if np.isnan(x).any() else np.median(x, axis=0)  # fleet-level process only
            dev = x - self.center
            ref, dev_scale = _median_scale(dev, self.scale_floor)
            r = (dev - ref) / self.scale
            # margin in units of the cross-shard MAD scale of the offset-free values
            eps = self.center_tolerance + self.margin * dev_scale / self.scale
        else:
            r, med = _residuals(x, self.scale_floor)
            eps = self.center_tolerance + self.margin
        self._median = med.reshape(-1)
        r = r * self._sign
        u = r - self.phi * self._prev
        nobet = np.isnan(u) | fz[:, None]
        # a bias b of the residual leaves (1 - phi) b in the innovation; the +side bets on u - eps, the
        # -side on u + eps, so both stay supermartingales while |bias| <= eps (eps = 0: the plain bet)
        eps = eps * np.abs(1.0 - self.phi)
        gp = np.where(nobet, 0.0, np.clip((u - eps) / self.clip, -1.0, 1.0))
        f = gp[:, :, None] * self._grid_pos[None, :, :]
        if self._has_neg:
            gm = np.where(nobet, 0.0, np.clip((u + eps) / self.clip, -1.0, 1.0))
            f += gm[:, :, None] * self._grid_neg[None, :, :]
        f += 1.0
        self._w *= f
        m = self._w.reshape(self.n_shards, -1).mean(axis=1)
        log_e = self._log_off + np.log(m)
        self._log_e = log_e
        far = (m > 1e100) | (m < 1e-100)
        if far.any():  # renormalise the few shards whose relative wealth drifted far from 1
            self._w[far] /= m[far, None, None]
            self._log_off[far] = log_e[far]
        self._prev = np.where(np.isnan(r), 0.0, r)
        np.maximum(self._log_e_max, log_e, out=self._log_e_max)
        out = FleetTick(self._tick, log_e.copy(), self._log_e_max.copy(), r, fz, self._median)
        self._tick += 1
        return out

    def log_e(self) -> np.ndarray:
        """Log of each shard's e-process (average over signals and bets), shape (n_shards,)."""
        return self._log_e.copy()

    def log_e_signal(self) -> np.ndarray:
        """Log e-process per (shard, signal), shape (n_shards, n_signals): which signals drive a shard."""
        with np.errstate(divide="ignore"):
            return self._log_off[:, None] + np.log(self._w.mean(axis=2))

    @property
    def tick(self) -> int:
        return self._tick

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """JSON-serialisable exact state (floats as ``float.hex``)."""

        def enc(a: np.ndarray) -> list[str]:
            return [float(v).hex() for v in np.ravel(a)]

        return {
            "n_shards": self.n_shards,
            "n_signals": self.n_signals,
            "directions": list(self.directions),
            "lambdas": list(self.lambdas),
            "clip": self.clip,
            "scale_floor": self.scale_floor,
            "margin": self.margin,
            "center_tolerance": enc(self.center_tolerance),
            "phi": enc(self.phi),
            "center": None if self.center is None else enc(self.center),
            "scale": None if self.scale is None else enc(self.scale),
            "w": enc(self._w),
            "log_off": enc(self._log_off),
            "log_e": enc(self._log_e),
            "prev": enc(self._prev),
            "log_e_max": enc(self._log_e_max),
            "tick": self._tick,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FleetEProcess:
        def dec(v: list[str], shape: tuple[int, ...]) -> np.ndarray:
            return np.array([float.fromhex(s) for s in v], dtype=float).reshape(shape)

        try:
            n, k = int(state["n_shards"]), int(state["n_signals"])
            ep = cls(
                n, k, directions=tuple(state["directions"]), lambdas=tuple(state["lambdas"]),
                clip=float(state["clip"]), scale_floor=float(state["scale_floor"]),
                phi=dec(state["phi"], (n, k)),
                center=None if state.get("center") is None else dec(state["center"], (n, k)),
                scale=None if state.get("scale") is None else dec(state["scale"], (n, k)),
                margin=float(state.get("margin", 0.0)),
                center_tolerance=dec(state["center_tolerance"], (n, k)) if "center_tolerance" in state else 0.0,
            )
            ep._w = dec(state["w"], ep._w.shape)
            ep._log_off = dec(state["log_off"], (n,))
            ep._log_e = dec(state["log_e"], (n,))
            ep._prev = dec(state["prev"], (n, k))
            ep._log_e_max = dec(state["log_e_max"], (n,))
            ep._tick = int(state["tick"])
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"bad fleet e-process state: {exc}") from exc
        return ep


def group_log_e(log_e: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Equal-weight average of member e-values per group, in log space.

    ``groups[i]`` is the group index of shard ``i`` (-1 = unknown, excluded). Groups without
    members get ``-inf``. Averages of e-values are e-values under any dependence.

    Examples
    --------
    >>> group_log_e(np.log(np.array([1.0, 3.0, 10.0])), np.array([0, 0, 1]), 2).round(4).tolist()
    [0.6931, 2.3026]
    """
    out = np.full(n_groups, -np.inf)
    ok = groups >= 0
    if not ok.any():
        return out
    g = groups[ok]
    le = log_e[ok]
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, g, le)
    s = np.zeros(n_groups)
    np.add.at(s, g, np.exp(le - top[g]))
    cnt = np.bincount(g, minlength=n_groups)
    has = cnt > 0
    out[has] = top[has] + np.log(s[has] / cnt[has])
    return out

