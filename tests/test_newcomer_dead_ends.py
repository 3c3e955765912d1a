"""Issue 25's newcomer dead ends, each tried as a new user would (CLI in process, temporary directories).

Held elsewhere: ``./run cli serve --create`` as the README writes it (tests/service/test_serve_defaults.py),
``audit verify`` on a ``gate --audit`` log (tests/test_issue23_audit_chain.py), scikit-learn and the other
numerical libraries out of ``--version`` / ``gate`` (tests/test_cli_start.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deploysignal.cli import app
from deploysignal.cli._fleet import read_long_csv, write_long_csv

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty working directory that has a docs/ folder (as a checkout of the repository does)."""
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fleet_csv(path: Path, n_ticks: int, *, incident: tuple[int, int] | None = None, seed: int = 0, first_tick: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_ticks, 12, 2))
    if incident is not None:
        x[incident[0]:incident[1]] += 8.0  # fleet-wide incident: every shard at once
    write_long_csv(path, [f"node{i:02d}/gpu0" for i in range(12)], ["util", "temp"], x, list(range(first_tick, first_tick + n_ticks)))


# --- fleet observe: topology of a per-host tool without its host -------------------------------------------------

def test_fleet_observe_nvidia_smi_without_host_is_a_clear_error_not_a_traceback(in_tmp):
    _fleet_csv(in_tmp / "tel.csv", 40)
    (in_tmp / "topo.txt").write_text("\tGPU0\tGPU1\nGPU0\t X \tNV4\nGPU1\tNV4\t X \n", encoding="utf-8")
    for spec, needle in (("nvidia-smi:topo.txt", "say which host it came from: nvidia-smi:topo.txt@HOST"),
                         ("neuron:topo.txt", "neuron:topo.txt@HOST"),
                         ("nvidia-smi:nothere.txt@h1", "no such file 'nothere.txt'"),
                         ("nvidia-smi", "expected KIND:FILE[@HOST]")):
        r = runner.invoke(app, ["fleet", "observe", "tel.csv", "--topology", spec])
        assert r.exit_code == 2, (spec, r.output)
        assert needle in r.output and "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)


def test_fetch_snapshot_refuses_a_per_host_kind_without_its_host():
    from deploysignal import InputError
    from deploysignal.fleet import fetch_snapshot

    with pytest.raises(InputError, match="give the host it came from"):
        fetch_snapshot([("nvidia-smi", "\tGPU0\nGPU0\t X \n")])


# --- fleet curate-baseline -> fleet observe --------------------------------------------------------------------------

def test_curate_baseline_writes_a_curated_baseline_that_observe_takes(in_tmp):
    _fleet_csv(in_tmp / "raw.csv", 400, incident=(100, 180), seed=1)  # 20% of the ticks in an incident
    _fleet_csv(in_tmp / "tel.csv", 60, seed=2, first_tick=400)
    # the raw baseline is refused, and the message says what to do
    r = runner.invoke(app, ["fleet", "observe", "tel.csv", "--baseline", "raw.csv"])
    assert r.exit_code == 2 and "fleet curate-baseline" in r.output and "--output" in r.output, r.output
    # curating without --override halts and writes nothing
    r = runner.invoke(app, ["fleet", "curate-baseline", "raw.csv", "--output", "curated.csv"])
    assert r.exit_code == 2 and not (in_tmp / "curated.csv").exists()
    # accepted with --override: the kept ticks are written, in the telemetry's format, their tick numbers kept
    r = runner.invoke(app, ["fleet", "curate-baseline", "raw.csv", "--override", "--output", "curated.csv"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["status"] == "overridden" and 0 < summary["kept"] <= 320
    shards, signals, cur = read_long_csv(in_tmp / "curated.csv")
    _, _, raw = read_long_csv(in_tmp / "raw.csv")
    assert cur.shape == (summary["kept"], 12, 2) and signals == ["util", "temp"]
    ticks = sorted({int(line.split(",")[0]) for line in (in_tmp / "curated.csv").read_text().splitlines()[1:]})
    assert not any(100 <= t < 180 for t in ticks)  # the incident is gone
    assert np.array_equal(cur, raw[ticks])  # the kept values, bit for bit
    # and observe takes it
    r = runner.invoke(app, ["fleet", "observe", "tel.csv", "--baseline", "curated.csv"])
    assert r.exit_code in (0, 4), r.output
    assert r.exit_code == 0, r.output  # healthy telemetry against a clean baseline: nothing flagged


# --- no writes into ./docs, no hard-coded data path --------------------------------------------------------------------

def test_fleet_coverage_writes_to_a_fresh_directory_by_default(in_tmp, monkeypatch):
    from deploysignal.cli import _fleet

    rows = [{"failure": "shard_drift", "severity": 2.0, "seed": 0, "detected": True, "attributed": True, "delay": 3, "false_flags": 0,
             "power": 1.0, "rack_evidence": None, "named": "host node00"}]
    monkeypatch.setattr(_fleet, "coverage_grid", lambda **kw: rows)  # the grid itself is tests/fleet's (minutes)
    monkeypatch.setattr(_fleet, "detection_envelope", lambda **kw: [])
    r = runner.invoke(app, ["fleet", "coverage"])
    assert r.exit_code == 0, r.output
    written = Path(r.output.split("wrote ", 1)[1].strip())
    assert written.name == "fleet_coverage.md" and written.is_file() and "shard_drift" in written.read_text()
    assert written.parent != in_tmp / "docs" and list((in_tmp / "docs").iterdir()) == []
    r = runner.invoke(app, ["fleet", "coverage", "--out", "out/cov.md"])
    assert r.exit_code == 0 and (in_tmp / "out" / "cov.md").is_file() and "wrote out/cov.md" in r.output


def test_fleet_eval_needs_an_explicit_data_folder(in_tmp):
    r = runner.invoke(app, ["fleet", "eval"])
    assert r.exit_code == 2 and "--data" in r.output  # no default path on somebody else's machine
    r = runner.invoke(app, ["fleet", "eval", "--data", "nowhere"])
    assert r.exit_code == 2 and "--data nowhere: no such directory" in r.output
    assert list((in_tmp / "docs").iterdir()) == []


def test_migrate_eval_writes_to_a_fresh_directory_by_default(in_tmp):
    r = runner.invoke(app, ["migrate", "eval", "--runs", "1", "--scenario", "null"])
    assert r.exit_code == 0, r.output
    written = Path(r.output.split("wrote ", 1)[1].split("\n", 1)[0].strip())
    assert written.name == "migration_eval.md" and written.is_file() and written.parent != in_tmp / "docs"
    assert list((in_tmp / "docs").iterdir()) == []


# --- wording: a CLI argument is not a column ------------------------------------------------------------------------

def test_unknown_fleet_demo_scenario_names_the_argument_not_a_column():
    r = runner.invoke(app, ["fleet", "demo", "nope"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "Invalid value for SCENARIO" in r.output and "column" not in r.output


# --- pipeline run: an example file that runs ---------------------------------------------------------------------------

def test_the_shipped_pipeline_example_runs_as_documented(tmp_path):
    import shutil

    docs = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    assert "examples/pipeline/pipeline.yaml" in docs and "examples/pipeline" in (ROOT / "README.md").read_text(encoding="utf-8")
    work = tmp_path / "pipeline"
    shutil.copytree(ROOT / "examples" / "pipeline", work)
    assert runner.invoke(app, ["simulate", "healthy", "--seed", "3", "-o", str(work)]).exit_code == 0
    r = runner.invoke(app, ["pipeline", "run", str(work / "pipeline.yaml")])
    assert r.exit_code == 0 and "promoted" in r.output, r.output
    assert "version: v2" in (work / "served.yaml").read_text()
    # as documented: put v1 back; a gate that fails blocks promotion before the switch (exit 3), v1 stays
    (work / "served.yaml").write_text((work / "served.yaml").read_text().replace("version: v2", "version: v1"))
    good = (work / "eval_metrics.json").read_text()
    (work / "eval_metrics.json").write_text(json.dumps({"eval_score": 0.7, "p99_latency_ms": 870, "memory_gb": 31.5}))
    r = runner.invoke(app, ["pipeline", "run", str(work / "pipeline.yaml")])
    assert r.exit_code == 3 and "blocked" in r.output and "version: v1" in (work / "served.yaml").read_text()
    # a regression: the watch rolls back and v1 is served again
    (work / "eval_metrics.json").write_text(good)
    assert runner.invoke(app, ["simulate", "step", "--seed", "3", "-o", str(work)]).exit_code == 0
    r = runner.invoke(app, ["pipeline", "run", str(work / "pipeline.yaml")])
    assert r.exit_code == 4 and "version: v1" in (work / "served.yaml").read_text(), r.output


@pytest.mark.parametrize("how", ["missing", "extend"])
def test_a_watch_that_cannot_confirm_the_candidate_after_the_switch_rolls_back(tmp_path, how):
    """The review's repro: the switch stage serves v2, then the watch cannot say proceed (no telemetry,
    or a final extend): the run must not end with v2 served (it ended 'blocked' with v2 served before)."""
    import shutil

    work = tmp_path / "pipeline"
    shutil.copytree(ROOT / "examples" / "pipeline", work)
    assert runner.invoke(app, ["simulate", "healthy", "--seed", "3", "-o", str(work)]).exit_code == 0
    if how == "missing":
        (work / "canary.csv").unlink()
    else:  # ten ticks of a healthy canary: far short of the window, the gate's last word is extend
        lines = (work / "canary.csv").read_text().splitlines()
        (work / "canary.csv").write_text("\n".join(lines[:11]) + "\n")
    r = runner.invoke(app, ["pipeline", "run", str(work / "pipeline.yaml")])
    assert r.exit_code == 4 and "rolled_back" in r.output, r.output
    assert "version: v1" in (work / "served.yaml").read_text()


# --- demo: the reasons in full at 80 columns --------------------------------------------------------------------------

def test_demo_prints_each_reason_whole_at_80_columns():
    r = runner.invoke(app, ["demo", "step", "--seed", "7"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "why:" in lines and max(len(ln) for ln in lines[:lines.index("why:")]) <= 80  # the table fits
    why = [ln for ln in lines[lines.index("why:") + 1:] if ln.startswith("  step, family ")]
    assert why and all("crossed its bound; driven by " in ln or "rule" in ln for ln in why)  # whole, one a line
    assert "…" not in r.output


# --- a wrong JSON file as --config -------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload, needle", [({"signals": [{"name": "p99_latency_ms", "direction": "up"}]}, "its keys: 'signals'"),
                                             ([1, 2], "holds a JSON list"), ({}, "its keys: none")])
def test_a_wrong_json_file_as_config_says_what_a_config_is(tmp_path, payload, needle):
    (tmp_path / "canary.csv").write_text("timestamp,p99_latency_ms\n1700000000,1.0\n", encoding="utf-8")
    (tmp_path / "wrong.json").write_text(json.dumps(payload), encoding="utf-8")
    r = runner.invoke(app, ["gate", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "wrong.json")], env={"COLUMNS": "250"})
    assert r.exit_code == 2, r.output
    msg = " ".join(r.output.split())
    assert "wrong.json: not a compiled config" in msg and needle in msg and "deploysignal calibrate BASELINE -o FILE" in msg
    assert "schema_version None" not in msg


# --- progress display: stderr only, on request or on a terminal; outputs unchanged -------------------------------------

def test_progress_goes_to_stderr_only_and_changes_no_output(tmp_path, monkeypatch, sim_healthy, cfg_healthy):
    from deploysignal.cli import _app
    from deploysignal.sources import write_csv

    write_csv(sim_healthy.canary, tmp_path / "canary.csv")
    write_csv(sim_healthy.baseline, tmp_path / "baseline.csv")
    (tmp_path / "cfg.json").write_text(cfg_healthy.to_json(), encoding="utf-8")
    monkeypatch.setattr(_app, "PROGRESS_TICKS", 10)  # the healthy canary has 300 ticks
    runs = {}
    for flag in ("--progress", "--no-progress", None):
        audit = tmp_path / f"audit{flag}.jsonl"
        args = ["gate", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "cfg.json"), "--json", "--audit", str(audit)]
        r = runner.invoke(app, args + ([flag] if flag else []))
        assert r.exit_code in (0, 3), r.output
        runs[flag] = (r.stdout, r.stderr, audit.read_bytes())
    assert runs["--progress"][0] == runs["--no-progress"][0] == runs[None][0]  # stdout (--json) byte-identical
    assert runs["--progress"][2] == runs["--no-progress"][2] == runs[None][2]  # audit log byte-identical
    assert "gate: ticks" in runs["--progress"][1] and "300/300" in runs["--progress"][1]
    assert "gate: ticks" not in runs[None][1]  # not a terminal, not asked: no bar
    outs = {}
    for flag in ("--progress", "--no-progress"):
        r = runner.invoke(app, ["calibrate", str(tmp_path / "baseline.csv"), "-o", str(tmp_path / f"c{flag}.json"), "--no-robust",
                                "--backtest-windows", "1", flag])
        assert r.exit_code == 0, r.output
        outs[flag] = (r.stdout, (tmp_path / f"c{flag}.json").read_bytes())
        assert ("backtest" in r.stderr and "1/1" in r.stderr) == (flag == "--progress")
    assert outs["--progress"] == outs["--no-progress"]


def test_fleet_eval_says_the_mcd_rounding_warnings_once_and_keeps_other_warnings(in_tmp, monkeypatch):
    """On ASD, 125 MinCovDet fits warned 'Determinant has increased' (sklearn keeps the previous iterate):
    one line per dataset instead of 125 warning blocks; any other warning still comes through."""
    import warnings

    from deploysignal.cli import _fleet

    def fake_eval(d, names, **kw):
        for _ in range(5):
            warnings.warn("Determinant has increased; this should not happen: log(det) > log(previous_det)", RuntimeWarning)
        warnings.warn("something else", UserWarning)
        return ["| table |"]

    monkeypatch.setattr(_fleet, "evaluate_dataset", fake_eval)
    (in_tmp / "data" / "asd").mkdir(parents=True)
    with pytest.warns(UserWarning, match="something else"):
        r = runner.invoke(app, ["fleet", "eval", "--data", "data", "--out", "fe.md"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert r.stderr.count("in 5 MCD fit(s)") == 1 and "Determinant has increased" not in r.stderr
    assert "skipping smd" in r.stderr and "| table |" in (in_tmp / "fe.md").read_text()
