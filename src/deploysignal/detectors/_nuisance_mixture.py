r"""Family A's nuisance integrated out: a Gaussian mixture e-process monotone in harm (issue 22).

Family A's one-sample null has level nuisances the baseline estimates with error: each cell centre's
error :math:`b_c \sim N(0, v_c)` (independent across cells) and a global level offset
:math:`g \sim N(0, v_g)` shared by all cells (the compiler's between-day variance plus the operator's
``drift_allowance`` squared). ``learned`` (0.4.0) centres its bets on their posterior mean, which
follows a harmful shift and explains it away; ``band`` tests against their worst case, which is wide.
Here they are **integrated out** of a likelihood ratio instead. Under the compiler's model, with
:math:`y_i` the canary's score (below), the scores since the canary's start are jointly Gaussian,

.. math:: y = B b + g\,\mathbf 1 + \varepsilon, \qquad \varepsilon \sim N(0, I),

(:math:`B` assigns each tick to its cell), with covariance :math:`\Sigma = I + B V B^\top + v_g \mathbf 1
\mathbf 1^\top`. Against the alternative "every score shifted by :math:`\delta` since the start" (the
same nuisance model), the ratio of the two marginal likelihoods is, in closed form (Woodbury, then
Sherman-Morrison),

.. math:: \log\Lambda_t(\delta) = \frac{\delta\,U_t - \delta^2 A_t / 2}{1 + v_g A_t}, \qquad
          U_t = \sum_c \frac{S_c}{1 + N_c v_c}, \quad A_t = \sum_c \frac{N_c}{1 + N_c v_c},

with :math:`S_c, N_c` the sum and count of the scores seen so far in cell :math:`c`.

**Validity: approximate, not proved.** If the scores were exactly the Gaussian law above,
:math:`\Lambda_t(\delta)` would be the likelihood ratio of two fully specified Gaussian laws of
:math:`y_{1:t}` (given the cell sequence, which the clock fixes), a martingale with mean 1 under the
null's marginal law (over the draw of the baseline and the canary's day, like ``learned``'s centring),
and Ville would bound the crossing of ``2/alpha_e``. **The actual scores are not that law, even when
the innovations are exactly Gaussian**: the score is the compiler's clipped innovation
:math:`\mathrm{clip}(z, -C_{lo}, C_{hi})`, recentred by its mean (about 0.0085) and divided by its sd
(about 0.980), so its right tail is :math:`N(0,1)/0.980`, heavier than the unit Gaussian the ratio
assumes. The per-tick factor :math:`E\exp(\delta y - \delta^2/2)` on that score law, computed
exactly (``tests/test_family_a_mixture_factor.py``), is 1.0000, 1.0002, 1.0011, 1.0071, 1.0401 for
:math:`\delta` = 0.1, 0.2, 0.4, 0.8, 1.6 (grid average 1.0097): above 1, so the mixture is **not** a
supermartingale under the model's own null and Ville's bound is not a proof for it. Its false-alarm
rate is **measured** (docs/one-sample.md: 0/2,000 paths on the model's null for family A in either
mode), not guaranteed. It is further exposed to departures that ``band`` survives: an innovation
variance above 1 or autocorrelation left in the scores (variance 1.3: 8/200 one-sample fires at
alpha_A 0.02; lag-1 autocorrelation 0.2: 17/200; ``band`` 0/200; docs/one-sample.md). Two-sample
mode's paired differences (symmetric clip at :math:`\pm C_{pair}`, not rescaled) have per-tick factor
at most 1 for Gaussian innovations of unit variance.

**AR(1) error.** The estimate :math:`\hat\phi` leaves :math:`\beta r_i` in each innovation
(:math:`r_i` the previous de-seasonalised level in innovation units). It is not integrated (the
regressor moves with the shift and would break monotonicity): each innovation first subtracts the
band's edge :math:`a_i = k\,se_\phi \min(|r_i|, R)`
(:func:`~deploysignal.detectors._nuisance_band.nuisance_band`, the same event, probability at least
:math:`1 - 0.2\alpha_A`), then is clipped as the compiler clips:
:math:`y_i = \mathrm{clip}(s z_i - \hat\sigma_\psi a_i, -C_{lo}, C_{hi})/\hat\sigma_\psi - \hat m_c`. On
that event :math:`s z_i - \hat\sigma_\psi a_i` lies below the innovation with the AR error removed, so
:math:`y_i` lies below that innovation's clipped score; and :math:`\log\Lambda_t` is nondecreasing in
every :math:`y_j` (below), so :math:`\Lambda_t` is dominated by the mixture of the scores without AR
error (whose validity is the approximate one above). (Subtracting the edge after the clip would not be
monotone: a saturated score minus an edge that still grows with :math:`|r_i|` falls as the shift grows.)

**Monotone in harm, by construction, for one-sided signals.** :math:`\log\Lambda_t(\delta)` is linear in the scores with
coefficient :math:`\delta / ((1 + N_c v_c)(1 + v_g A_t)) \ge 0` on every score of cell :math:`c` (the
denominators count ticks, not values), so for every :math:`\delta > 0` it is nondecreasing in each
:math:`y_j`; each :math:`y_j` is a nondecreasing function of a harmful shift of its signal wherever
the band's condition ``k se_phi <= min_g (1 - phi^g)/(g |phi|^(g-1))`` holds (``NuisanceBand.monotone``;
the clip only saturates). Every score is used, spikes included (a rule that dropped large values
would make a larger shift count less). A larger harmful shift of a one-sided signal therefore never
lowers :math:`\bar\Lambda_t` at any tick. A two-sided signal (direction ``both``) has two channels of
opposite sign: a shift up raises one and lowers the other, so for it the claim does not hold (the
property tests exclude those signals). What the mixture pays instead of absorbing: a shift :math:`\delta`
present in one cell for :math:`n` ticks earns at most about :math:`\delta^2 / (2 v_c)` nats there
(the price of "the cell's centre was off by :math:`\delta`" under its prior), renewed in every new
cell, and :math:`\delta^2/(2 v_g)` in all through the global offset: a **ceiling** on the evidence
for a persistent shift of one channel, however long it lasts. With ``k`` signals the mixture needs
about :math:`\log(2/\alpha_e) + \log(5k)` nats from one one-sided signal's channel (8.9 with 12
signals at alpha_A 0.02), so it never detects a persistent shift below about :math:`4.2\sqrt{v_g}` score sd; ``v_g``
includes ``drift_allowance`` squared, so a drift allowance of 0.5 puts that floor near 2.1 sd.

Two-sample mode has no level nuisance (:math:`v_c = v_g = 0`): the scores are the paired differences
:math:`\mathrm{clip}(s(z - z^{ctl})/\sqrt2 - a_i, \pm C_{pair})` (the AR band's edge subtracted before the
clip), and :math:`\Lambda_t` is the
Gaussian mixture SPRT of a shift in their mean (Robbins 1970), Gaussian with unit variance assumed.

References
----------
Robbins (1970) statistical methods related to the law of the iterated logarithm; Johari, Pekelis,
Walsh (2017) always-valid inference; Woodbury (1950); Sherman & Morrison (1950); Ville (1939).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["DELTAS", "mixture_log_lr", "mixture_step"]

#: Shifts (score sd) the mixture's alternative averages over, uniform weights: a factor of 2 apart, so
#: the best grid point is within a factor of sqrt(2) of any shift in [0.1, 1.6] and keeps at least 83%
#: of that shift's evidence; the grid costs log(5) nats.
DELTAS = np.array([0.1, 0.2, 0.4, 0.8, 1.6])

_OPTS = {"cache": True, "nogil": False, "error_model": "numpy"}


@njit(**_OPTS)
def mixture_step(
    z, control_z, lag, control_lag, has_lag, two_sample, cell, sig, sign, c_lo, c_hi, c_pair, sd, center, bias_var, inv_g2,
    k_phi, r_cap, deltas, logw, Sm, Nm, Um, Am, out_lw,
):  # pragma: no cover - compiled
    """Advance ``P`` streams by one tick: add each channel's score ``y`` to its cell's sums (``Sm``, ``Nm``
    (P, cells, m); ``Um``, ``Am`` (P, m)), then write the log of the mixture over ``deltas`` and channels
    (weights ``logw`` (m,), uniform over ``deltas``) to ``out_lw`` (P,). NaN scores are skipped."""
    P = z.shape[0]
    m = sig.size
    D = deltas.size
    rt2 = math.sqrt(2.0)
    log_d = math.log(D)
    for p in range(P):
        top = -np.inf
        terms = np.empty(m * D)
        for i in range(m):
            s, sg = sig[i], sign[i]
            # the AR band's edge is subtracted before the clip: a clipped score minus an edge that still
            # grows with |r| would fall as a saturated shift grows
            if two_sample:
                r = sg * (lag[p, s] - control_lag[p, s]) / rt2 if has_lag else 0.0
                ar = min(abs(r), r_cap[p, i]) if has_lag else r_cap[p, i]
                y = min(max(sg * (z[p, s] - control_z[p, s]) / rt2 - k_phi[p, i] * ar, -c_pair), c_pair)
                v = 0.0
            else:
                r = sg * lag[p, s] / sd[p, i] if has_lag else 0.0
                ar = min(abs(r), r_cap[p, i]) if has_lag else r_cap[p, i]
                y = min(max(sg * z[p, s] - k_phi[p, i] * ar * sd[p, i], -c_lo), c_hi) / sd[p, i] - center[p, cell, i]
                v = bias_var[p, cell, i]
            if not math.isnan(y):
                old_u = Sm[p, cell, i] / (1.0 + Nm[p, cell, i] * v)
                old_a = Nm[p, cell, i] / (1.0 + Nm[p, cell, i] * v)
                Sm[p, cell, i] += y
                Nm[p, cell, i] += 1.0
                Um[p, i] += Sm[p, cell, i] / (1.0 + Nm[p, cell, i] * v) - old_u
                Am[p, i] += Nm[p, cell, i] / (1.0 + Nm[p, cell, i] * v) - old_a
            vg = 0.0 if two_sample or math.isinf(inv_g2[p, i]) else 1.0 / inv_g2[p, i]
            den = 1.0 + vg * Am[p, i]
            for d in range(D):
                t = logw[i] - log_d + (deltas[d] * Um[p, i] - 0.5 * deltas[d] * deltas[d] * Am[p, i]) / den
                terms[i * D + d] = t
                top = max(top, t)
        tot = 0.0
        for j in range(m * D):
            tot += math.exp(terms[j] - top)
        out_lw[p] = top + math.log(tot)


def mixture_log_lr(Um: np.ndarray, Am: np.ndarray, inv_g2: np.ndarray, two_sample: bool) -> np.ndarray:
    """Per channel (P, m): the log of the mixture over ``DELTAS`` (uniform weights) of
    :math:`\\log\\Lambda(\\delta)`, from the sums the kernel keeps (for explaining a fire)."""
    vg = np.zeros_like(Am) if two_sample else np.where(np.isinf(inv_g2), 0.0, 1.0 / np.where(np.isinf(inv_g2), 1.0, inv_g2))
    den = (1.0 + vg * Am)[..., None]
    t = (DELTAS * Um[..., None] - 0.5 * DELTAS**2 * Am[..., None]) / den
    return np.logaddexp.reduce(t, axis=-1) - math.log(DELTAS.size)
