"""Information limits of the split evaluation: the most powerful test that could exist for an event effect.

Design
------
For an event metric whose canary probability is multiplied by ``r`` (the ``errors_x*`` and ``refusals_6pct``
effects of :data:`~deploysignal.simulate._split.SPLIT_EFFECTS`), consider an *oracle* that knows everything
no real test knows: the stable probability ``p0`` exactly, the effect ``r`` exactly, and sees ``n``
independent canary requests at the window's end. On data where the effect changes only the canary's
events of that metric (everything else, the stable arm and the arm labels having the same law under both
hypotheses), the likelihood ratio depends on the canary's event count alone, and the best level-``alpha``
test of ``p = p0`` against ``p = r p0`` is the Neyman-Pearson test, the randomised one-sided binomial test
(Lehmann & Romano, *Testing Statistical Hypotheses*, 3rd ed., Theorem 3.2.1). Its power is therefore an
upper bound on the probability that **any procedure whose whole-gate false-rollback probability is at most
``alpha``** rolls back by the window's end on such data, sequential or not (a rollback by the end is a test
of the data up to the end). Methods that are not level-``alpha`` (the evaluation's two-sample gate on
aggregates at a 5% share, for one) can exceed it: their excess is false alarms, not power.

What the figure covers, exactly:

* ``n`` is the expected number of canary requests in the window (``volume x share x ticks``); the generated
  worlds draw it from a Poisson law around that value, and add session frailty to the error probability
  (an oracle that knows every request's probability gains nothing to first order: the information about a
  log-rate ratio is the expected event count, which the frailty leaves unchanged). So the figure is exact
  for independent requests and an approximation on the generated iid world
  (tests/evaluation/test_split_oracle.py checks it against the oracle's test run on that world's logs).
* Worlds whose event law for this metric is the iid world's (``iid`` and ``heavy_tails``, whose heavy
  tails touch latency and the eval score only) get the iid figure; ``low_counts`` fixes 0.5 error events
  per tick over both arms at every volume and gets its own figure (for the error effects only: refusals
  keep their base there); every other world is granted power 1.

The pooled detection rate of a power cell averages its runs over the null worlds (replicate ``r`` on world
``r mod W``). With ``m_w`` runs on world ``w`` and the powers above, no level-``alpha`` method can exceed
``sum_w m_w q_w / sum_w m_w`` on that cell in expectation.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy import stats

from .._exceptions import InputError
from ..simulate._split import _BASE_ERR, _BASE_REF

__all__ = ["EVENT_EFFECTS", "OracleLimit", "known_rate_power", "oracle_limit", "ticks_for_power"]

#: Event effects with a constant rate ratio: effect -> (metric, stable probability, ratio).
EVENT_EFFECTS: dict[str, tuple[str, float, float]] = {
    "errors_x1.2": ("errors", _BASE_ERR, 1.2),
    "errors_x1.5": ("errors", _BASE_ERR, 1.5),
    "errors_x2": ("errors", _BASE_ERR, 2.0),
    # the simulator draws a refusal only on requests without an error
    "refusals_6pct": ("refusals", _BASE_REF * (1.0 - _BASE_ERR), 1.06),
}


def known_rate_power(n: int, p0: float, p1: float, alpha: float) -> float:
    """Power of the randomised one-sided binomial test of ``p0`` against ``p1 > p0`` with ``n`` trials.

    The uniformly most powerful level-``alpha`` test (Neyman-Pearson): reject when ``X > k``, and with
    probability ``gamma`` when ``X = k``, where ``P0(X > k) + gamma P0(X = k) = alpha``.

    Examples
    --------
    >>> round(known_rate_power(100, 0.1, 0.1, 0.05), 12)  # no effect: power equals the level
    0.05
    >>> known_rate_power(1000, 0.01, 0.03, 0.05) > 0.99
    True
    """
    if n < 1 or not 0.0 < p0 < p1 < 1.0 or not 0.0 < alpha < 1.0:
        if n >= 1 and 0.0 < p0 == p1 < 1.0 and 0.0 < alpha < 1.0:
            return alpha
        raise InputError(f"need n >= 1, 0 < p0 <= p1 < 1 and alpha in (0, 1); got n={n}, p0={p0}, p1={p1}, alpha={alpha}")
    k = int(stats.binom.isf(alpha, n, p0))  # smallest k with P0(X > k) <= alpha
    tail0 = float(stats.binom.sf(k, n, p0))
    atk0 = float(stats.binom.pmf(k, n, p0))
    gamma = 0.0 if atk0 == 0.0 else min(1.0, max(0.0, (alpha - tail0) / atk0))
    return float(stats.binom.sf(k, n, p1)) + gamma * float(stats.binom.pmf(k, n, p1))


@dataclass(frozen=True)
class OracleLimit:
    """The oracle's power for one event effect at a volume, share and window (see the module docstring)."""

    effect: str
    volume: float
    share: float
    ticks: int
    alpha: float
    n_canary: int
    power_iid: float  # None-free: the iid figure is reported even when no run used the iid world
    power_low_counts: float | None  # None: the metric's law does not change there, or no run on that world
    pooled_bound: float
    runs: int
    ticks_for_99: int | None

    def as_dict(self) -> dict[str, object]:
        return {
            "effect": self.effect, "volume": self.volume, "share": self.share, "ticks": self.ticks, "alpha": self.alpha,
            "n_canary": self.n_canary, "power_iid": self.power_iid, "power_low_counts": self.power_low_counts,
            "pooled_bound": self.pooled_bound, "runs": self.runs, "ticks_for_99": self.ticks_for_99,
        }


def ticks_for_power(p0: float, ratio: float, per_tick: float, alpha: float, target: float = 0.99, limit: int = 1_000_000) -> int | None:
    """Fewest ticks at which the oracle reaches ``target`` power (``None`` beyond ``limit``).

    Examples
    --------
    >>> ticks_for_power(0.005, 2.0, 250.0, 0.05)
    19
    """
    def ok(t: int) -> bool:
        return known_rate_power(max(1, round(per_tick * t)), p0, p0 * ratio, alpha) >= target

    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = hi // 2
    while hi - lo > 1:  # power grows with n (the family has a monotone likelihood ratio)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


#: worlds whose error and refusal laws are the iid world's (heavy tails touch latency and eval score only)
_IID_LIKE = ("iid", "heavy_tails")


def oracle_limit(effect: str, volume: float, share: float, ticks: int, alpha: float, worlds: tuple[str, ...], runs: int) -> OracleLimit:
    """Oracle power and the bound on a pooled power cell of ``runs`` runs cycling through ``worlds``
    (replicate ``r`` on ``worlds[r % len(worlds)]``; module docstring).

    Examples
    --------
    >>> lim = oracle_limit("errors_x1.2", 5000, 0.05, 60, 0.05, ("iid", "low_counts", "bursts"), 3)
    >>> lim.n_canary, round(lim.power_iid, 2), round(lim.pooled_bound, 3)
    (15000, 0.51, 0.533)
    >>> oracle_limit("errors_x1.2", 5000, 0.05, 60, 0.05, ("iid", "low_counts", "bursts"), 1).power_low_counts is None
    True
    """
    if effect not in EVENT_EFFECTS:
        raise InputError(f"no oracle for effect {effect!r}; event effects: {', '.join(EVENT_EFFECTS)}")
    if runs < 1 or not worlds:
        raise InputError("the bound needs at least one run and one world")
    metric, p0, ratio = EVENT_EFFECTS[effect]
    per_tick = volume * share
    n = max(1, round(per_tick * ticks))
    q_iid = known_rate_power(n, p0, p0 * ratio, alpha)
    counts = {w: 0 for w in worlds}
    for r in range(runs):
        counts[worlds[r % len(worlds)]] += 1
    q_low = None
    if metric == "errors" and counts.get("low_counts", 0):
        p_low = min(0.5 / volume, 0.5)
        q_low = known_rate_power(n, p_low, min(p_low * ratio, 1.0 - 1e-12), alpha)
    power = {w: q_iid if w in _IID_LIKE else (q_low if w == "low_counts" and q_low is not None else 1.0) for w in worlds}
    bound = sum(counts[w] * power[w] for w in worlds) / runs
    return OracleLimit(effect, float(volume), float(share), int(ticks), float(alpha), n, q_iid, q_low, bound, runs,
                       ticks_for_power(p0, ratio, per_tick, alpha))
