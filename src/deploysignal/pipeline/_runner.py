"""Pipeline runner: blocking promotion gates, actuation, telemetry monitor, rollback stage, drills.

This is an adapter (it runs commands, reads files, posts webhooks and reads the clock through an
injectable ``clock``).  A gate that fails or cannot be evaluated (metric missing, command failing,
metrics file or command output not UTF-8 JSON) halts the promotion with status ``blocked``; there is no
parameter, key or flag that skips a gate.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from .._exceptions import ConfigError, InputError
from ._actuators import ActuationResult, actuate, read_served_version
from ._compare import CompareStage, load_grader
from ._spec import ActuateStage, FileActuator, GateCheck, GateStage, MonitorStage, PipelineSpec
from ._strategy import traffic_plan
from ._store import DeploymentRecord, DeploymentStore

__all__ = ["evaluate_gate", "run_drill", "run_pipeline", "run_rollback", "verify_rollback"]

log = logging.getLogger(__name__)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


def _parse_json(data: bytes, what: str) -> tuple[Any, str]:
    """``(value, "")`` or ``(None, why)`` for bytes that should hold UTF-8 JSON."""
    from .._text import JSON_UNUSABLE, error_head, not_utf8_message

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, not_utf8_message(what, data)
    try:
        return json.loads(text), ""
    except json.JSONDecodeError as e:
        return None, f"{what} is not JSON ({e.msg}, line {e.lineno})"
    except JSON_UNUSABLE as e:  # an integer beyond Python's digit limit, too deep nesting
        return None, f"{what} is not usable JSON ({error_head(e)})"


def _measure(g: GateCheck, metrics: dict[str, Any] | None, metrics_error: str, base: Path) -> tuple[float | None, str]:
    """The check's value, or ``(None, why it is not measured)``."""
    if g.command is not None:
        try:
            proc = subprocess.run(g.command, cwd=base, capture_output=True, timeout=g.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("gate %s: command failed: %s", g.metric, e)
            return None, f"command failed: {e}"
        if proc.returncode != 0:
            log.warning("gate %s: command exited %d", g.metric, proc.returncode)
            return None, f"command exited {proc.returncode}"
        val, why = _parse_json(proc.stdout.strip(), "command output")
        if why:  # not UTF-8, not JSON, an integer beyond Python's digit limit, too deep nesting: not measured
            log.warning("gate %s: %s", g.metric, why)
            return None, why
        if isinstance(val, dict):
            if g.metric not in val:
                return None, f"command output has no {g.metric!r}"
            val = val[g.metric]
    elif metrics is None:
        return None, metrics_error or "no metrics file and no command"
    elif g.metric not in metrics:
        return None, f"{g.metric!r} is not in the metrics file"
    else:
        val = metrics[g.metric]
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        return None, f"value is not a number: {repr(val)[:80]}"
    try:
        num = float(val)
    except OverflowError:  # an integer beyond float range
        return None, "value is an integer beyond float range"
    return (num, "") if math.isfinite(num) else (None, f"value is not finite: {num}")


def evaluate_gate(stage: GateStage, base: Path) -> tuple[bool, list[dict[str, Any]]]:
    """Evaluate every check of a gate stage; passes only when all checks are measured and pass.

    A check that cannot be measured (metrics file or command output unreadable, not UTF-8 JSON, metric
    missing or not a finite number, command failing) does not pass: its ``reason`` is ``not measured``
    and its ``error`` says why."""
    metrics: dict[str, Any] | None = None
    metrics_error = ""
    if stage.metrics_file is not None:
        what = f"metrics file {stage.metrics_file}"
        try:
            loaded, metrics_error = _parse_json((base / stage.metrics_file).read_bytes(), what)
        except OSError as e:
            loaded, metrics_error = None, f"cannot read {what}: {e.strerror or e}"
        if not metrics_error and not isinstance(loaded, dict):
            metrics_error = f"{what} does not hold a JSON object"
        if metrics_error:
            log.warning("gate stage %s: %s", stage.name, metrics_error)
        else:
            metrics = loaded
    results = []
    for g in stage.gates:
        v, why = _measure(g, metrics, metrics_error, base)
        ok = v is not None and _OPS[g.op](v, g.threshold)
        results.append({"metric": g.metric, "value": v, "op": g.op, "threshold": g.threshold, "passed": ok,
                        "reason": "not measured" if v is None else ("ok" if ok else "threshold not met")}
                       | ({"error": why} if v is None else {}))
    return all(r["passed"] for r in results), results


def run_rollback(spec: PipelineSpec, base: Path, *, reason: str, deployment_id: str,
                 client: httpx.Client | None = None) -> list[ActuationResult]:
    """Run every rollback actuator (serving the incumbent again), in order, even if one fails."""
    ctx = {"deployment_id": deployment_id, "reason": reason, "pipeline": spec.name,
           "incumbent": spec.deployment.incumbent, "candidate": spec.deployment.candidate}
    return [actuate(a, action="rollback", version=spec.deployment.incumbent, context=ctx, base=base, client=client,
                    weight=0.0, mirror=False) for a in spec.rollback.actuators]


def verify_rollback(spec: PipelineSpec, base: Path) -> list[str]:
    """What is wrong with the served-version files after the rollback actuators ran: every rollback file
    actuator's file must name the incumbent under its version key (and give the candidate no live share
    and no mirror, under its ``weight_key`` / ``mirror_key``). An empty list = verified. A file that cannot
    be read or parsed is an entry naming the error, never an exception."""
    bad = []
    for a in spec.rollback.actuators:
        if not isinstance(a, FileActuator):
            continue
        try:
            served = read_served_version(base / a.path, a.version_key)
            if served != spec.deployment.incumbent:
                bad.append(f"{a.path}: serves {served!r}, not the incumbent {spec.deployment.incumbent!r}")
            if a.weight_key and float(w := read_served_version(base / a.path, a.weight_key)) != 0.0:
                bad.append(f"{a.path}: {a.weight_key} is {w}, not 0")
            if a.mirror_key and (m := read_served_version(base / a.path, a.mirror_key)) != "False":
                bad.append(f"{a.path}: {a.mirror_key} is {m}, not false")
        except Exception as e:  # a file another process rewrote into anything: a failed check, named
            bad.append(f"{a.path}: cannot read the served version ({type(e).__name__}: {e})")
    return bad


def _means(frame: Any) -> dict[str, float | None]:
    """Column means of a telemetry frame (None for a column with no value)."""
    import numpy as np

    out: dict[str, float | None] = {}
    for i, sig in enumerate(frame.signals):
        col = frame.values[:, i]
        ok = np.isfinite(col)
        out[sig] = float(col[ok].mean()) if ok.any() else None
    return out


def _monitor(stage: MonitorStage, base: Path, telemetry: str, compiled: dict[tuple[str, int], Any]) -> dict[str, Any]:
    """Run the gate and the threshold rules on one telemetry file.

    Returns the stage entry: ``verdict`` (the gate's, turned into ``rollback`` by a rollback rule that
    fired, into ``extend`` by a rollback rule that could not be evaluated; never into ``proceed``),
    ``reason``, ``rules`` (every rule's outcome) and the baseline / candidate means. ``compiled``: the
    run's cache of compiled baselines by (baseline file, seed): a canary's steps compile it once."""
    from ..calibration import compile_baseline
    from ..gate import Gate, GateSettings
    from ..sources import read_frame
    from ._rules import combine_verdict, evaluate_rules

    baseline = read_frame(base / stage.baseline)
    canary = read_frame(base / telemetry)
    key = (stage.baseline, stage.seed)
    if key not in compiled:
        compiled[key] = compile_baseline(baseline, seed=stage.seed)
    gate = Gate(compiled[key], GateSettings(alpha=stage.alpha, window=stage.window))
    decisions = gate.run(canary)
    verdict, info = decisions[-1].verdict, {"tick": decisions[-1].tick, "timestamp": decisions[-1].timestamp, "reason": ""}
    for d in decisions:
        if d.verdict == "rollback":
            fired = [e for e in d.evidence if e.fired]
            why = "; ".join(f"{e.family}: {e.reason}" for e in fired) or "gate verdict rollback"
            verdict, info = "rollback", {"tick": d.tick, "timestamp": d.timestamp, "reason": why}
            break
    else:
        rt = gate.runtime_status  # one-sample run-time model check (issue 22): a held proceed says why
        if verdict != "proceed" and rt is not None and rt["fired_at"] >= 0:
            info["reason"] = rt["status"]
    info["gate_verdict"] = verdict
    cols = {s: canary.values[:, i] for i, s in enumerate(canary.signals)}
    outcomes = evaluate_rules(stage.rules, {s: baseline.values[:, i] for i, s in enumerate(baseline.signals)}, cols)
    rules = []
    for o in outcomes:
        r = o.to_json()
        if o.tick is not None:
            r["timestamp"] = float(canary.timestamps[o.tick])
        rules.append(r)
    verdict, why = combine_verdict(verdict, outcomes)  # rules can add a rollback, never remove one
    if why:
        info["reason"] = why if verdict == "extend" else "; ".join(x for x in (info["reason"], why) if x)
    return {"verdict": verdict, **info, "rules": rules, "baseline_means": _means(baseline), "candidate_means": _means(canary)}


def _fmt(path: str, step: int | None) -> str:
    return path if step is None else path.replace("{step}", str(step))


def _check(check: MonitorStage | CompareStage, base: Path, step: int | None,
           compiled: dict[tuple[str, int], Any], versions: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    """Run one watch check; ``(outcome, stage entry)`` with outcome ``pass``, ``rollback`` or ``stop``."""
    from ._compare import ASSUMPTION, compare_outputs

    if isinstance(check, MonitorStage):
        path = _fmt(check.telemetry, step)
        try:
            entry = {"telemetry": path, **_monitor(check, base, path, compiled)}
        except (InputError, ConfigError, OSError) as e:
            entry = {"telemetry": path, "verdict": "extend", "reason": f"telemetry unusable: {e}", "error": str(e)}
        v = entry["verdict"]
        return ("pass" if v == "proceed" else "rollback" if v == "rollback" else "stop"), {"type": "monitor", **entry}
    path = _fmt(check.outputs, step)
    try:
        res = compare_outputs(check, base, path, versions)
    except (InputError, ConfigError, OSError) as e:
        return "stop", {"type": "compare", "outputs": path, "verdict": "not evaluated", "error": str(e),
                        "reason": f"not evaluated: {e}"}
    entry = {"type": "compare", "outputs": path, **res.to_json(), "margin": check.margin, "tolerance": check.tolerance,
             "alpha": check.alpha, "assumption": ASSUMPTION,
             "reason": "" if res.verdict == "pass" else f"{res.verdict} after {res.pairs} pairs "
             f"(incumbent {res.incumbent_mean:.4g}, candidate {res.candidate_mean:.4g})"}
    return {"pass": "pass", "fail": "rollback"}.get(res.verdict, "stop"), entry


def run_pipeline(spec: PipelineSpec, base: str | Path, store: DeploymentStore, *,
                 client: httpx.Client | None = None, clock: Callable[[], float] = time.time,
                 rollback_on: Sequence[str] = ()) -> DeploymentRecord:
    """Run the stages in order; returns the saved :class:`DeploymentRecord`.

    Status: ``promoted`` (every stage passed), ``blocked`` (a gate or check stopped the run before
    any actuate stage had sent the candidate traffic: nothing to undo), ``rolled_back`` (the rollback
    stage ran and :func:`verify_rollback` found every served-version file back on the incumbent),
    ``failed`` (an actuator failed, a check raised an unexpected exception, or the rollback did not
    verify; after a switch the rollback stage was run; the error is in ``error_messages``). Callable
    graders are imported before anything runs (a broken one is a :class:`ConfigError`, nothing moved). A monitor verdict other
    than proceed (``rollback``, ``extend``, ``pending``, or telemetry that cannot be read), an output
    comparison other than ``pass`` and a threshold rule set to roll back that fires are not a pass:
    once an actuate stage has sent the candidate traffic (live or mirrored), any stop short of
    promotion runs the rollback stage, so a run never ends with the candidate served without every
    check's pass. An actuate stage executes the deployment's strategy (:func:`traffic_plan`), with its
    ``watch`` checks between traffic steps.

    ``rollback_on``: names of threshold rules (or ``"all"``) whose action becomes ``rollback`` for this
    run; it can only escalate a rule from warn to rollback, never the reverse.
    """
    base = Path(base)
    spec = _escalate(spec, rollback_on)
    for st in spec.stages:
        for c in (st.watch if isinstance(st, ActuateStage) else [st]):
            if isinstance(c, CompareStage):
                load_grader(c.grader)
    versions = (spec.deployment.incumbent, spec.deployment.candidate)
    rec = DeploymentRecord(id=f"dep-{uuid.uuid4().hex[:12]}", pipeline=spec.name,
                           incumbent_version=spec.deployment.incumbent, candidate_version=spec.deployment.candidate,
                           strategy=spec.deployment.strategy, started_at=clock())
    store.save(rec)
    ctx = {"deployment_id": rec.id, "pipeline": spec.name, "incumbent": spec.deployment.incumbent,
           "candidate": spec.deployment.candidate}

    def rollback(reason: str) -> None:
        t0 = clock()
        res = run_rollback(spec, base, reason=reason, deployment_id=rec.id, client=client)
        unverified = verify_rollback(spec, base)
        rec.rollback_duration_s = clock() - t0
        rec.rollback_reason = reason
        rec.stages.append({"stage": "rollback", "actuators": [r.__dict__ for r in res], "verified": not unverified})
        rec.error_messages += [f"rollback: {r.actuator}: {r.detail}" for r in res if not r.ok]
        rec.error_messages += [f"rollback not verified: {x}" for x in unverified]
        rec.status = "rolled_back" if all(r.ok for r in res) and not unverified else "failed"

    def stop(reason: str) -> None:
        """Stop short of promotion: blocked before any switch, the rollback stage after one."""
        if switched:
            rollback(f"{reason}; candidate withdrawn")
        else:
            rec.status = "blocked"
            rec.rollback_reason = reason

    def record_check(stage_name: str, check: MonitorStage | CompareStage, step: int | None, weight: float | None) -> str:
        outcome, entry = _check(check, base, step, compiled, versions)
        where = {"stage": stage_name} | ({"check": check.name, "step": step, "weight": weight} if step is not None else {})
        rec.stages.append(where | entry)
        label = ("telemetry" if entry["type"] == "monitor" else "output comparison") + " (" + (
            stage_name if step is None else f"{stage_name}/{check.name} step {step}") + ")"
        if "error" in entry:
            rec.error_messages.append(f"{label}: {entry['error']}")
        if entry["type"] == "monitor" and "rules" in entry:
            rec.rules_fired += [where | r for r in entry["rules"] if r["fired"]]
            rec.error_messages += [f"{label}: rule {r['rule']} ({r['action']}) not evaluated: {r['error']}"
                                   for r in entry["rules"] if not r["evaluated"]]
            rec.baseline_metrics.update({k: v for k, v in entry["baseline_means"].items() if v is not None})
            rec.deployed_metrics.update({k: v for k, v in entry["candidate_means"].items() if v is not None})
        elif entry["type"] == "compare" and "incumbent_mean" in entry:
            rec.baseline_metrics[f"{check.name}.score"] = entry["incumbent_mean"]
            rec.deployed_metrics[f"{check.name}.score"] = entry["candidate_mean"]
        if outcome == "rollback" and switched:
            rollback(f"{label}: {entry['reason']}")
        elif outcome == "rollback":  # a failed check before any switch: nothing to undo
            stop(f"{label}: {entry['reason']}")
        elif outcome == "stop":
            verdict = entry.get("verdict")
            stop(f"{label}: {entry['reason'] or f'verdict {verdict}'}; promotion not confirmed")
        return outcome

    compiled: dict[tuple[str, int], Any] = {}  # baselines compiled in this run (files are read once per run)
    switched = False

    def stages() -> None:
        nonlocal switched
        for stage in spec.stages:
            if isinstance(stage, GateStage):
                ok, results = evaluate_gate(stage, base)
                rec.stages.append({"stage": stage.name, "type": "gate", "passed": ok, "checks": results})
                rec.deployed_metrics.update({r["metric"]: r["value"] for r in results if r["value"] is not None})
                rec.error_messages += [f"{stage.name}: {r['metric']}: {r['error']}" for r in results if "error" in r]
                if not ok:
                    failed = [r["metric"] for r in results if not r["passed"]]
                    return stop(f"gate {stage.name} failed: {', '.join(failed)}")
            elif isinstance(stage, ActuateStage):
                for i, step in enumerate(traffic_plan(spec.deployment.strategy, spec.deployment.steps), 1):
                    version = spec.deployment.candidate if step.weight >= 1.0 else spec.deployment.incumbent
                    switched = True  # even a partly failed (or raising) switch may have moved traffic: undo from here on
                    res = [actuate(a, action=step.action, version=version, context=ctx, base=base, client=client,
                                   weight=step.weight, mirror=step.mirror) for a in stage.actuators]
                    rec.stages.append({"stage": stage.name, "type": "actuate", "step": i, "action": step.action,
                                       "weight": step.weight, "mirror": step.mirror,
                                       "actuators": [r.__dict__ for r in res]})
                    if not all(r.ok for r in res):
                        rec.error_messages += [f"{stage.name} step {i}: {r.actuator}: {r.detail}" for r in res if not r.ok]
                        rollback(f"actuator failed in stage {stage.name} (step {i}, {step.action} {step.weight:g})")
                        rec.status = "failed"
                        return None
                    if step.watch_after and any(record_check(stage.name, c, i, step.weight) != "pass" for c in stage.watch):
                        return None  # checks run in order; the first that does not pass has stopped the run
            elif record_check(stage.name, stage, None, None) != "pass":
                return None
        rec.status = "promoted"
        return None

    try:
        stages()
    except Exception as e:  # anything unforeseen (a check, a grader, an actuator): never leave the candidate serving
        log.error("pipeline %s: unexpected error: %s: %s", spec.name, type(e).__name__, e)
        log.debug("pipeline %s: unexpected error", spec.name, exc_info=True)
        rec.error_messages.append(f"unexpected error: {type(e).__name__}: {e}")
        if switched:
            rollback(f"unexpected error: {type(e).__name__}: {e}; candidate withdrawn")
        else:
            rec.rollback_reason = f"unexpected error: {type(e).__name__}: {e}"
        rec.status = "failed"
    rec.ended_at = clock()
    store.save(rec)
    return rec


def _escalate(spec: PipelineSpec, names: Sequence[str]) -> PipelineSpec:
    """``spec`` with the named threshold rules (or every rule for ``"all"``) set to roll back; an unknown
    name is a :class:`ConfigError` (a typo must not leave a rule warning only)."""
    if not names:
        return spec
    known: set[str] = set()
    want = set(names)

    def esc(check: Any) -> Any:
        if not isinstance(check, MonitorStage):
            return check
        known.update(r.name for r in check.rules)
        rules = [r.model_copy(update={"action": "rollback"}) if ("all" in want or r.name in want) else r
                 for r in check.rules]
        return check.model_copy(update={"rules": rules})

    stages = [st.model_copy(update={"watch": [esc(c) for c in st.watch]}) if isinstance(st, ActuateStage) else esc(st)
              for st in spec.stages]
    if not known:  # also for "all": a flag that escalates nothing must not look as if it had
        raise ConfigError(f"--rollback-on {', '.join(sorted(want))}: the pipeline has no threshold rules (no monitor)")
    unknown = sorted(want - known - {"all"})
    if unknown:
        raise ConfigError(f"--rollback-on: no threshold rule named {', '.join(unknown)} (rules: {', '.join(sorted(known)) or 'none'})")
    return spec.model_copy(update={"stages": stages})


def run_drill(spec: PipelineSpec, base: str | Path, store: DeploymentStore, *, client: httpx.Client | None = None,
              verify: Callable[[], bool] | None = None, clock: Callable[[], float] = time.time,
              scheduled_for: float | None = None, missed_slots: int = 0) -> DeploymentRecord:
    """Exercise the rollback path: run the rollback actuators now and record how long they took.

    The served-version files of the rollback file actuators are checked with :func:`verify_rollback`;
    ``verify`` (optional) is a further check that traffic is back on the incumbent. The drill is
    ``failed`` unless every actuator succeeded, the files verify and ``verify`` returned True (a
    ``verify`` that raises is a failure naming the error); the failures are in ``error_messages``. ``scheduled_for`` / ``missed_slots``: set by
    :func:`run_drill_schedule`.
    """
    base = Path(base)
    rec = DeploymentRecord(id=f"drill-{uuid.uuid4().hex[:12]}", pipeline=spec.name,
                           incumbent_version=spec.deployment.incumbent, candidate_version=spec.deployment.candidate,
                           strategy=spec.deployment.strategy, started_at=clock(), status="drill",
                           scheduled_for=scheduled_for)
    t0 = clock()
    res = run_rollback(spec, base, reason="drill", deployment_id=rec.id, client=client)
    unverified = [f"verify: {x}" for x in verify_rollback(spec, base)]
    try:
        if verify is not None and not verify():
            unverified.append("verify: traffic is not back on the incumbent after the rollback actuators")
    except Exception as e:  # a check reading anything: the drill failed, named, not a traceback
        unverified.append(f"verify raised {type(e).__name__}: {e}")
    verified = not unverified
    rec.rollback_duration_s = clock() - t0
    rec.rollback_reason = "drill"
    rec.stages.append({"stage": "rollback", "actuators": [r.__dict__ for r in res], "verified": verified}
                      | ({"missed_slots": missed_slots} if scheduled_for is not None else {}))
    rec.error_messages += [f"rollback: {r.actuator}: {r.detail}" for r in res if not r.ok]
    rec.error_messages += unverified
    rec.status = "drill" if all(r.ok for r in res) and verified else "failed"
    rec.ended_at = clock()
    store.save(rec)
    return rec
