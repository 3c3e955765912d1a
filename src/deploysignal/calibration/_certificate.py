"""The certificate a compiled config carries: model-check table, backtest and the decision.

A config is *certified* for one-sample mode when every model check that could run passed, every check
could run, and the rolling-origin backtest on the baseline's own history ran and did not show a
false-rollback rate above alpha (see :mod:`deploysignal.gate` ``backtest``). Otherwise it is
*uncertified*, with the reasons. Certification is a screening result, not a guarantee: it says the
baseline showed none of the departures the checks look for; the gate's error bounds still rest on the
model (docs/one-sample.md). The field is part of the canonical, content-hashed config; configs written
before it existed load as uncertified ("compiled before model checks").
"""

from __future__ import annotations

from typing import Any

__all__ = ["RECOMMENDATION", "certificate", "uncertified"]

#: what an uncertified one-sample gate recommends instead
RECOMMENDATION = ("the one-sample model's false-rollback bound is not backed by this baseline; prefer the randomised-split "
                  "mode (`deploysignal gate --split`) or a live control (`--control`)")


def uncertified(checks: list[dict[str, Any]], reasons: list[str]) -> dict[str, Any]:
    """Certification block of a config that is not (yet) certified: the check table and the reasons."""
    return {"checks": checks, "backtest": None, "certified": False, "reasons": list(reasons), "scope": None}


def certificate(checks: list[dict[str, Any]], backtest: dict[str, Any] | None, scope: dict[str, Any]) -> dict[str, Any]:
    """Decide certification from the check table and the backtest summary.

    Parameters
    ----------
    checks : list of dict
        Rows of :func:`~deploysignal.calibration.model_check`.
    backtest : dict or None
        Summary of the backtest (``windows``, ``rollbacks``, ``flagged``, ``reason``), ``None`` if not run.
    scope : dict
        Gate settings the backtest ran with (``alpha``, ``window``, ``max_extensions``).

    Returns
    -------
    dict
        ``checks, backtest, certified, reasons, scope``; ``reasons`` lists every failed or unrun check
        and the backtest's verdict, in table order.
    """
    reasons = []
    for r in checks:
        if r["passed"] is False:
            reasons.append(f"{r['signal']}: {r['check']} failed ({r['meaning']})")
        elif r["passed"] is None:
            reasons.append(f"{r['signal']}: {r['check']} not checked ({r['meaning']})")
    if backtest is None:
        reasons.append("not backtested")
    elif backtest.get("windows", 0) == 0:
        reasons.append(f"not backtested: {backtest.get('reason', 'no held-out window fits in the baseline')}")
    elif backtest.get("flagged"):
        reasons.append(f"backtest: {backtest['reason']}")
    return {"checks": checks, "backtest": backtest, "certified": not reasons, "reasons": reasons, "scope": dict(scope)}
