"""What the dashboard's migration page draws, from ``deploysignal migrate run --json`` output.

The run file holds, after every scored pair, the phase the protocol is in and each quality dimension's
log-evidence: the non-inferiority test's (promotion out of shadow needs all of them, Holm) and the harm
test's (rollback). The view lines these up by pair for the phase timeline and the per-dimension plots;
nothing is recomputed. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from .._exceptions import InputError
from ._view import _no_constant

__all__ = ["migration_view"]



def _number_or_none(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def migration_view(text: str, name: str = "migration") -> dict[str, Any]:
    """The migration page's data from a ``migrate run --json`` file's text.

    Raises
    ------
    InputError
        Not such a file (``NaN``/``Infinity`` included), or a trace entry without the per-dimension
        lists of numbers (names the entry).

    Examples
    --------
    >>> run = {"kind": "migration_run", "final_phase": "rolled_back", "rollback_reason": "harm", "queries": 3, "pairs": 2,
    ...        "dimensions": ["correctness"], "trace": [{"pair": 1, "phase": "shadow", "non_inferiority": [0.1], "harm": [0.2]},
    ...                                              {"pair": 2, "phase": "rolled_back", "non_inferiority": [0.0], "harm": [5.0]}]}
    >>> v = migration_view(json.dumps(run))
    >>> v["phases"], v["dimensions"][0]["harm"]
    ([{'pair': 1, 'phase': 'shadow'}, {'pair': 2, 'phase': 'rolled_back'}], [0.2, 5.0])
    """
    try:
        run = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise InputError(f"{name}: not JSON ({exc})", column="migration") from None
    if not isinstance(run, dict) or run.get("kind") != "migration_run":
        raise InputError(f"{name}: not a migration run (expected `deploysignal migrate run --json` output)", column="kind")
    dims = run.get("dimensions")
    trace = run.get("trace")
    if not isinstance(dims, list) or not isinstance(trace, list):
        raise InputError(f"{name}: a migration run needs 'dimensions' and 'trace' lists", column="trace")
    for k, e in enumerate(trace, start=1):
        ok = isinstance(e, dict) and isinstance(e.get("pair"), int) and isinstance(e.get("phase"), str) and all(
            isinstance(e.get(f), list) and len(e[f]) == len(dims) and all(_number_or_none(x) for x in e[f]) for f in ("non_inferiority", "harm"))
        if not ok:
            raise InputError(f"{name}: trace entry {k} needs pair, phase and one non_inferiority and harm number (or null) per dimension",
                             row=k, column="trace")
    phases: list[dict[str, Any]] = []
    for e in trace:
        if not phases or phases[-1]["phase"] != e["phase"]:
            phases.append({"pair": e["pair"], "phase": e["phase"]})
    return {
        "view_version": 1, "kind": "migration", "name": name,
        **{k: run.get(k) for k in ("final_phase", "rollback_reason", "queries", "pairs", "drops", "strategy", "margins")},
        "pairs_axis": [e["pair"] for e in trace], "phase_series": [e["phase"] for e in trace], "phases": phases,
        "dimensions": [{"name": d, "non_inferiority": [e["non_inferiority"][j] for e in trace], "harm": [e["harm"][j] for e in trace]}
                       for j, d in enumerate(dims)],
        "notes": ["log-evidence per scored pair: the non-inferiority test of each dimension (promotion out of shadow needs all, Holm) "
                  "and its harm test (rollback); phases as the protocol reported them after each pair"],
    }
