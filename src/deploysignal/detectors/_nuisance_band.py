r"""The band a compiled baseline justifies for family A's nuisance terms (issue 22).

Family A's one-sample null has three nuisance terms, all estimated from the baseline: the error
:math:`b_c` of each cell's score centre (prior variance ``v_c``), a global level offset :math:`g`
between baseline and canary (prior variance ``v_g``: the compiler's between-day variance plus the
operator's ``drift_allowance`` squared) and the AR(1) estimation error :math:`\beta = \phi - \hat\phi`
(prior sd ``se_phi``), which enters each innovation as :math:`\beta r_i` with :math:`r_i` the previous
de-seasonalised level in innovation units. Learning these terms from the canary (the predictor of
0.4.0) lets a large harmful shift be explained as nuisance: a step moves the level, the AR-error
regression fits the step and the evidence stops growing (issue 22: p99 x10 *extended*).

Instead the rollback test is run against the band's upper edge: the canary's oriented innovation
(score units) must exceed

.. math:: a_i = k\sqrt{v_c} + k\sqrt{v_g} + k\, se_\phi \min(|r_i|, R) + e,

which no canary value moves except through :math:`|r_i|`, and that term is held below the score's own
response to the same shift (see :func:`nuisance_band`, ``monotone``). The band holds with probability
at least ``delta = BAND_SHARE * alpha_A`` (Gaussian tails, union bound): ``k`` covers every cell and
channel's :math:`b_c`, every channel's :math:`g` and :math:`\pm\beta` at ``delta / 2``; ``R`` covers
every channel's :math:`|r_i|` over the horizon at ``delta / 2`` under the fitted AR(1), with the
largest g-step factor a gap can give. The bets clip the centred innovation
at ``BET_TOP`` (30 sd) instead of the compiler's ``C_HI`` (6 sd, where the cell centres are measured),
so a gross shift earns up to about two nats per tick instead of one; in one-sample mode ``e`` pays for
that: the largest :math:`E[(W - c)^+]` of an innovation :math:`W` of unit variance whose mean is below
the band's widest point :math:`\mu`, :math:`(\sqrt{1 + (c-\mu)^2} - (c-\mu))/2` with ``c = C_HI``
(Scarf's bound, any distribution). In two-sample mode no baseline centre absorbs the lower clip at
``-C_PAIR`` (0.4.0's symmetric clip cancelled it): ``e = 1/(8(C_PAIR - \mu))`` bounds what that clip
adds for a paired difference symmetric about its conditional mean, the symmetry its null (canary
and control exchangeable) already assumes.

References
----------
Scarf (1958) a min-max solution of an inventory problem (the bound on E[(W - c)^+]); Bonferroni union bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri  # -ndtri(q) = scipy.stats.norm.isf(q) bit for bit, without importing scipy.stats

__all__ = ["BAND_SHARE", "BET_TOP", "NuisanceBand", "gap_factor", "nuisance_band"]

#: Share of family A's alpha spent on the event "every nuisance lies inside its band".
BAND_SHARE = 0.2
#: Upper clip (innovation sd) of family A's centred rollback bets in ``band`` mode.
BET_TOP = 30.0


@dataclass(frozen=True)
class NuisanceBand:
    """Per stream and channel: level band plus tail margin ``a_lvl`` (P, cells, m) in score units
    (no level term in two-sample mode), AR-error band ``k_phi`` (P, m) per unit of ``|r|``, regressor
    cap ``r_cap`` (P, m), the Gaussian quantiles used, and whether the centred score is provably
    nondecreasing in a harmful shift of the signal (``monotone``, (P, m))."""

    a_lvl: np.ndarray
    k_phi: np.ndarray
    r_cap: np.ndarray
    k: float
    k_r: float
    monotone: np.ndarray
    tail: np.ndarray


def _over_gaps(phi: np.ndarray, max_gap: int, term, reduce, done, chunk: int = 64) -> np.ndarray:
    """``reduce`` (np.maximum or np.minimum) of ``term(g, phi)`` over ``g = 1..max_gap``, elementwise, in
    chunks of gaps; an element leaves once ``done(g, phi, acc)`` proves that no later gap can change its
    value (bounds in the callers). Equal to the reduction over all gaps at once, without its
    ``max_gap x phi.size`` temporaries (2,000 streams x 12 channels x 4,096 gaps: ~800 MB each)."""
    flat = phi.ravel()
    acc = np.full(flat.shape, -np.inf if reduce is np.maximum else np.inf)
    active = np.arange(flat.size)
    for g0 in range(1, max_gap + 1, chunk):
        if active.size == 0:
            break
        g = np.arange(g0, min(g0 + chunk, max_gap + 1), dtype=float)[:, None]
        p = flat[active]
        acc[active] = reduce(acc[active], reduce.reduce(term(g, p), axis=0))
        nxt = float(g[-1, 0] + 1.0)
        active = active[~done(nxt, p, acc[active])]
    return acc.reshape(phi.shape)


def _gap_term(g: np.ndarray, phi: np.ndarray) -> np.ndarray:
    a = np.abs(phi)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        f = g * a ** (g - 1.0) * np.sqrt((1.0 - phi**2) / (1.0 - phi ** (2.0 * g)))
    return np.where(np.isfinite(f), f, 0.0)


def _gap_done(g: float, phi: np.ndarray, acc: np.ndarray) -> np.ndarray:
    # for |phi| < 1 and every gap h >= g: term(h) <= h |phi|^(h-1) (the square root is at most 1), which
    # decreases once h >= 1 / -log|phi|; so no later gap exceeds acc once that bound is below it
    a = np.abs(phi)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        peak = 1.0 / -np.log(a)
        bound = g * a ** (g - 1.0)
    return (a < 1.0) & (g >= peak) & (bound < acc * (1.0 - 1e-9))


def gap_factor(phi: np.ndarray, max_gap: int = 4096) -> np.ndarray:
    r"""Largest ratio, over gaps ``g = 1..max_gap``, of the g-step regressor
    :math:`g\hat\phi^{g-1}y/\sqrt{(1-\hat\phi^{2g})/(1-\hat\phi^2)}` to the one-step one (1 for a
    gap of one tick; e.g. 1.0 at phi 0.3, about 4 at phi 0.98)."""
    return _over_gaps(np.asarray(phi, dtype=float), max_gap, _gap_term, np.maximum, _gap_done)


def _slack_term(g: np.ndarray, phi: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        den = g * np.abs(phi) ** (g - 1.0)
        return np.where(den > 0, (1.0 - phi**g) / np.where(den > 0, den, 1.0), np.inf)


def _slack_done(g: float, phi: np.ndarray, acc: np.ndarray) -> np.ndarray:
    # for |phi| < 1 and h >= g: term(h) >= (1 - |phi|^h) / (h |phi|^(h-1)) >= 1 / (2 h |phi|^(h-1)) once
    # |phi|^h <= 1/2, and that bound increases once h >= 1 / -log|phi|
    a = np.abs(phi)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        la = np.log(a)
        start = np.maximum(1.0 / -la, np.log(0.5) / la)
        bound = 1.0 / (2.0 * g * a ** (g - 1.0))
    return (a < 1.0) & (g >= start) & (bound > acc * (1.0 + 1e-9))


def _monotone_slack(phi: np.ndarray, max_gap: int = 4096) -> np.ndarray:
    r"""Smallest ratio over gaps of the score's response to a level step, :math:`1-\hat\phi^g`, to the
    regressor's, :math:`g|\hat\phi|^{g-1}` (``1 - phi`` for ``phi >= 0``)."""
    return _over_gaps(np.asarray(phi, dtype=float), max_gap, _slack_term, np.minimum, _slack_done)


def nuisance_band(
    bias_var: np.ndarray, g2: np.ndarray, phi: np.ndarray, phi_se: np.ndarray, score_sd: np.ndarray, *, alpha: float, horizon: int,
    two_sample: bool, c_hi: float, c_pair: float,
) -> NuisanceBand:
    r"""The band for ``P`` streams of ``m`` channels.

    Parameters
    ----------
    bias_var : (P, cells, m) prior variances of the cell centres' errors.
    g2 : (P, m) prior variance of the global level offset (0 = none).
    phi, phi_se : (P, m) the fitted AR(1) coefficient and its standard error (0 = not prewhitened).
    score_sd : (P, m) score scale (the regressor is divided by it, like the score).
    alpha : family A's share of the false-rollback budget; ``BAND_SHARE * alpha`` is spent here.
    horizon : ticks over which the regressor's cap must hold.
    two_sample : paired differences with a live control (no level terms) or one-sample scores.
    c_hi, c_pair : the compiler's upper clip of one-sample scores and the symmetric clip of paired ones.

    Guarantee and assumption
        Under the model the compiler fits (each cell centre's error Gaussian with variance ``v_c``,
        the global offset Gaussian with variance ``v_g``, :math:`\hat\phi - \phi` Gaussian with sd
        ``se_phi``, a stationary Gaussian AR(1) level), every nuisance lies in the band with
        probability at least ``1 - BAND_SHARE * alpha``. ``monotone`` is true where
        ``k_phi <= min_g (1 - phi^g) / (g |phi|^(g-1))``: there the band's response to a harmful step
        never exceeds the score's own, so the centred score is nondecreasing in the step (false only
        when ``phi`` is near 1 and the baseline short, e.g. phi 0.98 with fewer than about 2,500
        baseline ticks).
    """
    P, n_cells, m = bias_var.shape
    delta = BAND_SHARE * alpha
    n_events = m * (n_cells + 3)  # b_c per cell, g, +beta and -beta per channel
    k = float(-ndtri(delta / 2.0 / n_events))
    k_r = float(-ndtri(delta / 2.0 / (2.0 * m * max(int(horizon), 1))))
    phi = np.clip(np.asarray(phi, dtype=float), -0.999, 0.999)
    k_phi = k * np.asarray(phi_se, dtype=float)
    r_cap = k_r * gap_factor(phi) / np.sqrt(1.0 - phi**2) / score_sd
    if two_sample:
        mu = np.broadcast_to((k_phi * r_cap)[:, None, :], bias_var.shape)
        t = np.maximum(c_pair - mu, 1e-3)
        a_lvl = 1.0 / (8.0 * t)
        tail = a_lvl
    else:
        g2 = np.where(np.isfinite(g2) & (g2 > 0), g2, 0.0)
        lvl = k * (np.sqrt(bias_var) + np.sqrt(g2)[:, None, :])
        mu = (lvl + (k_phi * r_cap)[:, None, :]) * score_sd[:, None, :]  # widest band, innovation units
        t = np.maximum(c_hi - mu, 1e-3)
        tail = (np.sqrt(1.0 + t**2) - t) / 2.0 / score_sd[:, None, :]
        a_lvl = lvl + tail
    monotone = k_phi <= _monotone_slack(phi)
    return NuisanceBand(np.ascontiguousarray(a_lvl), np.ascontiguousarray(k_phi), np.ascontiguousarray(r_cap), k, k_r, monotone,
                        np.ascontiguousarray(tail))
