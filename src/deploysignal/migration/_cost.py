"""Shadow-fraction cost model: how much traffic to mirror to the challenger.

With shadow fraction ``f`` of ``q`` queries per day, the evaluation sees ``f q`` pairs per day.  A
regression of per-query effect ``delta`` (harm probability excess) is detected by a betting test after
about ``n* = log(1/alpha) / KL`` pairs, where for a bounded score the growth rate of the best fixed bet
is approximately ``KL ~ delta^2 / (2 sigma^2)``; the detection delay in days is ``n* / (f q)``.
During that delay the regression reaches users through the canary/progressive exposure ``e``.

.. math::

    C(f) = c_s f q D + \\pi \\, c_r \\, e \\, q \\, \\delta \\, \\min\\!\\Bigl(D, \\frac{n^*}{f q}\\Bigr)

(shadow compute over the evaluation horizon ``D`` days plus the expected cost of the harmful answers
served before detection, ``pi`` the prior probability that the challenger regresses).  For
``n*/(f q) < D`` the optimum is interior,

.. math::

    f^* = \\sqrt{\\frac{\\pi c_r e \\delta n^*}{c_s q D}}

clipped to ``[f_min, 1]``; the model assumes detection time proportional to ``1/f`` (true of
the betting tests on i.i.d. pairs up to the log factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._exceptions import InputError

__all__ = ["ShadowCostModel"]


@dataclass(frozen=True)
class ShadowCostModel:
    """Total cost of a shadow evaluation as a function of the shadow fraction.

    Parameters
    ----------
    queries_per_day : float
    horizon_days : float
        Evaluation horizon ``D`` (shadow compute is paid for this long).
    shadow_cost_per_query : float
        Compute cost ``c_s`` of one shadowed challenger call.
    regression_prior : float
        Prior probability ``pi`` that the challenger has a regression.
    regression_effect : float
        Per-query harm-probability excess ``delta`` of a regression.
    cost_per_harmful_answer : float
        Cost ``c_r`` of one harmful answer served to a user.
    exposure : float
        Fraction of users seeing the challenger while the regression is undetected.
    alpha : float
        Level of the detecting test.
    sigma : float
        Standard deviation of the paired score (sqrt of the discordance rate for binary scores).

    Examples
    --------
    >>> m = ShadowCostModel(queries_per_day=267, horizon_days=45, shadow_cost_per_query=0.01,
    ...                     regression_prior=0.3, regression_effect=0.05, cost_per_harmful_answer=5.0,
    ...                     exposure=0.25, alpha=0.01, sigma=0.35)
    >>> f = m.optimal_fraction()
    >>> round(f, 3), m.total_cost(f) <= min(m.total_cost(g / 20) for g in range(1, 21)) + 1e-9
    (0.265, True)
    """

    queries_per_day: float
    horizon_days: float
    shadow_cost_per_query: float
    regression_prior: float
    regression_effect: float
    cost_per_harmful_answer: float
    exposure: float = 0.05
    alpha: float = 0.05
    sigma: float = 0.35
    min_fraction: float = 0.01

    def __post_init__(self) -> None:
        for name in ("queries_per_day", "horizon_days", "shadow_cost_per_query", "regression_effect",
                     "cost_per_harmful_answer", "sigma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"{name} must be a positive number, got {v!r}", column=name)
        for name in ("regression_prior", "exposure", "alpha", "min_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 < v < 1.0):
                raise InputError(f"{name} must lie in (0, 1), got {v!r}", column=name)

    @property
    def pairs_to_detect(self) -> float:
        """Approximate pairs a betting test needs: ``log(1/alpha) * 2 sigma^2 / delta^2``."""
        return math.log(1.0 / self.alpha) * 2.0 * self.sigma**2 / self.regression_effect**2

    def detection_days(self, fraction: float) -> float:
        """Days to detect a regression at shadow fraction ``fraction`` (capped at the horizon)."""
        if not 0.0 < fraction <= 1.0:
            raise InputError(f"fraction must lie in (0, 1], got {fraction}", column="fraction")
        return min(self.horizon_days, self.pairs_to_detect / (fraction * self.queries_per_day))

    def total_cost(self, fraction: float) -> float:
        """Shadow compute plus the expected cost of harmful answers before detection."""
        shadow = self.shadow_cost_per_query * fraction * self.queries_per_day * self.horizon_days
        harm = (self.regression_prior * self.cost_per_harmful_answer * self.exposure * self.queries_per_day
                * self.regression_effect * self.detection_days(fraction))
        return shadow + harm

    def optimal_fraction(self) -> float:
        """The cost-minimising fraction in ``[min_fraction, 1]`` (closed form, checked at the ends)."""
        q, d = self.queries_per_day, self.horizon_days
        f = math.sqrt(self.regression_prior * self.cost_per_harmful_answer * self.exposure * self.regression_effect
                      * self.pairs_to_detect / (self.shadow_cost_per_query * q * d))
        cands = [min(1.0, max(self.min_fraction, f)), self.min_fraction, 1.0,
                 min(1.0, max(self.min_fraction, self.pairs_to_detect / (q * d)))]
        return min(cands, key=self.total_cost)
