r"""Which signals a fired family names as its *drivers* (the ``drivers`` field of its audit records).

Rule 1 (up to 0.4.x, kept to replay the audit logs written with it) named family A's three channels
with the largest evidence and family B's three slowbleed signals with the largest EWMA, whether or not
they had changed: a canary whose p99 latency alone stepped up was reported as "driven by
p99_latency_ms, eval_score, downstream_error_rate".

Rule 2 (:data:`DRIVERS_RULE`, the default of new analyses) names the signals whose *own* evidence is
strong on its own in the harmful direction, judged channel by channel, never relative to the other
channels (a slow bleed that moves five signals names the five, not only the strongest):

- **Family A**: a channel is a driver when its own e-value at the fire tick is at least
  :data:`LEVEL` (20). Its own e-value is its mSPRT wealth over its own prior weight when the mSPRT
  fired; when the e-SR detector fired, its Shiryaev-Roberts statistic over the statistic's null mean,
  the number of ticks since the start (the recursion adds one on every tick, observed or not); under
  ``a_nuisance="mixture"``, its mixture likelihood ratio. Drivers are ordered by their own evidence,
  largest first, each signal named once, at most :data:`MOST`; the fire's reason says how many more
  qualified. **What this bounds**: an unchanged channel's own mSPRT wealth (and its mixture
  likelihood ratio) is a nonnegative supermartingale of mean at most one under the family's null
  model, so by Ville's inequality it reaches 20 at any tick, the fire tick included, with probability
  at most 1/20; with ``m`` unchanged channels at most ``m/20`` are named in expectation. The e-SR's
  ratio has mean at most one at a fixed tick only (the fire tick is chosen by the data), so there the
  level is a convention, not a bound. These hold under family A's model (:class:`FamilyA`: the
  baseline's cell centres, AR(1) errors and day-level nuisance); where the canary breaks it an
  unchanged channel can be named more often, exactly as it can move the family's evidence. No
  channel may reach the level (evidence spread thin over many channels): then none is named and
  the reason says "no single channel".
- **Family B**: a slowbleed fire names the signals whose EWMA lay beyond ``slowbleed_threshold`` in
  their harmful direction (either direction for two-sided signals) at the tick it fired: exactly the
  signals its reason lists as drifting, largest first, at most :data:`MOST`. They are frozen at the
  fire, as the reason is, and kept while the fire stands (fires are sticky). A fire of the static SLO
  checks names none (its reason says which check failed); if the slowbleed rule fires later, its
  drivers are named from then on.

The rule only chooses names for the explanation: evidence, verdicts and their guarantees do not depend
on it. Which rule an analysis uses is recorded in its settings (``drivers_rule``; absent = 1), so an
audit log replays with the rule it was written with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DRIVERS_RULE", "LEVEL", "MOST", "supported_drivers"]

#: the rule new analyses use (1 = before issue 25: the largest three, changed or not)
DRIVERS_RULE = 2
#: a driver's own e-value is at least this (an unchanged channel's reaches it with probability <= 1/20)
LEVEL = 20.0
#: at most this many drivers are named (the reason counts the others)
MOST = 5


def supported_drivers(names: Sequence[str], own: np.ndarray, *, level: float = LEVEL, most: int = MOST) -> tuple[tuple[str, ...], int]:
    """The signals whose channels' own e-value reaches ``level``, by own evidence, and how many more did.

    Parameters
    ----------
    names : the signal of each channel (a signal may have several channels: named once, at its largest).
    own : each channel's own log e-value (NaN: no evidence).
    level, most : the e-value a driver's own evidence reaches, and how many are named.

    Returns
    -------
    (drivers, more) : at most ``most`` signal names, largest own evidence first, and the number of
        further signals that reached ``level``.

    Examples
    --------
    >>> supported_drivers(["p99", "errors", "cost"], np.array([7.0, -0.1, 4.45]))
    (('p99', 'cost'), 0)
    >>> supported_drivers(["p99", "errors"], np.array([7.0, 2.9]))
    (('p99',), 0)
    >>> supported_drivers(["a", "b", "c"], np.array([5.0, 4.0, 3.5]), most=2)
    (('a', 'b'), 1)
    """
    own = np.asarray(own, dtype=float)
    floor = math.log(level)
    out: list[str] = []
    for i in np.argsort(-np.nan_to_num(own, nan=-np.inf), kind="stable"):
        if not own[i] >= floor:
            break
        if names[i] not in out:
            out.append(names[i])
    return tuple(out[:most]), max(len(out) - most, 0)
