"""Release pipeline: blocking gates without override, actuators, telemetry rollback, records, drills, CLI."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from deploysignal._exceptions import ConfigError
from deploysignal.cli._migration import app
from deploysignal.pipeline import (DeploymentRecord, DeploymentStore, load_pipeline, read_served_version, run_drill,
                                   run_pipeline)

runner = CliRunner()


def _write(tmp: Path, stages: list[dict], **extra: object) -> Path:
    spec = {"version": 1, "name": "nl2sql", "deployment": {"incumbent": "v1", "candidate": "v2", "strategy": "direct"},
            "store": "deploy.sqlite", "stages": stages,
            "rollback": {"actuators": [{"type": "file", "path": "served.yaml", "key": "version"}]}, **extra}
    p = tmp / "pipeline.yaml"
    p.write_text(yaml.safe_dump(spec))
    (tmp / "served.yaml").write_text("version: v1\nreplicas: 3\n")
    return p


GATES = [{"name": "gates", "type": "gate", "metrics_file": "metrics.json",
          "gates": [{"metric": "eval_score", "op": ">=", "threshold": 0.85},
                    {"metric": "p99_latency_ms", "op": "<=", "threshold": 1200},
                    {"metric": "memory_gb", "op": "<=", "threshold": 40},
                    {"metric": "drift_pvalue", "op": ">=", "threshold": 0.01}]},
         {"name": "switch", "type": "actuate", "actuators": [{"type": "file", "path": "served.yaml", "key": "version"}]}]


def test_passing_gates_promote_and_switch_the_served_version(tmp_path: Path) -> None:
    p = _write(tmp_path, GATES)
    (tmp_path / "metrics.json").write_text(json.dumps({"eval_score": 0.9, "p99_latency_ms": 900, "memory_gb": 30,
                                                       "drift_pvalue": 0.4}))
    store = DeploymentStore(":memory:")
    rec = run_pipeline(load_pipeline(p), tmp_path, store)
    assert rec.status == "promoted"
    assert read_served_version(tmp_path / "served.yaml", "version") == "v2"
    assert yaml.safe_load((tmp_path / "served.yaml").read_text())["replicas"] == 3
    assert store.get(rec.id).deployed_metrics["eval_score"] == 0.9


@pytest.mark.parametrize("metrics", [{"eval_score": 0.80, "p99_latency_ms": 900, "memory_gb": 30, "drift_pvalue": 0.4},
                                     {"eval_score": 0.9, "p99_latency_ms": 900, "drift_pvalue": 0.4}])
def test_failing_or_unmeasured_gate_blocks_promotion(tmp_path: Path, metrics: dict) -> None:
    p = _write(tmp_path, GATES)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"))
    assert rec.status == "blocked"
    assert read_served_version(tmp_path / "served.yaml", "version") == "v1"  # the switch stage never ran
    assert [s["stage"] for s in rec.stages] == ["gates"]


def test_executable_gate_command(tmp_path: Path) -> None:
    stages = [{"name": "g", "type": "gate", "gates": [
        {"metric": "eval_score", "op": ">=", "threshold": 0.5,
         "command": [sys.executable, "-c", "import json; print(json.dumps({'eval_score': 0.4}))"]}]}]
    rec = run_pipeline(load_pipeline(_write(tmp_path, stages)), tmp_path, DeploymentStore(":memory:"))
    assert rec.status == "blocked" and rec.stages[0]["checks"][0]["value"] == 0.4


@pytest.mark.parametrize("source", ["metrics_file", "command"])
@pytest.mark.parametrize("payload, error", [
    (b'{"eval_score": 0.9, "note": "\xff"}', "not UTF-8 text (line 1)"),
    (b'{"eval_score": 0.9, "deep": ' + b"[" * 100_000 + b"}", "is not usable JSON (maximum recursion depth exceeded"),
    (b'{"eval_score": 1' + b"0" * 400 + b"}", "value is an integer beyond float range"),
    (b'{"eval_score": 1' + b"0" * 5000 + b"}", "is not usable JSON"),
    (b"[0.9]", None),
], ids=["not-utf8", "deep-nesting", "inf-int", "digit-limit", "not-an-object"])
def test_unmeasured_gate_records_why_and_deep_nesting_blocks(tmp_path: Path, source: str, payload: bytes,
                                                             error: str | None) -> None:
    """Not UTF-8, deeply nested, an integer beyond float range or beyond the JSON digit limit, not an
    object: the gate is not measured and blocks, as for output that is not JSON (no traceback; deep
    nesting was a RecursionError that left the DeploymentRecord 'running'), and the check's 'error'
    says why (it was only in a log line)."""
    (tmp_path / "out.bin").write_bytes(payload)
    check = {"metric": "eval_score", "op": ">=", "threshold": 0.5}
    if source == "command":
        check["command"] = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(open('out.bin', 'rb').read())"]
        stage = {"name": "g", "type": "gate", "gates": [check]}
    else:
        stage = {"name": "g", "type": "gate", "metrics_file": "out.bin", "gates": [check]}
    p = _write(tmp_path, [stage])
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"))
    c = rec.stages[0]["checks"][0]
    assert rec.status == "blocked" and c["reason"] == "not measured" and c["value"] is None
    if error is None:  # a JSON list
        assert c["error"] == ("value is not a number: [0.9]" if source == "command"
                              else "metrics file out.bin does not hold a JSON object"), c
    else:
        assert error in c["error"], c
        if source == "metrics_file" and "UTF-8" in error:
            assert c["error"] == "metrics file out.bin: not UTF-8 text (line 1)"
    res = runner.invoke(app, ["pipeline", "run", str(p)])
    assert res.exit_code == 3 and "Traceback" not in res.output and "blocked" in res.output, res.output
    db = DeploymentStore(tmp_path / "deploy.sqlite")
    try:
        assert [r.status for r in db.history()] == ["blocked"]
    finally:
        db.close()


def test_unmeasured_gate_errors_name_the_cause(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"eval_score": "high", "p99_latency_ms": None}))
    gates = [{"metric": "eval_score", "op": ">=", "threshold": 0.5}, {"metric": "p99_latency_ms", "op": "<=", "threshold": 9},
             {"metric": "memory_gb", "op": "<=", "threshold": 40},
             {"metric": "x", "op": ">=", "threshold": 0, "command": [sys.executable, "-c", "raise SystemExit(3)"]}]
    rec = run_pipeline(load_pipeline(_write(tmp_path, [{"name": "g", "type": "gate", "metrics_file": "metrics.json",
                                                        "gates": gates}])), tmp_path, DeploymentStore(":memory:"))
    assert [c.get("error") for c in rec.stages[0]["checks"]] == [
        "value is not a number: 'high'", "value is not a number: None", "'memory_gb' is not in the metrics file",
        "command exited 3"]
    (tmp_path / "metrics.json").unlink()
    rec = run_pipeline(load_pipeline(tmp_path / "pipeline.yaml"), tmp_path, DeploymentStore(":memory:"))
    assert rec.stages[0]["checks"][0]["error"].startswith("cannot read metrics file metrics.json: No such file")


def test_pipeline_yaml_nested_too_deeply_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "deep.yaml"
    bad.write_text("version: 1\nname: " + "[" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="deep.yaml is not usable YAML: nested too deeply"):
        load_pipeline(bad)
    res = runner.invoke(app, ["pipeline", "run", str(bad)])
    assert res.exit_code == 2 and "nested too deeply" in res.output and "Traceback" not in res.output, res.output


@pytest.mark.parametrize("key", ["skip", "allow_failure", "override", "force"])
def test_no_override_key_in_the_pipeline_schema(tmp_path: Path, key: str) -> None:
    stages = [dict(GATES[0], **{key: True})]
    with pytest.raises(ConfigError, match=key):
        load_pipeline(_write(tmp_path, stages))
    gate = dict(GATES[0], gates=[dict(GATES[0]["gates"][0], **{key: True})])
    with pytest.raises(ConfigError):
        load_pipeline(_write(tmp_path, [gate]))


def test_no_override_path_in_api_or_cli(tmp_path: Path) -> None:
    words = ("skip", "force", "override", "ignore", "bypass", "allow", "no_gate", "unsafe")
    for fn in (run_pipeline, load_pipeline):
        assert not [p for p in inspect.signature(fn).parameters if any(w in p for w in words)]
    res = runner.invoke(app, ["pipeline", "run", "--help"])
    assert res.exit_code == 0
    assert not any(w in res.output.lower() for w in ("--skip", "--force", "--override", "--ignore", "--bypass"))
    # and the CLI halts with exit 3 on a failed gate
    p = _write(tmp_path, GATES)
    (tmp_path / "metrics.json").write_text(json.dumps({"eval_score": 0.1}))
    res = runner.invoke(app, ["pipeline", "run", str(p)])
    assert res.exit_code == 3, res.output
    assert "blocked" in res.output
    res = runner.invoke(app, ["pipeline", "run", str(p), "--force"])
    assert res.exit_code == 2


def test_webhook_and_command_actuators_and_telemetry_rollback(tmp_path: Path) -> None:
    from deploysignal.simulate import simulate

    sim = simulate("step", seed=3)
    base, canary = sim.baseline, sim.canary
    from deploysignal.sources import write_csv

    write_csv(base, tmp_path / "baseline.csv")
    write_csv(canary, tmp_path / "canary.csv")
    stages = [{"name": "switch", "type": "actuate", "actuators": [{"type": "file", "path": "served.yaml", "key": "version"}]},
              {"name": "watch", "type": "monitor", "baseline": "baseline.csv", "telemetry": "canary.csv",
               "rules": [{"name": "always", "kind": "max", "metric": "p99_latency_ms", "threshold": 0.0,
                          "consecutive": 1}]}]  # a warn rule that fires at once beside the gate's rollback
    p = _write(tmp_path, stages)
    spec = yaml.safe_load(p.read_text())
    spec["rollback"]["actuators"] += [{"type": "webhook", "url": "http://deploy/rollback"},
                                      {"type": "command", "argv": [sys.executable, "-c",
                                       "import os; open('cmd.txt','w').write(os.environ['DEPLOYSIGNAL_VERSION'])"]}]
    p.write_text(yaml.safe_dump(spec))
    calls: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(json.loads(req.content))
        return httpx.Response(200)

    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"),
                       client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert rec.status == "rolled_back", rec.stages
    assert rec.rollback_reason.startswith("telemetry")
    assert [(r["rule"], r["action"], r["tick"]) for r in rec.rules_fired] == [("always", "warn", 0)]
    assert "rule always" not in rec.rollback_reason  # the gate's rollback, with a warning beside it
    assert read_served_version(tmp_path / "served.yaml", "version") == "v1"
    assert (tmp_path / "cmd.txt").read_text() == "v1"
    assert calls and calls[0]["action"] == "rollback" and calls[0]["version"] == "v1"
    assert rec.rollback_duration_s is not None and rec.rollback_duration_s >= 0


def test_failed_webhook_marks_drill_failed(tmp_path: Path) -> None:
    p = _write(tmp_path, GATES)
    spec = yaml.safe_load(p.read_text())
    spec["rollback"]["actuators"].append({"type": "webhook", "url": "http://deploy/rollback"})
    p.write_text(yaml.safe_dump(spec))
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    rec = run_drill(load_pipeline(p), tmp_path, DeploymentStore(":memory:"), client=client)
    assert rec.status == "failed"


def test_store_round_trip_and_history(tmp_path: Path) -> None:
    db = DeploymentStore(tmp_path / "h.sqlite")
    for i in range(3):
        db.save(DeploymentRecord(id=f"d{i}", pipeline="p", incumbent_version="v1", candidate_version="v2",
                                 strategy="canary", started_at=float(i), status="promoted",
                                 baseline_metrics={"eval_score": 0.8}, deployed_metrics={"eval_score": 0.9}))
    db.close()
    db = DeploymentStore(tmp_path / "h.sqlite")
    assert [r.id for r in db.history()] == ["d2", "d1", "d0"]
    assert db.get("d1").baseline_metrics == {"eval_score": 0.8}
    res = runner.invoke(app, ["pipeline", "history", str(tmp_path / "h.sqlite")])
    assert res.exit_code == 0 and "d2" in res.output


def test_bad_pipeline_files_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    for text in ("version: 2\n", ": : :\n", "[1, 2]\n"):
        bad.write_text(text)
        res = runner.invoke(app, ["pipeline", "run", str(bad)])
        assert res.exit_code == 2 and "Traceback" not in res.output
    assert runner.invoke(app, ["pipeline", "run", str(tmp_path / "missing.yaml")]).exit_code == 2
    bad.write_bytes(b"version: 1\nname: caf\xe9\n")  # Latin-1, not UTF-8
    res = runner.invoke(app, ["pipeline", "run", str(bad)])
    assert res.exit_code == 2 and "not UTF-8" in res.output and "Traceback" not in res.output, res.output
    with pytest.raises(ConfigError, match="bad.yaml is not UTF-8"):
        load_pipeline(bad)


def test_end_to_end_drill_from_onset_to_incumbent(tmp_path: Path) -> None:
    """CLI drill: regression onset -> protocol rollback -> router and served-version file back on v1."""
    p = _write(tmp_path, GATES)
    (tmp_path / "served.yaml").write_text("version: v2\n")
    res = runner.invoke(app, ["drill", str(p), "--seed", "2"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output.strip().splitlines()[-1])
    assert rep["ok"] and rep["rollback_reason"] in ("harm", "detector")
    assert rep["decision_to_incumbent_s"] < 5.0  # goal: < 5 s after the decision (measured, recorded below)
    assert read_served_version(tmp_path / "served.yaml", "version") == "v1"
    db = DeploymentStore(tmp_path / "deploy.sqlite")
    rec = db.get(rep["record_id"])
    assert rec.status == "drill" and rec.rollback_duration_s is not None
    print(f"drill: onset->incumbent {rep['onset_to_incumbent_s']:.3f}s, decision->incumbent "
          f"{rep['decision_to_incumbent_s']:.4f}s, actuators {rec.rollback_duration_s:.4f}s")


def test_monitor_held_by_the_run_time_check_says_why(tmp_path: Path) -> None:
    """Review finding 4 (issue 22): a healthy canary whose daily cycle runs an hour later than the
    baseline's (timestamps moved by +1 h) makes the one-sample run-time model check fire; the monitor
    stage is then held at extend and its record must say why (the check's status, with its tick), not ""."""
    from deploysignal.simulate import NoiseSpec, simulate
    from deploysignal.sources import write_csv
    from deploysignal.telemetry import Frame

    sim = simulate("healthy", seed=0, baseline_ticks=4320, canary_ticks=480, noise=NoiseSpec(diurnal=2.0))
    write_csv(sim.baseline, tmp_path / "baseline.csv")
    write_csv(Frame(sim.canary.timestamps + 3600.0, sim.canary.values, sim.canary.signals), tmp_path / "canary.csv")
    p = _write(tmp_path, [{"name": "watch", "type": "monitor", "baseline": "baseline.csv", "telemetry": "canary.csv"}])
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"))
    stage = rec.stages[-1]
    assert rec.status == "blocked" and stage["verdict"] == "extend", rec.stages
    assert stage["reason"].startswith("one-sample, uncertified at tick "), stage
    assert "run-time model check" in stage["reason"]
