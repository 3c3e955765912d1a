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


def gap_factor(phi: np.ndarray, max_gap: int = 4096) -> np.ndarray:
    r"""Largest ratio, over gaps ``g = 1..max_gap``, of the g-step regressor
    :math:`g\hat\phi^{g-1}y/\sqrt{(1-\hat\phi^{2g})/(1-\hat\phi^2)}` to the one-step one (1 for a
    gap of one tick; e.g. 1.0 at phi 0.3, about 4 at phi 0.98)."""
    phi = np.asarray(phi, dtype=float)
    g = np.arange(1, max_gap + 1, dtype=float).reshape((-1,) + (1,) * phi.ndim)
    a = np.abs(phi)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        f = g * a ** (g - 1.0) * np.sqrt((1.0 - phi**2) / (1.0 - phi ** (2.0 * g)))
    return np.nanmax(np.where(np.isfinite(f), f, 0.0), axis=0)


def _monotone_slack(phi: np.ndarray, max_gap: int = 4096) -> np.ndarray:
    r"""Smallest ratio over gaps of the score's response to a level step, :math:`1-\hat\phi^g`, to the
    regressor's, :math:`g|\hat\phi|^{g-1}` (``1 - phi`` for ``phi >= 0``)."""
    phi = np.asarray(phi, dtype=float)
    g = np.arange(1, max_gap + 1, dtype=float).reshape((-1,) + (1,) * phi.ndim)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        den = g * np.abs(phi) ** (g - 1.0)
        ratio = np.where(den > 0, (1.0 - phi**g) / np.where(den > 0, den, 1.0), np.inf)
    return ratio.min(axis=0)


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
