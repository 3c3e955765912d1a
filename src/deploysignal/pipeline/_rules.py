"""Static threshold rules of a release pipeline's watch: a classical deployment controller's checks.

Each rule compares one telemetry column of the candidate, tick by tick, with the incumbent's value
on the same column (the mean of the healthy baseline, ``reference``) and fires after ``consecutive``
failing ticks in a row, counted over the *measured* ticks (a tick with no value on the column, NaN,
is skipped: it neither breaks nor extends a run, so a sparse column fires like a dense one):

* ``relative_increase``: ``value > max(reference, floor) * (1 + threshold)`` (error rate +50%);
* ``ratio``: ``value > reference * threshold`` (latency x2);
* ``min``: ``value < threshold`` (success rate below 70%);
* ``max``: ``value > threshold`` (an absolute ceiling).

A rule's ``action`` is ``warn`` (recorded only) or ``rollback`` (the watch's verdict becomes
rollback). Rules can only add a rollback: nothing a rule says turns the gate's rollback, extend or
pending into a pass (there is no ``promote`` or ``override`` action). A rule whose column is absent,
has fewer measured ticks than ``consecutive`` (none at all included), or whose reference cannot be
formed is *not evaluated*; a ``rollback`` rule not evaluated stops the
watch (it is never silently skipped), a ``warn`` rule not evaluated is recorded as such.

Guarantee: none. Thresholds spend no alpha and carry no error control (autocorrelated telemetry makes
consecutive failures far likelier than independence suggests); they are the checks many pipelines run
today, offered next to the gate's anytime-valid families, not instead of them.

This module is pure: it does no I/O and reads no clock.

References
----------
Phase 4 "Safe Deployment" of a deployment controller (rollback triggers: error rate increase,
latency multiplier, minimum success rate, consecutive failures).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_RULES", "RuleOutcome", "ThresholdRule", "combine_verdict", "evaluate_rules"]

RuleKind = Literal["relative_increase", "ratio", "min", "max"]


class ThresholdRule(BaseModel):
    """One static check on a telemetry column (see the module docstring for the comparisons).

    Examples
    --------
    >>> ThresholdRule(kind="ratio", metric="p99_latency_ms", threshold=2.0).name
    'p99_latency_ms-ratio'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RuleKind
    metric: str = Field(min_length=1)
    threshold: float
    action: Literal["warn", "rollback"] = "warn"
    consecutive: int = Field(5, ge=1)
    floor: float = Field(0.0, ge=0.0)
    name: str = ""

    @model_validator(mode="after")
    def _check(self) -> ThresholdRule:
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold}")
        if self.kind == "relative_increase" and self.threshold <= 0:
            raise ValueError("a relative_increase threshold must be > 0 (0.5 = +50%)")
        if self.kind == "ratio" and self.threshold <= 1:
            raise ValueError("a ratio threshold must be > 1 (2.0 = twice the reference)")
        if not self.name:
            object.__setattr__(self, "name", f"{self.metric}-{self.kind}")
        return self


#: the classical deployment controller's checks (004: error rate +50%, latency x2, success below 70%;
#: its fourth trigger, consecutive failures, is each rule's ``consecutive`` = 5 failing ticks), all
#: ``warn`` here where the source rolls back (they carry no error control; set ``action: rollback`` or
#: ``--rollback-on``); rules absent from the telemetry are recorded as not evaluated.
DEFAULT_RULES: tuple[ThresholdRule, ...] = (
    ThresholdRule(kind="relative_increase", metric="downstream_error_rate", threshold=0.5, floor=1e-3,
                  name="error-rate"),
    ThresholdRule(kind="ratio", metric="p99_latency_ms", threshold=2.0, name="latency"),
    ThresholdRule(kind="min", metric="tool_success_rate", threshold=0.7, name="success-rate"),
)


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule saw: ``fired`` at ``tick`` (0-based row of the telemetry) with the ``observed``
    value there, the incumbent's ``reference`` and the ``limit`` it crossed (a rule that did not fire:
    ``observed`` is its worst tick); ``evaluated`` False with ``error`` when it could not be checked."""

    rule: str
    metric: str
    kind: str
    action: str
    evaluated: bool
    fired: bool
    reference: float | None = None
    limit: float | None = None
    observed: float | None = None
    tick: int | None = None
    consecutive: int = 0
    error: str = ""

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _limit(rule: ThresholdRule, reference: float) -> float:
    if rule.kind == "relative_increase":
        return max(reference, rule.floor) * (1.0 + rule.threshold)
    if rule.kind == "ratio":
        return reference * rule.threshold
    return rule.threshold


def evaluate_rules(rules: Sequence[ThresholdRule], baseline: dict[str, np.ndarray],
                   candidate: dict[str, np.ndarray]) -> list[RuleOutcome]:
    """Evaluate every rule on the candidate's ticks against the incumbent's baseline columns.

    Parameters
    ----------
    rules : sequence of ThresholdRule
    baseline, candidate : dict of str to ndarray
        Columns by name (NaN = missing; a missing candidate tick is skipped: runs of failures are
        counted over the measured ticks).

    Returns
    -------
    list of RuleOutcome
        In the order of ``rules``; a rule fires at the first tick that ends ``consecutive`` failing ticks.

    Examples
    --------
    >>> r = ThresholdRule(kind="ratio", metric="lat", threshold=2.0, consecutive=2, action="rollback")
    >>> o = evaluate_rules([r], {"lat": np.array([100.0, 100.0])}, {"lat": np.array([150.0, 210.0, 230.0])})[0]
    >>> (o.fired, o.tick, o.observed, o.reference, o.limit)
    (True, 2, 230.0, 100.0, 200.0)
    >>> sparse = {"lat": np.array([210.0, np.nan, 230.0])}          # a gap neither breaks nor extends a run
    >>> evaluate_rules([r], {"lat": np.array([100.0])}, sparse)[0].tick
    2
    >>> evaluate_rules([r], {"lat": np.array([100.0])}, {"lat": np.array([np.nan, 300.0])})[0].evaluated
    False
    """
    out = []
    for r in rules:
        base = dict(rule=r.name, metric=r.metric, kind=r.kind, action=r.action)
        if r.metric not in candidate:
            out.append(RuleOutcome(**base, evaluated=False, fired=False, error=f"{r.metric!r} is not in the telemetry"))
            continue
        reference = None
        if r.kind in ("relative_increase", "ratio"):
            col = baseline.get(r.metric)
            vals = np.asarray(col, dtype=float) if col is not None else np.empty(0)
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                out.append(RuleOutcome(**base, evaluated=False, fired=False,
                                       error=f"{r.metric!r} has no value in the baseline (no reference)"))
                continue
            reference = float(vals.mean())
        limit = _limit(r, reference if reference is not None else 0.0)
        x = np.asarray(candidate[r.metric], dtype=float)
        measured = np.flatnonzero(np.isfinite(x))  # a gap (NaN) is skipped: runs count measured ticks only
        if measured.size < r.consecutive:
            out.append(RuleOutcome(**base, evaluated=False, fired=False, reference=reference, limit=limit,
                                   error=f"{r.metric!r} has {measured.size} measured tick(s), fewer than the "
                                   f"{r.consecutive} consecutive the rule needs"))
            continue
        xm = x[measured]
        failing = (xm < limit) if r.kind == "min" else (xm > limit)
        streak, fired_at = 0, None
        for j, f in enumerate(failing):
            streak = streak + 1 if f else 0
            if streak >= r.consecutive:
                fired_at = int(measured[j])
                break
        if fired_at is None:
            out.append(RuleOutcome(**base, evaluated=True, fired=False, reference=reference, limit=limit,
                                   observed=float(xm.max() if r.kind != "min" else xm.min())))
        else:
            out.append(RuleOutcome(**base, evaluated=True, fired=True, reference=reference, limit=limit,
                                   observed=float(x[fired_at]), tick=fired_at, consecutive=r.consecutive))
    return out


def combine_verdict(gate_verdict: str, outcomes: Sequence[RuleOutcome]) -> tuple[str, str]:
    """The watch's verdict from the gate's and the rules': ``(verdict, reason from the rules)``.

    A fired ``rollback`` rule makes it ``rollback``; a ``rollback`` rule that could not be evaluated
    makes anything but ``rollback`` ``extend`` (not a pass); otherwise the gate's verdict stands. No
    outcome can turn ``rollback``, ``extend`` or ``pending`` into ``proceed``.

    Examples
    --------
    >>> warn = RuleOutcome("r", "m", "max", "warn", True, True, None, 1.0, 2.0, 0, 1)
    >>> combine_verdict("rollback", [warn]), combine_verdict("proceed", [warn])[0]
    (('rollback', ''), 'proceed')
    """
    roll = [o for o in outcomes if o.fired and o.action == "rollback"]
    if roll:
        return "rollback", "; ".join(
            f"rule {o.rule}: {o.metric} {o.observed:.6g} beyond {o.limit:.6g} (reference "
            f"{'-' if o.reference is None else format(o.reference, '.6g')}) at tick {o.tick}" for o in roll)
    blind = [o for o in outcomes if not o.evaluated and o.action == "rollback"]
    if blind and gate_verdict != "rollback":
        return "extend", "; ".join(f"rollback rule {o.rule} not evaluated: {o.error}" for o in blind)
    return gate_verdict, ""
