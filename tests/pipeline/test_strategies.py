"""Issue 26 (pipeline part): executed strategies, threshold rules that roll back, scheduled drills,
complete deployment records, output comparison as a stage and a command."""

from __future__ import annotations

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
from deploysignal.pipeline import (DeploymentStore, load_pipeline, read_served_version, run_drill_schedule,
                                   run_pipeline)
from deploysignal.pipeline._runner import _escalate

runner = CliRunner()
HOOK = {"type": "webhook", "url": "http://router/traffic"}


def _spec(tmp: Path, strategy: str, stages: list[dict], **deployment: object) -> Path:
    spec = {"version": 1, "name": "clf", "store": "deploy.sqlite", "stages": stages,
            "deployment": {"incumbent": "v1", "candidate": "v2", "strategy": strategy, **deployment},
            "rollback": {"actuators": [HOOK]}}
    p = tmp / "pipeline.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _pairs(tmp: Path, name: str, better: bool, n: int = 600, seed: int = 0) -> None:
    """Classification outputs on the same inputs: the incumbent right 80% of the time; the candidate
    fixes (better) or breaks (worse) 15% of the inputs and agrees elsewhere."""
    rng = np.random.default_rng(seed)
    with (tmp / name).open("w") as f:
        for i in range(n):
            ref = ["cat", "dog", "bird"][i % 3]
            inc_ok = rng.random() < 0.8
            flip = rng.random() < 0.15
            cand_ok = (inc_ok or flip) if better else (inc_ok and not flip)
            f.write(json.dumps({"input": f"img-{i}", "reference": ref, "incumbent": ref if inc_ok else "fox",
                                "candidate": ref if cand_ok else "fox"}) + "\n")


def _run(p: Path) -> tuple[object, list[dict]]:
    calls: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(json.loads(req.content))
        return httpx.Response(200)

    rec = run_pipeline(load_pipeline(p), p.parent, DeploymentStore(":memory:"),
                       client=httpx.Client(transport=httpx.MockTransport(handler)))
    return rec, calls


def _path(calls: list[dict]) -> list[tuple[str, float, bool]]:
    return [(c["action"], c["candidate_weight"], c["mirror"]) for c in calls]


COMPARE = {"name": "outputs", "type": "compare", "outputs": "pairs{step}.jsonl", "grader": "accuracy"}


@pytest.mark.parametrize("better", [True, False])
def test_direct_serves_everything_at_once_then_watches(tmp_path: Path, better: bool) -> None:
    _pairs(tmp_path, "pairs1.jsonl", better)
    rec, calls = _run(_spec(tmp_path, "direct", [{"name": "go", "type": "actuate", "actuators": [HOOK],
                                                  "watch": [COMPARE]}]))
    if better:
        assert rec.status == "promoted" and _path(calls) == [("promote", 1.0, False)]
    else:  # all traffic was already on the candidate when the watch failed: one switch, one rollback
        assert rec.status == "rolled_back" and _path(calls) == [("promote", 1.0, False), ("rollback", 0.0, False)]
        assert "output comparison (go/outputs step 1): fail" in rec.rollback_reason
    assert calls[0]["version"] == "v2" and rec.strategy == "direct"


def test_shadow_mirrors_first_and_promotes_only_after_the_comparison_passes(tmp_path: Path) -> None:
    _pairs(tmp_path, "pairs1.jsonl", better=True)
    rec, calls = _run(_spec(tmp_path, "shadow", [{"name": "go", "type": "actuate", "actuators": [HOOK], "watch": [COMPARE]}]))
    assert rec.status == "promoted", rec.stages
    assert _path(calls) == [("mirror", 0.0, True), ("promote", 1.0, False)]
    assert calls[0]["version"] == "v1"  # while mirrored, the incumbent serves all live traffic
    cmp = [s for s in rec.stages if s.get("type") == "compare"][0]
    assert cmp["verdict"] == "pass" and cmp["step"] == 1 and cmp["weight"] == 0.0
    assert rec.baseline_metrics["outputs.score"] < rec.deployed_metrics["outputs.score"]

    _pairs(tmp_path, "pairs1.jsonl", better=False)  # a worse candidate never gets live traffic
    rec, calls = _run(tmp_path / "pipeline.yaml")
    assert rec.status == "rolled_back" and _path(calls) == [("mirror", 0.0, True), ("rollback", 0.0, False)]
    assert all(c["candidate_weight"] == 0.0 for c in calls)


def test_canary_steps_traffic_with_the_gate_between_steps_and_rollback_at_step_3(tmp_path: Path) -> None:
    from deploysignal.simulate import simulate
    from deploysignal.sources import write_csv

    write_csv(simulate("healthy", seed=3).baseline, tmp_path / "baseline.csv")
    for step, scenario in ((1, "healthy"), (2, "healthy"), (3, "step")):
        write_csv(simulate(scenario, seed=3).canary, tmp_path / f"canary{step}.csv")
    watch = {"name": "gate", "type": "monitor", "baseline": "baseline.csv", "telemetry": "canary{step}.csv"}
    p = _spec(tmp_path, "canary", [{"name": "rollout", "type": "actuate", "actuators": [HOOK], "watch": [watch]}])
    rec, calls = _run(p)
    assert _path(calls) == [("shift", 0.1, False), ("shift", 0.25, False), ("shift", 0.5, False), ("rollback", 0.0, False)]
    assert [s["verdict"] for s in rec.stages if s.get("type") == "monitor"] == ["proceed", "proceed", "rollback"]
    assert rec.status == "rolled_back" and rec.rollback_reason.startswith("telemetry (rollout/gate step 3)")
    assert rec.strategy == "canary" and rec.baseline_metrics["p99_latency_ms"] > 0


def test_canary_file_actuator_writes_weights_and_needs_a_watch(tmp_path: Path) -> None:
    f = {"type": "file", "path": "served.yaml", "key": "version", "weight_key": "canary_weight"}
    _pairs(tmp_path, "pairs1.jsonl", True)
    for i in (2, 3):
        _pairs(tmp_path, f"pairs{i}.jsonl", True, seed=i)
    p = _spec(tmp_path, "canary", [{"name": "rollout", "type": "actuate", "actuators": [f], "watch": [COMPARE]}],
              steps=[0.2, 0.5, 1.0])
    spec = yaml.safe_load(p.read_text())
    spec["rollback"]["actuators"] = [f]
    p.write_text(yaml.safe_dump(spec))
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"))
    assert rec.status == "promoted"
    assert [(s["action"], s["weight"]) for s in rec.stages if s.get("type") == "actuate"] == [
        ("shift", 0.2), ("shift", 0.5), ("promote", 1.0)]
    assert yaml.safe_load((tmp_path / "served.yaml").read_text()) == {"version": "v2", "canary_weight": 1.0,
                                                                    "candidate": "v2"}
    # a canary that cannot be executed is refused, not run as a label
    for bad, match in (({"watch": []}, "needs watch checks"), ({"actuators": [dict(f, weight_key=None)]}, "weight_key")):
        p = _spec(tmp_path, "canary", [{"name": "rollout", "type": "actuate", "actuators": [f], "watch": [COMPARE]} | bad])
        with pytest.raises(ConfigError, match=match):
            load_pipeline(p)
    with pytest.raises(ConfigError, match="steps"):
        load_pipeline(_spec(tmp_path, "canary", [{"name": "r", "type": "actuate", "actuators": [HOOK], "watch": [COMPARE]}],
                            steps=[0.5, 0.2]))


RULE = {"name": "p99-ceiling", "kind": "max", "metric": "p99_latency_ms", "threshold": 900.0, "consecutive": 3}


def _rule_pipeline(tmp: Path, action: str) -> Path:
    from deploysignal.simulate import simulate
    from deploysignal.sources import write_csv

    sim = simulate("healthy", seed=3)  # the gate proceeds on it; p99 sits near 870 ms with spikes past 900
    write_csv(sim.baseline, tmp / "baseline.csv")
    write_csv(sim.canary, tmp / "canary.csv")
    (tmp / "served.yaml").write_text("version: v1\n")
    f = {"type": "file", "path": "served.yaml", "key": "version"}
    stages = [{"name": "switch", "type": "actuate", "actuators": [f]},
              {"name": "watch", "type": "monitor", "baseline": "baseline.csv", "telemetry": "canary.csv",
               "rules": [dict(RULE, action=action)]}]
    p = _spec(tmp, "direct", stages)
    spec = yaml.safe_load(p.read_text())
    spec["rollback"]["actuators"] = [f]
    p.write_text(yaml.safe_dump(spec))
    return p


def test_rule_set_to_rollback_in_yaml_rolls_back_and_the_record_says_why(tmp_path: Path) -> None:
    p = _rule_pipeline(tmp_path, "rollback")
    res = runner.invoke(app, ["pipeline", "run", str(p)])
    assert res.exit_code == 4, res.output
    assert "rule fired: p99-ceiling (rollback) p99_latency_ms" in res.output
    assert read_served_version(tmp_path / "served.yaml", "version") == "v1"
    rid = res.output.split(":")[0].strip()
    show = runner.invoke(app, ["pipeline", "show", str(tmp_path / "deploy.sqlite"), rid])
    assert show.exit_code == 0, show.output
    rec = json.loads(show.output)
    assert rec["status"] == "rolled_back" and rec["strategy"] == "direct"
    watch = [s for s in rec["stages"] if s["stage"] == "watch"][0]
    assert watch["gate_verdict"] == "proceed" and watch["verdict"] == "rollback"  # the rule, not the gate
    (fired,) = rec["rules_fired"]
    assert fired["rule"] == "p99-ceiling" and fired["observed"] > fired["limit"] == 900.0 and fired["tick"] >= 2
    assert "rule p99-ceiling: p99_latency_ms" in rec["rollback_reason"]
    assert 800 < rec["baseline_metrics"]["p99_latency_ms"] < 900  # the incumbent's mean the decision compared with
    assert rec["deployed_metrics"]["p99_latency_ms"] > rec["baseline_metrics"]["p99_latency_ms"]
    assert rec["error_messages"] == []  # every rule's column is in the telemetry
    # the default rules ran too (warn): the three classical checks are in the stage entry
    hist = runner.invoke(app, ["pipeline", "history", str(tmp_path / "deploy.sqlite")])
    assert "rules_fired=p99-ceiling" in hist.output


def test_warn_rule_only_records_and_cli_escalates_it_to_rollback(tmp_path: Path) -> None:
    p = _rule_pipeline(tmp_path, "warn")
    spec = yaml.safe_load(p.read_text())
    spec["stages"][1]["rules"].append({"name": "typo", "kind": "max", "metric": "p99_latncy_ms", "threshold": 1.0})
    p.write_text(yaml.safe_dump(spec))
    res = runner.invoke(app, ["pipeline", "run", str(p)])
    assert res.exit_code == 0 and "rule fired: p99-ceiling (warn)" in res.output, res.output
    flat = " ".join(res.output.split())  # the console wraps long lines
    assert "rule typo (warn) not evaluated: 'p99_latncy_ms' is not in the telemetry" in flat  # never silent
    (tmp_path / "served.yaml").write_text("version: v1\n")
    res = runner.invoke(app, ["pipeline", "run", str(p), "--rollback-on", "p99-ceiling"])
    assert res.exit_code == 4 and "rule fired: p99-ceiling (rollback)" in res.output, res.output
    assert runner.invoke(app, ["pipeline", "run", str(p), "--rollback-on", "p99-cieling"]).exit_code == 2  # typo


def test_rules_cannot_override_a_rollback(tmp_path: Path) -> None:
    """No rule action, key or option turns a rollback into a promotion; escalation only goes up."""
    p = _rule_pipeline(tmp_path, "rollback")
    spec = yaml.safe_load(p.read_text())
    for bad in ({"action": "promote"}, {"action": "override"}, {"override": True}, {"action": "off"}):
        spec["stages"][1]["rules"] = [RULE | bad]
        p.write_text(yaml.safe_dump(spec))
        with pytest.raises(ConfigError):
            load_pipeline(p)
    spec["stages"][1]["rules"] = [RULE | {"action": "rollback"}]
    p.write_text(yaml.safe_dump(spec))
    loaded = load_pipeline(p)
    for names in (("all",), ("p99-ceiling",)):
        assert _escalate(loaded, names).stages[1].rules[0].action == "rollback"
    help_text = runner.invoke(app, ["pipeline", "run", "--help"]).output
    assert "--warn-on" not in help_text and "--rollback-on" in help_text


def test_scheduled_drill_runs_twice_on_an_injected_clock(tmp_path: Path) -> None:
    f = {"type": "file", "path": "served.yaml", "key": "version"}
    p = _spec(tmp_path, "direct", [{"name": "go", "type": "actuate", "actuators": [f]}])
    spec = yaml.safe_load(p.read_text())
    spec["rollback"]["actuators"] = [f]
    spec["drills"] = {"every_s": 3600, "start_at": 10_000.0}
    p.write_text(yaml.safe_dump(spec))
    now = [9_000.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    def clock() -> float:
        now[0] += 0.25  # every reading advances the injected clock: the drill takes measurable time
        return now[0]

    (tmp_path / "served.yaml").write_text("version: v2\n")
    db = DeploymentStore(tmp_path / "deploy.sqlite")
    recs = run_drill_schedule(load_pipeline(p), tmp_path, db, runs=2, clock=clock, sleep=sleep,
                              verify=lambda: read_served_version(tmp_path / "served.yaml", "version") == "v1")
    assert [r.status for r in recs] == ["drill", "drill"]
    assert [r.scheduled_for for r in recs] == [10_000.0, 13_600.0]
    assert slept[0] == pytest.approx(10_000.0 - 9_000.25) and len(slept) == 2
    assert all(r.started_at >= r.scheduled_for and r.ended_at > r.started_at for r in recs)
    assert [r.id for r in db.history()] == [recs[1].id, recs[0].id]
    assert db.get(recs[1].id).scheduled_for == 13_600.0
    db.close()
    # a failed drill names why
    (tmp_path / "served.yaml").write_text("version: v2\n")
    spec["rollback"]["actuators"].append(HOOK)
    p.write_text(yaml.safe_dump(spec))
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    (rec,) = run_drill_schedule(load_pipeline(p), tmp_path, DeploymentStore(":memory:"), runs=1, clock=clock,
                                sleep=sleep, client=client)
    assert rec.status == "failed" and any("HTTP 503" in e for e in rec.error_messages)


def test_drills_command_records_runs(tmp_path: Path) -> None:
    f = {"type": "file", "path": "served.yaml", "key": "version"}
    p = _spec(tmp_path, "direct", [{"name": "go", "type": "actuate", "actuators": [f]}])
    spec = yaml.safe_load(p.read_text())
    spec["rollback"]["actuators"] = [f]
    p.write_text(yaml.safe_dump(spec))
    (tmp_path / "served.yaml").write_text("version: v2\n")
    res = runner.invoke(app, ["pipeline", "drills", str(p)])
    assert res.exit_code == 2 and "no 'drills' schedule" in res.output
    res = runner.invoke(app, ["pipeline", "drills", str(p), "--runs", "2", "--every", "0.05"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.output.strip().splitlines()]
    assert [r["status"] for r in rows] == ["drill", "drill"]
    assert rows[1]["scheduled_for"] == pytest.approx(rows[0]["scheduled_for"] + 0.05)


@pytest.mark.parametrize("grader, options, make", [
    ("accuracy", [], lambda i, rng: ("cat", "cat" if rng.random() < 0.7 else "dog", "cat" if rng.random() < 0.9 else "dog")),
    ("absolute_error", ["--option", "scale=2.0"], lambda i, rng: (10.0, 10.0 + rng.normal(0, 1.0), 10.0 + rng.normal(0, 0.3))),
    ("similarity", [], lambda i, rng: ("the quick brown fox", "a quick brown cat" if rng.random() < 0.5 else "the quick brown fox",
                                       "the quick brown fox")),
], ids=["classification", "regression", "text"])
def test_compare_command_grades_general_models(tmp_path: Path, grader: str, options: list[str], make) -> None:
    rng = np.random.default_rng(1)
    rows = [make(i, rng) for i in range(800)]
    out = tmp_path / "pairs.jsonl"
    out.write_text("".join(json.dumps({"input": i, "reference": r, "incumbent": a, "candidate": b}) + "\n"
                           for i, (r, a, b) in enumerate(rows)))
    res = runner.invoke(app, ["pipeline", "compare", str(out), "--grader", grader, *options])
    assert res.exit_code == 0, res.output  # the candidate is better: pass
    got = json.loads(res.output.strip().splitlines()[-1])
    assert got["verdict"] == "pass" and got["candidate_mean"] > got["incumbent_mean"]
    swapped = tmp_path / "swapped.jsonl"  # the same outputs the other way round: fail
    swapped.write_text("".join(json.dumps({"input": i, "reference": r, "incumbent": b, "candidate": a}) + "\n"
                               for i, (r, a, b) in enumerate(rows)))
    res = runner.invoke(app, ["pipeline", "compare", str(swapped), "--grader", grader, *options])
    assert res.exit_code == 4 and json.loads(res.output.strip().splitlines()[-1])["verdict"] == "fail", res.output


def test_compare_grader_command_and_callable_errors_name_the_row(tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    out.write_text("".join(json.dumps({"reference": 1, "incumbent": 1, "candidate": 1}) + "\n" for _ in range(50)))
    cmd = ["--grader-command", sys.executable, "--grader-command", "-c", "--grader-command",
           "import sys, json\nfor l in sys.stdin: print(json.dumps({'incumbent': 1, 'candidate': 1}))"]
    res = runner.invoke(app, ["pipeline", "compare", str(out), *cmd])
    assert res.exit_code == 3 and json.loads(res.output.strip().splitlines()[-1])["verdict"] == "inconclusive", res.output
    res = runner.invoke(app, ["pipeline", "compare", str(out), "--grader", "no_such_mod:fn"])
    assert res.exit_code == 2 and "cannot be loaded" in res.output, res.output
    noref = tmp_path / "noref.jsonl"
    noref.write_text(json.dumps({"incumbent": "a", "candidate": "a"}) + "\n")
    res = runner.invoke(app, ["pipeline", "compare", str(noref), "--grader", "exact_match"])
    assert res.exit_code == 2 and "row 1" in res.output and "no 'reference'" in res.output, res.output
    with out.open("a") as f:
        f.write(json.dumps({"reference": 1, "incumbent": 1}) + "\n")
    res = runner.invoke(app, ["pipeline", "compare", str(out), "--grader", "accuracy"])
    assert res.exit_code == 2 and "row 51" in res.output and "candidate" in res.output, res.output
    out.write_text(json.dumps({"reference": "x", "incumbent": 1.0, "candidate": 2.0}) + "\n")
    res = runner.invoke(app, ["pipeline", "compare", str(out), "--grader", "absolute_error"])
    assert res.exit_code == 2 and "row 1" in res.output and "numeric reference" in res.output, res.output
    # a grader that fails inside a pipeline stops it (never a pass): blocked before any switch
    (tmp_path / "pairs1.jsonl").write_text(out.read_text())
    p = _spec(tmp_path, "direct", [{"name": "offline", "type": "compare", "outputs": "pairs1.jsonl",
                                    "grader": "absolute_error"}, {"name": "go", "type": "actuate", "actuators": [HOOK]}])
    rec, calls = _run(p)
    assert rec.status == "blocked" and calls == [] and any("numeric reference" in e for e in rec.error_messages)


def test_no_rule_outcome_turns_a_stop_into_a_pass() -> None:
    """Every combination of gate verdict and rule outcomes: the watch passes only when the gate said
    proceed and no rollback rule fired or went unevaluated."""
    from itertools import product

    from deploysignal.pipeline import RuleOutcome
    from deploysignal.pipeline._rules import combine_verdict

    kinds = [RuleOutcome("r", "m", "max", action, evaluated, fired and evaluated, None, 1.0, 2.0)
             for action, evaluated, fired in product(("warn", "rollback"), (True, False), (True, False))]
    for gate in ("proceed", "extend", "pending", "rollback"):
        for n in (0, 1, 2):
            for combo in product(kinds, repeat=n):
                verdict, _ = combine_verdict(gate, combo)
                blocking = any(o.action == "rollback" and (o.fired or not o.evaluated) for o in combo)
                assert (verdict == "proceed") == (gate == "proceed" and not blocking), (gate, combo, verdict)
                if gate == "rollback" or any(o.fired and o.action == "rollback" for o in combo):
                    assert verdict == "rollback"


def test_drill_slots_are_anchored_and_missed_slots_counted() -> None:
    from deploysignal.pipeline import DrillSchedule, next_slot

    s = DrillSchedule(every_s=100)
    assert next_slot(s, 50.0, None) == (50.0, 0)                  # first run now, anchors the slots
    assert next_slot(s, 51.0, 50.0, 50.0) == (150.0, 0)           # the next slot, not now + 100 after a slow drill
    assert next_slot(s, 480.0, 50.0, 150.0) == (450.0, 2)         # 450 is due: run now; 250, 350 missed, no burst
    t = DrillSchedule(every_s=100, start_at=1000.0)
    assert next_slot(t, 10.0, None) == (1000.0, 0) and next_slot(t, 1000.0, 1000.0, 1000.0) == (1100.0, 0)
