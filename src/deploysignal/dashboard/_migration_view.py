"""What the dashboard's migration page draws, from ``deploysignal migrate run --json`` output.

The run file holds, after every scored pair, the phase the protocol is in and each quality dimension's
log-evidence: the non-inferiority test's (promotion out of shadow needs all of them, Holm) and the harm
test's (rollback), each as current log-wealth and as its running maximum (``-log`` of the anytime-valid
p-value Holm tests), the change detector's statistic and the error-budget test's log-wealth, and the
levels the protocol decides at. The view lines these up by pair for the phase timeline and the
per-dimension plots, with the decision levels on the log scale (:func:`_levels`); nothing else is
recomputed. A file written before the running maxima were recorded is drawn as it is, and the page says
that what it shows is not what the protocol decides on. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import math
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
    extra = [f for f in _DECIDED_ON if trace and all(isinstance(e.get(f), list) and len(e[f]) == len(dims) for e in trace)]
    for k, e in enumerate(trace, start=1):
        if not all(_number_or_none(x) for f in extra for x in e[f]):
            raise InputError(f"{name}: trace entry {k}: {', '.join(extra)} must hold numbers (or null)", row=k, column="trace")
    budget = trace and all(isinstance(e.get("error_budget"), list) and len(e["error_budget"]) == 1 and _number_or_none(e["error_budget"][0]) for e in trace)
    levels = run.get("levels") if isinstance(run.get("levels"), dict) else {}
    if not all(_number_or_none(v) for v in levels.values()):
        raise InputError(f"{name}: 'levels' must hold numbers", column="levels")
    phases: list[dict[str, Any]] = []
    for e in trace:
        if not phases or phases[-1]["phase"] != e["phase"]:
            phases.append({"pair": e["pair"], "phase": e["phase"]})
    return {
        "view_version": 1, "kind": "migration", "name": name,
        **{k: run.get(k) for k in ("final_phase", "rollback_reason", "queries", "pairs", "drops", "strategy", "margins")},
        "pairs_axis": [e["pair"] for e in trace], "phase_series": [e["phase"] for e in trace], "phases": phases,
        "dimensions": [{"name": d, **{f: [e[f][j] for e in trace] for f in ("non_inferiority", "harm", *extra)}} for j, d in enumerate(dims)],
        "error_budget": [e["error_budget"][0] for e in trace] if budget else None,
        "levels": _levels(levels, len(dims)),
        "notes": _notes(extra, levels),
    }


#: The per-dimension series the protocol decides on (``MigrationProtocol.dimension_evidence``), in run files since 0.5.
_DECIDED_ON = ("non_inferiority_max", "harm_max", "detector")


def _levels(levels: dict[str, Any], d: int) -> dict[str, float]:
    """The decision levels on the log scale of the plotted series: promotion by Holm needs every
    dimension's ``-log p`` (running-max log-wealth) past ``log(d/alpha)`` for the strongest and
    ``log(1/alpha)`` for the weakest (step-down levels between); a harm rollback needs one past
    ``log(d/alpha_harm)`` (Holm's first step); the detector and the error budget at their own levels."""
    out: dict[str, float] = {}
    if levels.get("promote_alpha"):
        a = float(levels["promote_alpha"])
        out["promote_first"], out["promote_last"] = math.log(d / a), math.log(1 / a)
    if levels.get("harm_alpha"):
        out["harm"] = math.log(d / float(levels["harm_alpha"]))
    for k in ("detector_log", "error_budget_log"):
        if levels.get(k) is not None:
            out[k] = float(levels[k])
    return out


def _notes(extra: list[str], levels: dict[str, Any]) -> list[str]:
    if "non_inferiority_max" in extra and levels:
        return ["per scored pair and dimension, what the protocol decides on: the running maximum of each test's log-wealth"
                " (-log of its anytime-valid p-value) against Holm's levels (promotion out of shadow: every dimension's"
                " non-inferiority past its step-down level, between log(d/alpha) and log(1/alpha); rollback: one harm test"
                " past log(d/alpha_harm)), the change detector's log statistic against its threshold, and the error-budget"
                " test of the progressive steps against its level; phases as the protocol reported them after each pair"]
    return ["this run file holds each test's current log-wealth only (written before 0.5): the protocol decides on its running"
            " maximum with Holm's levels, which this file does not hold, so no level is drawn; re-run `deploysignal migrate run"
            " --json` for the decision view; phases as the protocol reported them after each pair"]
