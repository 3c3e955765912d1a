"""``deploysignal gate --split`` / ``--split-ticks`` and ``replay --split``: the CLI contract, audit and replay,
and monotonicity in harm through the code the CLI runs (hypothesis)."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from deploysignal.cli import app
from deploysignal.cli._split import run_split
from deploysignal.split import RequestLog, SplitSettings, requests_to_data, resolve_specs

runner = CliRunner()
SIGNALS = "errors: {kind: event, direction: up}\nlatency_ms: {kind: continuous, direction: up, edges: [40, 60, 80, 120, 200]}\n"


def _requests(path, seed, harm=1.0, n=6000, sessions=False):
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, 3600, n))
    unit = rng.integers(0, n // 4, n) if sessions else np.arange(n)
    can = (np.random.default_rng(seed + 1).random(unit.max() + 1) < 0.25)[unit]
    err = rng.random(n) < 0.03 * np.where(can, harm, 1)
    lat = rng.lognormal(4.2, 0.5, n) * np.where(can, harm, 1)
    lines = ["timestamp,arm,unit,errors,latency_ms" if sessions else "timestamp,arm,errors,latency_ms"]
    for i in range(n):
        cols = [repr(float(ts[i])), "canary" if can[i] else "stable"] + ([f"s{unit[i]}"] if sessions else []) + [str(int(err[i])), "" if i % 17 == 0 else repr(float(lat[i]))]
        lines.append(",".join(cols))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gate_split_contract_exit_codes_json_audit_replay(tmp_path):
    sig = tmp_path / "signals.yaml"
    sig.write_text(SIGNALS)
    for harm, code, verdict in ((1.0, 0, "proceed"), (1.6, 4, "rollback")):
        req = _requests(tmp_path / f"r{harm}.csv", 3, harm)
        audit = tmp_path / f"a{harm}.jsonl"
        r = runner.invoke(app, ["gate", "--split", str(req), "--signals", str(sig), "--canary-share", "0.25", "--tick-seconds", "60",
                                "--window", "60", "--alpha", "0.05", "--audit", str(audit), "--json"])
        assert r.exit_code == code, r.output
        s = json.loads(r.output.strip().splitlines()[-1])
        assert s["verdict"] == verdict and s["mode"] == "split"
        assert {"decided_at_tick", "fired_families", "fired", "effects", "reason", "ticks"} <= set(s)
        eff = s["effects"]["errors"]["effect"]
        assert eff["lower"] <= eff["ratio"] <= (eff["upper"] or np.inf)
        if verdict == "rollback":
            assert s["fired"] and s["decided_at_tick"] >= 1
        r = runner.invoke(app, ["replay", "--split", str(req), "--audit", str(audit)])
        assert r.exit_code == 0 and "replay ok" in r.output, r.output
        r = runner.invoke(app, ["audit", "verify", str(audit)])
        assert r.exit_code == 0, r.output
    # a tampered record: replay exits 1 naming the line
    lines = audit.read_text().splitlines()
    lines[5] = lines[5].replace('"fire":false', '"fire":true')
    audit.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["replay", "--split", str(req), "--audit", str(audit)])
    assert r.exit_code == 1 and "audit line 6" in r.output, r.output


def test_gate_split_human_output_and_sessions(tmp_path):
    req = _requests(tmp_path / "s.csv", 4, 1.0, sessions=True)
    r = runner.invoke(app, ["gate", "--split", str(req), "--unit-timeout", "300", "--window", "30"])
    assert r.exit_code in (0, 3), r.output
    assert "canary event rate x" in r.output and "odds" not in r.output and "inferred kind event" in r.output


def test_gate_split_ticks_and_replay(tmp_path):
    sig = tmp_path / "signals.yaml"
    sig.write_text("errors: {kind: event}\nlatency_ms: {kind: continuous, edges: [50, 100, 200, 400, 800]}\n")
    tick = {"arms": {"canary": {"units": 240, "events": {"errors": 3}, "buckets": {"latency_ms": [10, 50, 120, 40, 15, 5]}},
                     "stable": {"units": 4810, "events": {"errors": 41}, "buckets": {"latency_ms": [220, 1010, 2300, 890, 310, 80]}}}, "tier": None}
    p = tmp_path / "ticks.jsonl"
    p.write_text("".join(json.dumps(dict(tick, timestamp=1_800_000_000 + 60 * i)) + "\n" for i in range(10)))
    audit = tmp_path / "a.jsonl"
    r = runner.invoke(app, ["gate", "--split-ticks", str(p), "--signals", str(sig), "--window", "10", "--audit", str(audit), "--json"])
    assert r.exit_code in (0, 3, 4), r.output
    assert json.loads(r.output.strip().splitlines()[-1])["ticks"] == 10
    r = runner.invoke(app, ["replay", "--split-ticks", str(p), "--audit", str(audit)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["replay", "--split", str(p), "--audit", str(audit)])
    assert r.exit_code == 2 and "split ticks" in r.output


def test_gate_split_usage_errors(tmp_path):
    req = _requests(tmp_path / "r.csv", 5, n=200)
    for args, msg in ((["gate", "x.csv", "--split", str(req)], "take no CANARY"),
                      (["gate", "--split-ticks", str(req)], "needs --signals"),
                      (["gate", "--split", str(req), "--alpha", "2"], "alpha"),
                      (["gate", "--split", str(req), "--canary-share", "1.5"], "canary_share"),
                      (["gate", "--canary-share", "0.1"], "CANARY and --config")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and msg in r.output, (args, r.output)


_SPEC_SIGNALS = {"errors": {"kind": "event", "direction": "up"}, "latency_ms": {"kind": "continuous", "direction": "up", "edges": [40, 60, 80, 120, 200]},
                 "score": {"kind": "continuous", "direction": "down", "edges": [0.2, 0.5, 0.8]}}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), sessions=st.booleans(), frac=st.floats(0.05, 1.0), factor=st.floats(1.0, 3.0))
def test_more_harm_never_less_evidence(seed, sessions, frac, factor):
    """For fixed data, more canary errors, slower canary latencies and lower canary scores (a random subset of
    canary requests) never lower any metric's log e-value or its running peak, nor delay a rollback."""
    rng = np.random.default_rng(seed)
    n = 1500
    ts = rng.uniform(0, 1800, n)
    unit = rng.integers(0, n // 3, n) if sessions else np.arange(n)
    can = (rng.random(unit.max() + 1) < rng.uniform(0.1, 0.6))[unit]
    err = (rng.random(n) < 0.05).astype(float)
    lat = rng.lognormal(4.3, 0.6, n)
    score = np.where(rng.random(n) < 0.3, np.nan, rng.beta(3, 2, n))
    pick = can & (rng.random(n) < frac)
    worse = {"errors": err + pick, "latency_ms": np.where(pick, lat * factor, lat), "score": np.where(pick, score / factor, score)}
    st_ = SplitSettings(window=10, max_extensions=1, tick_seconds=60.0, unit_timeout=120.0)
    out = []
    for vals in ({"errors": err, "latency_ms": lat, "score": score}, worse):
        log = RequestLog(ts, can, unit.astype(str).astype(object) if sessions else None, np.full(n, "", dtype=object), vals)
        specs, _ = resolve_specs(log, _SPEC_SIGNALS)
        out.append(run_split(specs, st_, requests_to_data(log, specs, st_.tick_seconds, st_.unit_timeout), "requests", None))
    base, harm = out
    for m in _SPEC_SIGNALS:
        b, h = base["effects"][m], harm["effects"][m]
        assert h["log_evidence"] >= b["log_evidence"] - 1e-9 * (1 + abs(b["log_evidence"])), m
        assert (h["peak_log_evidence"] or -np.inf) >= (b["peak_log_evidence"] or -np.inf) - 1e-9, m
    if base["verdict"] == "rollback":
        assert harm["verdict"] == "rollback" and harm["decided_at_tick"] <= base["decided_at_tick"]


def _step_log(path, seed):
    """The review's /tmp/u/step.py: 1,000 requests a tick, no version effect, share 5% -> 50% at 30:30
    (inside a tick), a 40-second error burst on both arms right after the step."""
    rng = np.random.default_rng(seed)
    s = np.sort(rng.uniform(0, 3600, 60_000))
    after = s >= 1830
    can = rng.random(s.size) < np.where(after, 0.5, 0.05)
    err = rng.random(s.size) < np.where(after & (s < 1870), 0.2, 0.01)
    path.write_text("timestamp,arm,errors\n" + "".join(f"{t:.3f},{'canary' if c else 'stable'},{int(e)}\n" for t, c, e in zip(s, can, err)))
    return path


def test_share_changes_inside_a_tick(tmp_path):
    """Review finding 1: undeclared, this seed rolls back (exit 4); declared with --share-changes (or
    blocked finer than the tick with --block-seconds) it does not, and the audit log replays."""
    req = _step_log(tmp_path / "step.csv", 3)
    base = ["gate", "--split", str(req), "--window", "60", "--json"]
    assert runner.invoke(app, base).exit_code == 4
    audit = tmp_path / "a.jsonl"
    r = runner.invoke(app, [*base, "--share-changes", "1970-01-01T00:30:30Z", "--audit", str(audit)])
    assert r.exit_code == 0, r.output
    assert json.loads(audit.read_text().splitlines()[0])["record"]["settings"]["share_changes"] == [1830.0]
    r = runner.invoke(app, ["replay", "--split", str(req), "--audit", str(audit)])
    assert r.exit_code == 0 and "replay ok" in r.output, r.output
    assert runner.invoke(app, [*base, "--block-seconds", "10"]).exit_code == 0
    r = runner.invoke(app, [*base, "--share-changes", "soon"])
    assert r.exit_code == 2 and "--share-changes" in r.output


def test_sticky_unit_moving_arms_at_a_declared_step(tmp_path):
    """Review finding 6: a hash-sticky router moves units at a weight step. Undeclared: exit 2 naming the
    unit and --share-changes; declared: the units are cut at the step and the log is analysed."""
    rng = np.random.default_rng(5)
    n = 4000
    ts = np.sort(rng.uniform(0, 3600, n))
    unit = rng.integers(0, 300, n)
    h = rng.random(300)[unit]
    can = h < np.where(ts < 1800.5, 0.1, 0.5)
    req = tmp_path / "sticky.csv"
    req.write_text("timestamp,arm,unit,errors\n" + "".join(f"{t:.3f},{'canary' if c else 'stable'},s{u},{int(rng.random() < 0.02)}\n"
                                                           for t, c, u in zip(ts, can, unit)))
    base = ["gate", "--split", str(req), "--window", "60", "--unit-timeout", "300", "--json"]
    r = runner.invoke(app, base)
    assert r.exit_code == 2 and "both arms" in r.output and "--share-changes" in r.output
    r = runner.invoke(app, [*base, "--share-changes", "1800.5"])
    assert r.exit_code in (0, 3), r.output
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["effects"]["errors"]["effect"]["events"] > 0 and s["ticks"] == 60


def test_split_ticks_metric_in_one_arm_only_is_reported(tmp_path):
    """Review finding 4: a stable counter absent on odd ticks (Prometheus omits never-incremented
    counters) dropped those ticks silently; now every such tick is named on stderr and in JSON notes."""
    sig = tmp_path / "s.yaml"
    sig.write_text("errors: {kind: event, direction: up}\n")
    ticks = tmp_path / "t.jsonl"
    rows = []
    for t in range(20):
        st = {"units": 100} if t % 2 else {"units": 100, "events": {"errors": 1}}
        rows.append(json.dumps({"timestamp": 1.7e9 + 60 * t, "arms": {"canary": {"units": 100, "events": {"errors": 10}}, "stable": st}}))
    ticks.write_text("\n".join(rows) + "\n")
    r = runner.invoke(app, ["gate", "--split-ticks", str(ticks), "--signals", str(sig), "--window", "20", "--json"])
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert [n for n in s["notes"] if n.startswith("errors: present in one arm only in 10 input objects (2 (canary only), 4 (canary only)")]
    assert "warning: errors: present in one arm only" in r.stderr


def test_inferred_kinds_and_pooled_edges_warn_on_stderr(tmp_path):
    """Review finding 5 / note 12: data-derived edges break monotonicity in harm and prefix
    reproducibility, inferred kinds may be wrong: both are warnings on stderr, not only JSON notes."""
    req = _requests(tmp_path / "r.csv", 3)
    r = runner.invoke(app, ["gate", "--split", str(req), "--window", "60", "--json"])
    assert r.exit_code in (0, 3), r.output
    assert "warning: errors: inferred kind event, harm up" in r.stderr
    assert "warning: latency_ms: edges from pooled quantiles" in r.stderr and "give fixed edges in the signals file" in r.stderr
    assert any(n.startswith("no --canary-share: the sample ratio is not checked") for n in json.loads(r.stdout.strip().splitlines()[-1])["notes"])


def test_docs_split_ticks_example_runs(tmp_path):
    """Review note: the documented ticks example used an undeclared metric and 6 buckets for 6 edges
    (the documented --split-ticks command exited 2). Run the docs' own example and signals file."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "split.md").read_text()
    tick = json.loads(re.search(r"```json\n(.*?)```", doc, re.S).group(1))
    sig = tmp_path / "split-signals.yaml"
    sig.write_text(re.search(r"\*\*Signals file\*\*.*?```yaml\n(.*?)```", doc, re.S).group(1))
    ticks = tmp_path / "ticks.jsonl"
    ticks.write_text(json.dumps(tick) + "\n")
    r = runner.invoke(app, ["gate", "--split-ticks", str(ticks), "--signals", str(sig), "--json"])
    assert r.exit_code in (0, 3, 4), r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["ticks"] == 1
