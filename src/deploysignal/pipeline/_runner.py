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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .._exceptions import ConfigError, InputError
from ._actuators import ActuationResult, actuate
from ._spec import ActuateStage, GateCheck, GateStage, MonitorStage, PipelineSpec
from ._store import DeploymentRecord, DeploymentStore

__all__ = ["evaluate_gate", "run_drill", "run_pipeline", "run_rollback"]

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
    ctx = {"deployment_id": deployment_id, "reason": reason, "pipeline": spec.name}
    return [actuate(a, action="rollback", version=spec.deployment.incumbent, context=ctx, base=base, client=client)
            for a in spec.rollback.actuators]


def _monitor(stage: MonitorStage, base: Path) -> tuple[str, dict[str, Any]]:
    from ..calibration import compile_baseline
    from ..gate import Gate, GateSettings
    from ..sources import read_frame

    baseline = read_frame(base / stage.baseline)
    canary = read_frame(base / stage.telemetry)
    gate = Gate(compile_baseline(baseline, seed=stage.seed), GateSettings(alpha=stage.alpha, window=stage.window))
    decisions = gate.run(canary)
    last = decisions[-1]
    for d in decisions:
        if d.verdict == "rollback":
            fired = [e for e in d.evidence if e.fired]
            why = "; ".join(f"{e.family}: {e.reason}" for e in fired) or "gate verdict rollback"
            return "rollback", {"tick": d.tick, "timestamp": d.timestamp, "reason": why}
    rt = gate.runtime_status  # one-sample run-time model check (issue 22): a held proceed says why
    held = last.verdict != "proceed" and rt is not None and rt["fired_at"] >= 0
    return last.verdict, {"tick": last.tick, "timestamp": last.timestamp, "reason": rt["status"] if held else ""}  # type: ignore[index]


def run_pipeline(spec: PipelineSpec, base: str | Path, store: DeploymentStore, *,
                 client: httpx.Client | None = None, clock: Callable[[], float] = time.time) -> DeploymentRecord:
    """Run the stages in order; returns the saved :class:`DeploymentRecord`.

    Status: ``promoted`` (every stage passed), ``blocked`` (a gate or monitor stopped the run before
    any actuate stage had switched to the candidate: nothing to undo), ``rolled_back`` (the rollback
    stage ran), ``failed`` (an actuator failed; the rollback stage was run). A monitor verdict other
    than proceed (``rollback``, ``extend``, ``pending``, or telemetry that cannot be read) is not a
    pass: once an actuate stage has switched to the candidate, any stop short of promotion runs the
    rollback stage, so a run never ends with the candidate served without the gate's proceed.
    """
    base = Path(base)
    rec = DeploymentRecord(id=f"dep-{uuid.uuid4().hex[:12]}", pipeline=spec.name,
                           incumbent_version=spec.deployment.incumbent, candidate_version=spec.deployment.candidate,
                           strategy=spec.deployment.strategy, started_at=clock())
    store.save(rec)
    ctx = {"deployment_id": rec.id, "pipeline": spec.name}

    def rollback(reason: str) -> None:
        t0 = time.perf_counter()
        res = run_rollback(spec, base, reason=reason, deployment_id=rec.id, client=client)
        rec.rollback_duration_s = time.perf_counter() - t0
        rec.rollback_reason = reason
        rec.stages.append({"stage": "rollback", "actuators": [r.__dict__ for r in res]})
        rec.status = "rolled_back" if all(r.ok for r in res) else "failed"

    def stop(reason: str) -> None:
        """Stop short of promotion: blocked before any switch, the rollback stage after one."""
        if switched:
            rollback(f"{reason}; candidate withdrawn")
        else:
            rec.status = "blocked"
            rec.rollback_reason = reason

    switched = False
    for stage in spec.stages:
        if isinstance(stage, GateStage):
            ok, results = evaluate_gate(stage, base)
            rec.stages.append({"stage": stage.name, "type": "gate", "passed": ok, "checks": results})
            rec.deployed_metrics.update({r["metric"]: r["value"] for r in results})
            if not ok:
                failed = [r["metric"] for r in results if not r["passed"]]
                stop(f"gate {stage.name} failed: {', '.join(failed)}")
                break
        elif isinstance(stage, ActuateStage):
            res = [actuate(a, action="promote", version=spec.deployment.candidate, context=ctx, base=base, client=client)
                   for a in stage.actuators]
            rec.stages.append({"stage": stage.name, "type": "actuate", "actuators": [r.__dict__ for r in res]})
            switched = True  # even a partly failed switch may have moved traffic: undo from here on
            if not all(r.ok for r in res):
                rollback(f"actuator failed in stage {stage.name}")
                rec.status = "failed"
                break
        else:
            try:
                verdict, info = _monitor(stage, base)
            except (InputError, ConfigError, OSError) as e:
                verdict, info = "extend", {"reason": f"telemetry unusable: {e}"}
            rec.stages.append({"stage": stage.name, "type": "monitor", "verdict": verdict, **info})
            if verdict == "rollback":
                rollback(f"telemetry: {info['reason']}")
                break
            if verdict != "proceed":
                stop(f"monitor {stage.name}: verdict {verdict}; promotion not confirmed")
                break
    else:
        rec.status = "promoted"
    rec.ended_at = clock()
    store.save(rec)
    return rec


def run_drill(spec: PipelineSpec, base: str | Path, store: DeploymentStore, *, client: httpx.Client | None = None,
              verify: Callable[[], bool] | None = None, clock: Callable[[], float] = time.time) -> DeploymentRecord:
    """Exercise the rollback path: run the rollback actuators now and record how long they took.

    ``verify`` (optional) checks that traffic is back on the incumbent (e.g. reads the served-version
    file); the drill is ``failed`` unless every actuator succeeded and ``verify`` returned True.
    """
    base = Path(base)
    rec = DeploymentRecord(id=f"drill-{uuid.uuid4().hex[:12]}", pipeline=spec.name,
                           incumbent_version=spec.deployment.incumbent, candidate_version=spec.deployment.candidate,
                           strategy=spec.deployment.strategy, started_at=clock(), status="drill")
    t0 = time.perf_counter()
    res = run_rollback(spec, base, reason="drill", deployment_id=rec.id, client=client)
    verified = verify() if verify is not None else True
    rec.rollback_duration_s = time.perf_counter() - t0
    rec.rollback_reason = "drill"
    rec.stages.append({"stage": "rollback", "actuators": [r.__dict__ for r in res], "verified": verified})
    rec.status = "drill" if all(r.ok for r in res) and verified else "failed"
    rec.ended_at = clock()
    store.save(rec)
    return rec
