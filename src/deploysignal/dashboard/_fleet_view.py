"""What the dashboard's fleet page draws, from the observations ``deploysignal fleet observe --jsonl`` prints.

One :class:`~deploysignal.fleet.FleetObservation` per tick: the view holds the fleet-level log-evidence
per tick, the number of flagged shards per tick, a heat map of the topology nodes' log-evidence over the
ticks (the nodes the observer reported in ``top_nodes``), the shards flagged at the end with the tick each
was first flagged, the attributions of the last tick and the shards frozen by cluster events.

Guarantee: every observation is parsed by the observer's own contract model (unknown fields, wrong
types: an error naming the line); nothing is recomputed here, so the page shows exactly what the observer
decided. The observations carry node evidence only for the nodes the observer reported (``top_nodes``),
not per-shard evidence: the heat map shows those nodes, and the page says so. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .._exceptions import InputError
from ._view import _no_constant
from ..fleet import FleetObservation

__all__ = ["fleet_view"]



def fleet_view(lines: Sequence[str], name: str = "fleet") -> dict[str, Any]:
    """The fleet page's data from ``fleet observe --jsonl`` lines (blank lines ignored).

    Raises
    ------
    InputError
        A line that is not a fleet observation (names the line), or no observation at all.

    Examples
    --------
    >>> ln = ('{"tick": 0, "q": 0.05, "flagged": ["g1"], "newly_flagged": ["g1"], "fleet_log_e": 0.1, "fleet_fired": false,'
    ...       ' "top_nodes": [{"level": "rack", "node": "r0", "log_e": 2.5, "members": 8, "flagged": 1}]}')
    >>> v = fleet_view([ln])
    >>> v["flagged_count"], v["heat"]["nodes"], v["heat"]["values"], v["flagged"]
    ([1], ['rack r0'], [[2.5]], [{'shard': 'g1', 'first_tick': 0}])
    """
    obs: list[FleetObservation] = []
    for n, ln in enumerate(lines, start=1):
        if not ln.strip():
            continue
        try:
            json.loads(ln, parse_constant=_no_constant)
            obs.append(FleetObservation.model_validate_json(ln))
        except ValueError as exc:
            if not isinstance(exc, ValidationError):
                raise InputError(f"{name}: line {n}: not a fleet observation (fleet observe --jsonl): {exc}", row=n, column="line") from None
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ())) or "line"
            raise InputError(f"{name}: not a fleet observation (fleet observe --jsonl): {loc}: {first['msg']}", row=n, column=loc) from None
    if not obs:
        raise InputError(f"{name}: no fleet observations (expected the output of `deploysignal fleet observe --jsonl`)", column="tick")
    nodes: list[str] = []
    for o in obs:
        for ne in o.top_nodes:
            key = f"{ne.level} {ne.node}"
            if key not in nodes:
                nodes.append(key)
    index = {k: i for i, k in enumerate(nodes)}
    heat: list[list[float | None]] = [[None] * len(obs) for _ in nodes]
    first: dict[str, int] = {}
    for j, o in enumerate(obs):
        for ne in o.top_nodes:
            heat[index[f"{ne.level} {ne.node}"]][j] = float(ne.log_e)
        for s in o.newly_flagged:
            first.setdefault(s, o.tick)
    last = obs[-1]
    return {
        "view_version": 1, "kind": "fleet", "name": name,
        "ticks": [o.tick for o in obs], "q": last.q,
        "fleet_log_e": [float(o.fleet_log_e) for o in obs], "fleet_fired": last.fleet_fired,
        "flagged_count": [len(o.flagged) for o in obs],
        "heat": {"nodes": nodes, "values": heat},
        "flagged": [{"shard": s, "first_tick": first.get(s)} for s in last.flagged],
        "attributions": [a.model_dump(mode="json") for a in last.attributions],
        "frozen": list(last.frozen), "active_events": list(last.active_events),
        "notes": ["node evidence is shown for the topology nodes the observer reported (top_nodes) at each tick; the observations hold no per-shard evidence"],
    }
