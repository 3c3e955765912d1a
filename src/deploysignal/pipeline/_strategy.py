"""Deployment strategies as traffic plans: what an actuate stage asks its actuators, step by step.

* ``direct``: one step, all live traffic to the candidate (``promote``, weight 1); the stage's watch
  checks run after it.
* ``canary``: one step per weight of ``deployment.steps`` (default 10%, 25%, 50%, 100%: ``shift`` with
  the candidate's share of live traffic, the last one ``promote``); the watch checks run after every
  step and must pass before the next one (the gate between steps); a stop at any step runs the
  rollback stage.
* ``shadow``: ``mirror`` first (the candidate receives a copy of live traffic and serves none: live
  weight 0), the watch checks (typically an output comparison) run on the mirrored traffic, and only
  when they pass does ``promote`` (weight 1) follow; no watch runs after the promotion inside the
  stage (later monitor stages watch live traffic).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_STEPS", "TrafficStep", "traffic_plan"]

DEFAULT_STEPS = (0.10, 0.25, 0.50, 1.00)


@dataclass(frozen=True)
class TrafficStep:
    """One actuation: ``action`` (``promote``, ``shift``, ``mirror``), the candidate's share of live
    traffic ``weight``, whether the candidate receives mirrored traffic, and whether the stage's watch
    checks run after it."""

    action: str
    weight: float
    mirror: bool
    watch_after: bool


def traffic_plan(strategy: str, steps: Sequence[float] = DEFAULT_STEPS) -> list[TrafficStep]:
    """The actuation sequence of one actuate stage under ``strategy``.

    Examples
    --------
    >>> [(s.action, s.weight) for s in traffic_plan("canary", (0.1, 0.5, 1.0))]
    [('shift', 0.1), ('shift', 0.5), ('promote', 1.0)]
    >>> [(s.action, s.weight, s.mirror, s.watch_after) for s in traffic_plan("shadow")]
    [('mirror', 0.0, True, True), ('promote', 1.0, False, False)]
    """
    if strategy == "direct":
        return [TrafficStep("promote", 1.0, False, True)]
    if strategy == "shadow":
        return [TrafficStep("mirror", 0.0, True, True), TrafficStep("promote", 1.0, False, False)]
    if strategy != "canary":
        raise ValueError(f"strategy must be direct, canary or shadow; got {strategy!r}")
    ws = [float(w) for w in steps]
    if not ws or ws[-1] != 1.0 or any(not 0.0 < w <= 1.0 for w in ws) or any(b <= a for a, b in zip(ws, ws[1:])):
        raise ValueError(f"canary steps must increase strictly within (0, 1] and end at 1.0; got {list(steps)}")
    return [TrafficStep("promote" if w == 1.0 else "shift", w, False, True) for w in ws]
