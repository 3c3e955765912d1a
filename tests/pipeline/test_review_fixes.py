"""Review of the pipeline part of issue 26: exceptions after a switch, sparse rule columns, steps
without canary, drills under cron, rollback coverage and verification, candidate versions in traffic
files and compare outputs, grader loading and scores."""

from __future__ import annotations

import csv
import json
import re
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from deploysignal._exceptions import ConfigError, InputError
from deploysignal.cli._migration import app
from deploysignal.pipeline import (DeploymentStore, GraderSpec, ThresholdRule, evaluate_rules, load_pipeline,
                                   run_drill_schedule, run_pipeline)

runner = CliRunner()
HOOK = {"type": "webhook", "url": "http://router/traffic"}
SERVED = {"type": "file", "path": "served.yaml", "key": "version", "weight_key": "w"}
ROOT = Path(__file__).resolve().parents[2]


def _write(tmp: Path, strategy: str, stages: list[dict], rollback: list[dict] | None = None, **extra: object) -> Path:
    dep = {"incumbent": "v1", "candidate": "v2", "strategy": strategy} | extra.pop("deployment", {})
    spec = {"version": 1, "name": "clf", "store": "deploy.sqlite", "stages": stages, "deployment": dep,
            "rollback": {"actuators": rollback or [SERVED]}, **extra}
    p = tmp / "pipeline.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _pairs(tmp: Path, name: str, n: int = 300, **extra: object) -> None:
    """A candidate that fixes 15% of the incumbent's errors on the same inputs (passes the comparison)."""
    rng = np.random.default_rng(0)
    with (tmp / name).open("w") as f:
        for i in range(n):
            inc = rng.random() < 0.8
            cand = inc or rng.random() < 0.5
            f.write(json.dumps({"input": i, "reference": "a", "incumbent": "a" if inc else "b",
                                "candidate": "a" if cand else "b", **extra}) + "\n")


def _canary(tmp: Path, grader: object = "accuracy") -> Path:
    for s in (1, 2, 3):
        _pairs(tmp, f"pairs{s}.jsonl")
    watch = {"name": "out", "type": "compare", "outputs": "pairs{step}.jsonl", "grader": grader}
    return _write(tmp, "canary", [{"name": "rollout", "type": "actuate", "actuators": [SERVED], "watch": [watch]}],
                  deployment={"steps": [0.1, 0.5, 1.0]})


def _served(tmp: Path) -> dict:
    return yaml.safe_load((tmp / "served.yaml").read_text())


# --- 1: any exception once traffic has moved -------------------------------------------------------

def test_an_unexpected_check_exception_after_the_switch_rolls_back_and_fails(tmp_path: Path, monkeypatch) -> None:
    import deploysignal.pipeline._compare as cmp

    real, calls = cmp.compare_outputs, []

    def odd(*a: object, **k: object) -> object:
        calls.append(1)
        if len(calls) == 2:  # step 2: the candidate has 50% of live traffic
            raise ValueError("something odd")
        return real(*a, **k)

    monkeypatch.setattr(cmp, "compare_outputs", odd)
    p = _canary(tmp_path)
    res = runner.invoke(app, ["pipeline", "run", str(p)])
    assert res.exit_code == 5, res.output
    assert "unexpected error: ValueError: something odd" in res.output
    assert _served(tmp_path) == {"version": "v1", "w": 0.0, "candidate": "v2"}  # back on the incumbent
    (rec,) = DeploymentStore(tmp_path / "deploy.sqlite").history()
    assert rec.status == "failed" and rec.stages[-1]["stage"] == "rollback" and rec.stages[-1]["verified"]
    assert any("ValueError: something odd" in e for e in rec.error_messages)


@pytest.mark.parametrize("body", ["def grade(i, o, r)\n    return 1.0\n", "raise ValueError('bad config')\n",
                                  "import sys\nsys.exit(3)\n"], ids=["syntax", "value-error", "exit"])
def test_a_grader_failing_at_import_is_a_config_error_before_any_traffic_moves(tmp_path: Path, monkeypatch,
                                                                                body: str) -> None:
    mod = f"badgrader_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{mod}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    p = _canary(tmp_path, f"{mod}:grade")
    res = runner.invoke(app, ["pipeline", "run", str(p)])
    assert res.exit_code == 2 and f"grader '{mod}:grade' cannot be loaded" in res.output, res.output
    assert not (tmp_path / "served.yaml").exists()  # nothing switched
    _pairs(tmp_path, "outs.jsonl")
    res = runner.invoke(app, ["pipeline", "compare", str(tmp_path / "outs.jsonl"), "--grader", f"{mod}:grade"])
    assert res.exit_code == 2 and "cannot be loaded" in res.output and "Traceback" not in res.output


def test_an_actuator_reading_an_odd_file_fails_the_run_after_the_rollback(tmp_path: Path) -> None:
    deep = {"type": "file", "path": "router.json", "key": "version", "weight_key": "w"}
    _pairs(tmp_path, "pairs1.jsonl")
    watch = {"name": "out", "type": "compare", "outputs": "pairs{step}.jsonl", "grader": "accuracy"}
    p = _write(tmp_path, "canary", [{"name": "r", "type": "actuate", "actuators": [SERVED, deep], "watch": [watch]}],
               rollback=[SERVED, deep])
    (tmp_path / "router.json").write_text("[" * 100_000 + "]" * 100_000)  # too deep for the JSON parser
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"))
    assert rec.status == "failed" and any("RecursionError" in e for e in rec.error_messages), rec.error_messages
    assert _served(tmp_path) == {"version": "v1", "w": 0.0, "candidate": "v2"}


# --- 2: rollback rules on empty and sparse columns --------------------------------------------------

def test_rules_on_empty_and_sparse_columns() -> None:
    r = ThresholdRule(kind="min", metric="succ", threshold=0.7, consecutive=3, action="rollback")
    nan = np.nan
    empty, few = evaluate_rules([r], {}, {"succ": np.full(50, nan)})[0], evaluate_rules(
        [r], {}, {"succ": np.array([0.1, nan, 0.1, nan])})[0]
    assert not empty.evaluated and "0 measured tick(s), fewer than the 3" in empty.error
    assert not few.evaluated and "2 measured" in few.error
    sparse = np.where(np.arange(40) % 2 == 0, 0.1, nan)  # every measured tick far below 0.7
    o = evaluate_rules([r], {}, {"succ": sparse})[0]
    assert o.evaluated and o.fired and o.tick == 4 and o.observed == 0.1  # third measured tick
    healthy = np.where(np.arange(40) % 2 == 0, 0.9, nan)
    assert not evaluate_rules([r], {}, {"succ": healthy})[0].fired


@pytest.mark.extended  # 14 CPU-s (baseline compile + gate); CI: test_rules_on_empty_and_sparse_columns, same rule code
def test_a_rollback_rule_on_an_empty_column_stops_the_run(tmp_path: Path) -> None:
    from deploysignal.simulate import simulate
    from deploysignal.sources import write_csv

    sim = simulate("healthy", seed=3)
    write_csv(sim.baseline, tmp_path / "baseline.csv")
    write_csv(sim.canary, tmp_path / "full.csv")
    with (tmp_path / "full.csv").open() as f:
        rows = list(csv.reader(f))
    j = rows[0].index("tool_success_rate")
    with (tmp_path / "canary.csv").open("w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [r[:j] + [""] + r[j + 1:] for r in rows[1:]])
    rule = {"kind": "min", "metric": "tool_success_rate", "threshold": 0.7, "action": "rollback"}
    f = {"type": "file", "path": "served.yaml", "key": "version"}
    p = _write(tmp_path, "direct", [{"name": "go", "type": "actuate", "actuators": [f]},
                                    {"name": "watch", "type": "monitor", "baseline": "baseline.csv",
                                     "telemetry": "canary.csv", "rules": [rule]}], rollback=[f])
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"))
    assert rec.status == "rolled_back", rec.stages
    assert "rollback rule tool_success_rate-min not evaluated" in rec.rollback_reason
    assert any("0 measured tick(s)" in e for e in rec.error_messages)


# --- 3: steps without canary ---------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["direct", "shadow", None])
def test_steps_without_a_canary_are_refused(tmp_path: Path, strategy: str | None) -> None:
    dep = {"steps": [0.1, 0.5, 1.0]} | ({"strategy": strategy} if strategy else {})
    p = _write(tmp_path, "direct", [{"name": "go", "type": "actuate", "actuators": [HOOK]}], rollback=[HOOK])
    spec = yaml.safe_load(p.read_text())
    spec["deployment"] = {"incumbent": "v1", "candidate": "v2", **dep}
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="deployment: steps are the traffic shares of a canary"):
        load_pipeline(p)


# --- 4, 5, 13: drills -----------------------------------------------------------------------------

def _drill_pipeline(tmp: Path, every: float, start_at: float | None, rollback: list[dict] | None = None) -> Path:
    f = {"type": "file", "path": "served.yaml", "key": "version"}
    drills = {"every_s": every} | ({"start_at": start_at} if start_at is not None else {})
    (tmp / "served.yaml").write_text("version: v2\n")
    return _write(tmp, "direct", [{"name": "go", "type": "actuate", "actuators": [f]}], rollback=rollback or [f],
                  drills=drills)


def test_a_due_drill_runs_now_and_missed_slots_come_from_the_store(tmp_path: Path) -> None:
    p = _drill_pipeline(tmp_path, 100.0, 1_000.0)
    now, slept, printed = [1_005.0], [], []

    def clock() -> float:
        now[0] += 0.25
        return now[0]

    def sleep(s: float) -> None:
        assert len(printed) == 1  # the first record was handed out before the wait for the next slot
        slept.append(s)
        now[0] += s

    db = DeploymentStore(tmp_path / "deploy.sqlite")
    spec = load_pipeline(p)
    (rec,) = run_drill_schedule(spec, tmp_path, db, runs=1, clock=clock, sleep=sleep, on_record=printed.append)
    assert slept == [] and rec.scheduled_for == 1_000.0 and rec.status == "drill"  # the due slot ran at once
    assert rec.rollback_duration_s == 0.25  # from the injected clock (two readings), not a wall clock
    now[0] = 1_350.0  # a later cron run: slots 1100 and 1200 were missed, 1300 is due
    printed.clear()
    recs = run_drill_schedule(spec, tmp_path, db, runs=2, clock=clock, sleep=sleep, on_record=printed.append)
    assert [r.scheduled_for for r in recs] == [1_300.0, 1_400.0] and len(printed) == 2
    assert [r.stages[-1]["missed_slots"] for r in recs] == [2, 0]
    assert len(slept) == 1 and 48.0 < slept[0] < 50.0  # the second waits for its slot, 1400


def test_a_drill_whose_served_file_cannot_be_read_is_a_recorded_failure(tmp_path: Path) -> None:
    other = {"type": "file", "path": "other.yaml", "key": "version"}
    p = _drill_pipeline(tmp_path, 60.0, None, rollback=[{"type": "file", "path": "served.yaml", "key": "version"},
                                                         other])
    res = runner.invoke(app, ["pipeline", "drills", str(p), "--runs", "1"])
    assert res.exit_code == 0, res.output
    (tmp_path / "other.yaml").write_text("- a\n- b\n")  # a list: the actuator refuses it, verify cannot read it
    res = runner.invoke(app, ["pipeline", "drills", str(p), "--runs", "1", "--every", "0.01"])
    assert res.exit_code == 5 and "Traceback" not in res.output, res.output
    row = json.loads(res.output.strip().splitlines()[-1])
    assert row["status"] == "failed"
    assert any("verify: other.yaml: cannot read the served version (TypeError" in e for e in row["errors"]), row
    assert DeploymentStore(tmp_path / "deploy.sqlite").get(row["record_id"]).status == "failed"


def test_the_example_pipeline_comment_matches_the_drills_command() -> None:
    text = (ROOT / "examples" / "pipeline" / "pipeline.yaml").read_text()
    assert "--runs 2` runs the rollback path" not in text and "--runs 1" in text


# --- 6, 9, 15: graders ---------------------------------------------------------------------------------

def test_the_documented_grader_yaml_lines_load() -> None:
    docs = (ROOT / "docs" / "pipeline.md").read_text()
    lines = re.findall(r"^\| `(\{callable: [^`]+\}|\"?[\w.:]+\"?)` \|", docs, flags=re.M)
    assert any("absolute_error" in x for x in lines), lines
    for line in lines:
        g = GraderSpec.model_validate(yaml.safe_load(line))
        assert g.callable is not None and g.callable.count(":") == 1
    g = GraderSpec.model_validate(yaml.safe_load("{callable: absolute_error, options: {scale: 2.0}}"))
    assert g.callable == "deploysignal.pipeline.graders:absolute_error" and g.options == {"scale": 2.0}


@pytest.mark.parametrize("score", [np.float32(0.5), np.float64(1.0), Decimal("0.25"), np.int64(1)])
def test_numeric_like_grader_scores_are_accepted(score: object) -> None:
    from deploysignal.pipeline._compare import _score

    assert _score(score, 1, "candidate") == float(score)
    for bad in (True, np.bool_(True), "0.5", Decimal("NaN"), np.float32(1.5), 10**400):
        with pytest.raises(InputError, match="not a number in"):
            _score(bad, 1, "candidate")


# --- 7, 8: rollback coverage, verification, candidate versions ----------------------------------------

def test_a_traffic_file_must_be_reset_by_a_rollback_file_actuator_with_the_same_keys(tmp_path: Path) -> None:
    watch = {"name": "out", "type": "compare", "outputs": "pairs{step}.jsonl", "grader": "accuracy"}
    stage = {"name": "rollout", "type": "actuate", "actuators": [SERVED], "watch": [watch]}
    for rollback, match in (([HOOK], "no rollback file actuator resets served.yaml"),
                            ([dict(SERVED, key="served")], "key 'version' vs 'served'"),
                            ([dict(SERVED, candidate_key="cand")], "candidate_key 'candidate' vs 'cand'")):
        with pytest.raises(ConfigError, match=match):
            load_pipeline(_write(tmp_path, "canary", [stage], rollback=rollback))


def test_a_pipeline_rollback_that_does_not_restore_the_file_is_failed(tmp_path: Path) -> None:
    p = _canary(tmp_path)
    undo = {"type": "command", "argv": ["sh", "-c", "printf 'version: v2\\nw: 1.0\\n' > served.yaml"]}
    spec = yaml.safe_load(p.read_text())
    spec["rollback"]["actuators"].append(undo)  # something rewrites the file after the reset
    p.write_text(yaml.safe_dump(spec))
    (tmp_path / "pairs2.jsonl").unlink()  # step 2 cannot be checked: stop, roll back
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"))
    assert rec.status == "failed" and rec.stages[-1]["verified"] is False
    assert "rollback not verified: served.yaml: serves 'v2', not the incumbent 'v1'" in rec.error_messages


def test_compare_outputs_of_another_revision_are_refused(tmp_path: Path) -> None:
    p = _canary(tmp_path)
    _pairs(tmp_path, "pairs1.jsonl", incumbent_version="v1", candidate_version="v2")  # named and matching: used
    _pairs(tmp_path, "pairs2.jsonl", incumbent_version="v1", candidate_version="v0")  # left over from v0
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"))
    assert rec.status == "rolled_back"
    assert [s.get("verdict") for s in rec.stages if s.get("type") == "compare"] == ["pass", "not evaluated"]
    assert any("outputs of candidate 'v0', but this deployment's is 'v2'" in e for e in rec.error_messages)
    assert _served(tmp_path) == {"version": "v1", "w": 0.0, "candidate": "v2"}


# --- 10: a failing check before any switch ------------------------------------------------------------

def test_a_failing_compare_before_any_switch_blocks_without_rollback(tmp_path: Path) -> None:
    with (tmp_path / "pairs.jsonl").open("w") as f:  # the candidate breaks 30% of what the incumbent gets right
        for i in range(400):
            f.write(json.dumps({"reference": "a", "incumbent": "a", "candidate": "b" if i % 10 < 3 else "a"}) + "\n")
    calls: list[dict] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda r: calls.append(json.loads(r.content)) or httpx.Response(200)))
    p = _write(tmp_path, "direct", [{"name": "pre", "type": "compare", "outputs": "pairs.jsonl", "grader": "accuracy"},
                                    {"name": "go", "type": "actuate", "actuators": [HOOK]}], rollback=[HOOK])
    rec = run_pipeline(load_pipeline(p), tmp_path, DeploymentStore(":memory:"), client=client)
    assert rec.status == "blocked" and calls == [] and rec.rollback_reason.startswith("output comparison (pre): fail")


def test_rollback_on_all_without_any_rule_is_refused(tmp_path: Path) -> None:
    from deploysignal.pipeline._runner import _escalate

    spec = load_pipeline(_write(tmp_path, "direct", [{"name": "go", "type": "actuate", "actuators": [HOOK]}],
                                rollback=[HOOK]))
    with pytest.raises(ConfigError, match="--rollback-on all: the pipeline has no threshold rules"):
        _escalate(spec, ["all"])


def test_a_pipeline_without_any_check_is_warned_about(tmp_path: Path) -> None:
    f = {"type": "file", "path": "served.yaml", "key": "version"}
    p = _write(tmp_path, "direct", [{"name": "go", "type": "actuate", "actuators": [f]}], rollback=[f])
    res = runner.invoke(app, ["pipeline", "run", str(p)])
    assert res.exit_code == 0 and "warning: pipeline clf has no monitor or compare check" in res.output, res.output
    _pairs(tmp_path, "pairs1.jsonl")
    p = _canary(tmp_path)
    assert "warning" not in runner.invoke(app, ["pipeline", "run", str(p)]).output


def test_accuracy_compares_numeric_labels_by_value() -> None:
    from deploysignal.pipeline.graders import accuracy

    assert accuracy(None, 1.0, 1) == accuracy(None, 1, 1.0) == accuracy(None, " cat ", "cat") == 1.0
    assert accuracy(None, True, 1) == accuracy(None, "1", 1) == accuracy(None, 2, 1) == 0.0
