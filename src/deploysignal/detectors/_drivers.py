r"""Which signals a fired family names as its *drivers* (the ``drivers`` field of its audit records).

Rule 1 (up to 0.4.x, kept to replay the audit logs written with it) named family A's three channels
with the largest evidence and family B's three slowbleed signals with the largest EWMA, whether or not
they had changed: a canary whose p99 latency alone stepped up was reported as "driven by
p99_latency_ms, eval_score, downstream_error_rate".

Rule 2 (:data:`DRIVERS_RULE`, the default of new analyses) names only signals whose own evidence
supports the verdict:

- **Family A**: a channel is a driver when its own e-value exceeds 1 (its bets on a harmful shift
  have won: :math:`\log E_i > 0`) *and* its weighted evidence :math:`\pi_i E_i` is at least
  :data:`SHARE` of the largest channel's, at most three, largest first, each signal named once. An
  unchanged channel holds about its stake (:math:`\pi_i E_i \lesssim \pi_i`) while the family's
  wealth is at least :math:`1/\alpha_A`, so it is never named by the second condition alone unless
  the evidence is spread thin; the first excludes it outright.
- **Family B**: a slowbleed signal is a driver when its EWMA lies beyond ``slowbleed_threshold`` in
  its harmful direction (either direction for two-sided signals): exactly the signals the rule counts
  as drifting, at most three, largest first. A fire of the SLO checks alone names none (its reason
  says which check failed).

The rule only chooses names for the explanation: evidence, verdicts and their guarantees do not depend
on it. Which rule an analysis uses is recorded in its settings (``drivers_rule``; absent = 1), so an
audit log replays with the rule it was written with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DRIVERS_RULE", "SHARE", "supported_drivers"]

#: the rule new analyses use (1 = before issue 25: the largest three, changed or not)
DRIVERS_RULE = 2
#: a driver's weighted evidence is at least this share of the largest channel's
SHARE = 0.25


def supported_drivers(names: Sequence[str], weighted: np.ndarray, own: np.ndarray, *, share: float = SHARE, most: int = 3) -> tuple[str, ...]:
    """Names of the channels with positive own evidence and at least ``share`` of the top weighted evidence.

    Parameters
    ----------
    names : the signal of each channel (a signal may have several channels: named once).
    weighted : log of each channel's weighted evidence (its share of the family's wealth, up to a constant).
    own : each channel's own log e-value (> 0: its evidence points to harm).
    share, most : the share of the largest weighted evidence a driver needs, and how many are named.

    Examples
    --------
    >>> supported_drivers(["p99", "errors", "cost"], np.array([5.0, -2.0, 4.2]), np.array([7.0, -0.1, 6.0]))
    ('p99', 'cost')
    >>> supported_drivers(["p99", "errors"], np.array([5.0, 4.9]), np.array([7.0, -0.5]))
    ('p99',)
    """
    weighted, own = np.asarray(weighted, dtype=float), np.asarray(own, dtype=float)
    if weighted.size == 0:
        return ()
    top = float(np.max(weighted))
    floor = top + math.log(share)
    out: list[str] = []
    for i in np.argsort(-weighted, kind="stable"):
        if len(out) == most or not weighted[i] >= floor:
            break
        if own[i] > 0.0 and names[i] not in out:
            out.append(names[i])
    return tuple(out)
