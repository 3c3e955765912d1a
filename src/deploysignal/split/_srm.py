"""Sample-ratio mismatch: is the canary's share of units the configured one?"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numba import njit

from ._data import SplitData
from ._protocol import FamilyEvidence, FamilyStep, LayoutWatch, StateSlot

__all__ = ["SampleRatio", "srm_run"]

#: odds-ratio alternatives (each side): 1.01 ... 4
_ODDS = np.geomspace(1.01, 4.0, 16)


@njit(cache=True)
def srm_run(acc: np.ndarray, la: np.ndarray, lb: np.ndarray, nc: np.ndarray, n: np.ndarray, out: np.ndarray) -> None:
    G = la.shape[0]
    for t in range(nc.shape[0]):
        acc[0] += nc[t]
        acc[1] += n[t] - nc[t]
        m = -np.inf
        for g in range(G):
            v = acc[0] * la[g] + acc[1] * lb[g]
            if v > m:
                m = v
        s = 0.0
        for g in range(G):
            s += math.exp(acc[0] * la[g] + acc[1] * lb[g] - m)
        out[t] = m + math.log(s) - math.log(G)


class SampleRatio(LayoutWatch):
    """Sample-ratio-mismatch e-process: a two-sided binomial mixture on the canary's unit counts.

    Under "each unit is canary independently with the configured probability ``p``", the canary count
    of tick ``t`` is Binomial(``N_t``, ``p``) given ``N_t``; for an odds ratio ``r`` with
    ``pi_r = p r / (p r + 1 - p)``

    .. math::

        E_t = \\frac{1}{G}\\sum_{g} \\prod_{s \\le t}
              \\Bigl(\\frac{\\pi_{r_g}}{p}\\Bigr)^{n_{c,s}} \\Bigl(\\frac{1 - \\pi_{r_g}}{1 - p}\\Bigr)^{N_s - n_{c,s}}

    over 32 fixed odds ratios (1.01 to 4 and their inverses) is a test martingale:
    ``P(sup_t E_t >= 1/alpha) <= alpha`` (Ville). Firing means the split is not the configured one
    (a router bug, or a canary that loses units): the metrics' tests, which condition on the observed
    counts, may then compare different populations, so the gate never proceeds after it (role ``void``).
    Assumption of the bound: units are routed independently with the configured probability; it says
    nothing about which units (a router that is right on average but selects units is not caught).

    References
    ----------
    Ville, J. (1939). Etude critique de la notion de collectif.
    Lindon, M. & Malek, A. (2022). Anytime-valid inference for multinomial count data. NeurIPS.

    Examples
    --------
    >>> srm = SampleRatio(0.1, alpha=0.001)
    >>> d = SplitData(np.arange(5.0), np.array([70, 75, 72, 70, 74]), np.full(5, 1000), {})
    >>> bool(srm.step(d).fired.any()), srm.explain()
    (True, 'sample ratio: canary share 0.0722 of 5000 units, configured 0.1: mismatch (log e-value 20.47 >= 6.91)')
    """

    role: Literal["rollback", "void"] = "void"
    _LAYOUT = frozenset({"_la", "_lb", "threshold"})
    name = "sample_ratio"

    def __init__(self, share: float, *, alpha: float) -> None:
        self.share = float(share)
        self.alpha = float(alpha)
        self.threshold = math.log(1.0 / self.alpha)
        r = np.concatenate([_ODDS, 1.0 / _ODDS])
        pi = self.share * r / (self.share * r + 1.0 - self.share)
        self._la = np.log(pi / self.share)
        self._lb = np.log((1.0 - pi) / (1.0 - self.share))
        self._acc = np.zeros(2, dtype=np.int64)
        self._fv = np.zeros(2)  # the log e-value after the last tick, its running maximum
        self._cnt = np.array([0, 0, -1], dtype=np.int64)  # ticks, (unused), first firing tick (-1: none)

    def bind_state(self, acc: np.ndarray, fv: np.ndarray, cnt: np.ndarray) -> None:
        """Keep the state in the given arrays (views into a gate's contiguous state, see
        :class:`~deploysignal.split._step.TickStep`): the current state is copied in first."""
        acc[...], fv[...], cnt[...] = self._acc, self._fv, self._cnt
        self._acc, self._fv, self._cnt = acc, fv, cnt

    _last = StateSlot("_fv", 0, "float")
    _peak = StateSlot("_fv", 1, "float")
    _ticks = StateSlot("_cnt", 0)
    _fired_at = StateSlot("_cnt", 2, "tick")

    def step(self, data: SplitData) -> FamilyStep:
        self._changing()
        T = data.n_ticks
        out = np.empty(T)
        srm_run(self._acc, self._la, self._lb, np.asarray(data.canary_units, dtype=np.int64), np.asarray(data.units, dtype=np.int64), out)
        fired = out >= self.threshold
        if T:
            self._last = float(out[-1])
            self._peak = max(self._peak, float(out.max()))
        if self._fired_at is None and fired.any():
            self._fired_at = self._ticks + int(np.argmax(fired)) + 1
        self._ticks += T
        after = np.maximum.accumulate(fired) | (self._fired_at is not None and self._fired_at <= self._ticks - T)
        return FamilyStep(fired, ~after, np.asarray(data.units) > 0, np.zeros(T, dtype=bool))

    def evidence(self) -> FamilyEvidence:
        return FamilyEvidence(self.name, self.role, self._last, self._peak, self.threshold, self.alpha, self._fired_at is not None,
                              self.explain(), {"canary_units": int(self._acc[0]), "units": int(self._acc.sum()), "configured_share": self.share})

    def explain(self) -> str:
        n = int(self._acc.sum())
        if n == 0:
            return "sample ratio: no units yet"
        obs = self._acc[0] / n
        if self._fired_at is not None:
            return (f"sample ratio: canary share {obs:.4f} of {n} units, configured {self.share:g}: mismatch "
                    f"(log e-value {self._peak:.2f} >= {self.threshold:.2f})")
        return f"sample ratio: canary share {obs:.4f} of {n} units, configured {self.share:g}: consistent"

    def state(self) -> dict[str, Any]:
        return {"acc": self._acc.tolist(), "last": self._last, "peak": self._peak, "fired_at": self._fired_at, "ticks": self._ticks}

    def load_state(self, st: dict[str, Any]) -> None:
        self._changing()
        self._acc[...] = np.array(st["acc"], dtype=np.int64)  # in place: the arrays may be views into a gate's state
        self._last, self._peak, self._fired_at, self._ticks = float(st["last"]), float(st["peak"]), st["fired_at"], int(st["ticks"])
