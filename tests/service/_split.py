"""Seeded aggregated split ticks for the service tests (the format of ``SplitTick.from_dict``)."""

from __future__ import annotations

from typing import Any

import numpy as np

T0 = 1.7e9  # epoch seconds, in the past (the service rejects ticks from the future)
METRICS = {"errors": {"kind": "event", "direction": "up", "tolerance": 0.5},
           "latency_ms": {"kind": "continuous", "direction": "up", "edges": [100, 250, 500], "tolerance": 0.5}}
LAT_P = np.array([0.6, 0.25, 0.1, 0.05])  # stable latency bucket probabilities on METRICS' edges


def split_ticks(seed: int, n: int, *, start: int = 0, error_ratio: float = 1.0, units: int = 400, share: float = 0.5,
                p_error: float = 0.02) -> list[dict[str, Any]]:
    """``n`` ticks from tick ``start``: units split at random (canary share ``share``); the canary's error
    probability is ``error_ratio`` times the stable one's; latency buckets identical in law."""
    rng = np.random.default_rng([seed, start])
    out = []
    for i in range(start, start + n):
        cu = int(rng.binomial(units, share))
        arms = {}
        for arm, u, p in (("canary", cu, min(1.0, p_error * error_ratio)), ("stable", units - cu, p_error)):
            arms[arm] = {"units": u, "events": {"errors": int(rng.binomial(u, p))},
                         "buckets": {"latency_ms": rng.multinomial(u, LAT_P).tolist()}}
        out.append({"timestamp": T0 + 60.0 * i, "arms": arms})
    return out
