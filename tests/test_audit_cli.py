"""Audit records, replay, and the CLI contract (exit codes, --json, bad input without tracebacks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deploysignal.cli import app
from deploysignal.sources import write_csv
from deploysignal.telemetry import Frame

runner = CliRunner()

AUDIT_FIELDS = {
    "cell_key", "baseline_version", "schema_continuity", "family", "statistic", "log_wealth", "threshold",
    "alpha_allocated", "alpha_consumed", "alpha_remaining", "fire", "fire_reason", "timestamp", "tick",
}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    d = tmp_path_factory.mktemp("step")
    r = runner.invoke(app, ["simulate", "step", "--seed", "4", "-o", str(d)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["calibrate", str(d / "baseline.csv"), "-o", str(d / "cfg.json"), "--seed", "4"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().startswith("cc-")
    return d


def test_simulate_writes_truth(scenario):
    truth = json.loads((scenario / "truth.json").read_text())
    assert truth["expected"] == "rollback" and truth["scenario"] == "step"


def test_gate_json_exit_code_and_audit_replay(scenario):
    audit = scenario / "audit.jsonl"
    r = runner.invoke(app, ["gate", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(audit), "--json"])
    assert r.exit_code == 4, r.output
    last = json.loads(r.output.strip().splitlines()[-1])
    assert last["verdict"] == "rollback" and last["fired_families"] == ["A"]
    assert isinstance(last["decided_at_tick"], int) and last["baseline_version"].startswith("cc-")
    lines = audit.read_text().splitlines()  # hash-chained since 0.4.1: {"hash", "prev", "record"} per line
    header, recs = json.loads(lines[0])["record"], [json.loads(x)["record"] for x in lines[1:]]
    assert header["family"] == "header"
    fam = [x for x in recs if x["family"] != "gate"]
    assert AUDIT_FIELDS <= set(fam[0])
    assert {x["family"] for x in recs} == {"A", "B", "C", "D", "E", "gate"}
    assert len([x for x in recs if x["family"] == "gate"]) == last["ticks"]
    # replay reproduces every record byte for byte
    r = runner.invoke(app, ["replay", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(audit)])
    assert r.exit_code == 0, r.output
    # a second run writes the identical file
    audit2 = scenario / "audit2.jsonl"
    runner.invoke(app, ["gate", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(audit2)])
    assert audit2.read_bytes() == audit.read_bytes()
    # tampering is found
    bad = scenario / "tampered.jsonl"
    env = json.loads(lines[10])
    rec = env["record"]
    rec["log_wealth"] = (rec["log_wealth"] or 0.0) + 1e-9

    def line(e, r):  # a chained line holding record r under envelope e's hashes
        return json.dumps(dict(e, record=r), sort_keys=True, separators=(",", ":"))

    bad.write_text("\n".join(lines[:10] + [line(env, rec)] + lines[11:]) + "\n")
    r = runner.invoke(app, ["replay", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(bad)])
    assert r.exit_code == 1 and "audit line 11" in r.output and "log_wealth" in r.output
    # a log written by another library version: the mismatch says so
    other = scenario / "other_version.jsonl"
    hdr = dict(header, gate_version="0.1.0")
    other.write_text("\n".join([line(json.loads(lines[0]), hdr)] + lines[1:10] + [line(env, rec)] + lines[11:]) + "\n")
    r = runner.invoke(app, ["replay", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(other)])
    assert r.exit_code == 1 and "written by deploysignal 0.1.0" in r.output
    short = scenario / "short.jsonl"
    short.write_text("\n".join(lines[:-3]) + "\n")
    r = runner.invoke(app, ["replay", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(short)])
    assert r.exit_code == 1


def test_gate_healthy_and_two_sample(tmp_path):
    r = runner.invoke(app, ["simulate", "healthy", "--seed", "9", "-o", str(tmp_path)])
    runner.invoke(app, ["calibrate", str(tmp_path / "baseline.csv"), "-o", str(tmp_path / "cfg.json"), "--no-robust"])
    r = runner.invoke(app, ["gate", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "cfg.json"), "--json"])
    assert r.exit_code in (0, 3) and json.loads(r.output.splitlines()[-1])["verdict"] in ("proceed", "extend")
    r = runner.invoke(app, ["gate", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "cfg.json"), "--control", str(tmp_path / "control.csv"), "--json"])
    assert r.exit_code in (0, 3)
    r = runner.invoke(app, ["gate", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "cfg.json"), "--window", "1000", "--json"])
    out = json.loads(r.output.splitlines()[-1])
    assert r.exit_code == 3 and out["verdict"] == "extend" and out["decided_at_tick"] is None


def _bad_files(d, signals):
    ts = np.arange(5) * 60.0 + 1.7e9
    good = "timestamp," + ",".join(signals) + "\n" + "\n".join(f"{t}," + ",".join("1" for _ in signals) for t in ts) + "\n"
    rows = good.splitlines()
    files = {
        "wrong_type.csv": "\n".join(rows[:2] + [rows[2].replace(",1", ",abc", 1)] + rows[3:]) + "\n",
        "order.csv": "\n".join([rows[0], rows[2], rows[1]] + rows[3:]) + "\n",
        "missing_col.csv": "\n".join(",".join(r.split(",")[:-1]) for r in rows) + "\n",
        "all_nan.csv": "\n".join([rows[0]] + [",".join(r.split(",")[:-1] + [""]) for r in rows[1:]]) + "\n",
        "empty.csv": "",
        "header_only.csv": rows[0] + "\n",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    return files


@pytest.mark.parametrize("name, needle", [
    ("wrong_type.csv", "expected a number"),
    ("order.csv", "strictly increasing"),
    ("missing_col.csv", "lacks signal columns"),
    ("all_nan.csv", "all missing"),
    ("empty.csv", "empty"),
    ("header_only.csv", "no data rows"),
])
def test_bad_input_exit_2_no_traceback(scenario, tmp_path, name, needle):
    cfg = json.loads((scenario / "cfg.json").read_text())
    _bad_files(tmp_path, [s["name"] for s in cfg["signals"]])
    r = runner.invoke(app, ["gate", str(tmp_path / name), "-c", str(scenario / "cfg.json")])
    assert r.exit_code == 2
    assert needle in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_bad_config_and_baseline(tmp_path, scenario):
    (tmp_path / "cfg.json").write_text('{"schema_version": 1, "junk": 2}')
    r = runner.invoke(app, ["gate", str(scenario / "canary.csv"), "-c", str(tmp_path / "cfg.json")])
    assert r.exit_code == 2 and "compiled config" in r.output
    r = runner.invoke(app, ["calibrate", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = runner.invoke(app, ["gate", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--alpha", "2"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["simulate", "nosuch", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "unknown scenario" in r.output


def test_demo_and_bench_run():
    r = runner.invoke(app, ["demo", "step", "--seed", "3"])
    assert r.exit_code == 0 and "rollback" in r.output
    r = runner.invoke(app, ["bench", "--ticks", "200", "--json"])
    res = json.loads(r.output.splitlines()[-1])
    assert r.exit_code == 0 and {(x["mode"], x["path"]) for x in res["results"]} == {
        (m, p) for m in ("one-sample", "two-sample") for p in ("update", "run_batch", "update_many/200")
    }
    assert all(x["median_us"] > 0 and x["p99_us"] >= x["median_us"] for x in res["results"])
    # the kernel floor times every part a tick runs: the standardizer and each family the gate runs
    assert [f["mode"] for f in res["floor"]] == ["one-sample", "two-sample"]
    for f in res["floor"]:
        assert set(f["us_per_tick"]) == {"standardise", *res["results"][0]["families"]} and f["ticks"] == 400
        assert all(v > 0 for v in f["us_per_tick"].values()) and f["total_us"] == pytest.approx(sum(f["us_per_tick"].values()))
    r = runner.invoke(app, ["bench", "--ticks", "200"])
    assert r.exit_code == 0 and "kernel floor" in r.output and "update_many/200" in r.output


def test_cohort_column_routes_to_tier_cells(tmp_path):
    rng = np.random.default_rng(0)
    n = 1500
    ts = np.repeat(np.arange(n) * 60.0 + 1.7e9, 2)
    coh = np.tile(np.array(["a", "b"]), n)
    vals = rng.normal(size=(2 * n, 1)) + np.where(coh == "b", 10.0, 0.0)[:, None]
    write_csv(Frame(ts, vals, ("lat",), coh), tmp_path / "b.csv")
    r = runner.invoke(app, ["calibrate", str(tmp_path / "b.csv"), "-o", str(tmp_path / "c.json"), "--no-robust"])
    assert r.exit_code == 0
    cfg = json.loads((tmp_path / "c.json").read_text())
    assert cfg["tiers"] == ["a", "b"] and "t=b" in cfg["cell_map"]
