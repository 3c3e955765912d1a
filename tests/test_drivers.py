"""Drivers name only signals whose own evidence supports the verdict (issue 25, rule 2); the rule before it
(rule 1: the largest three, changed or not) stays for replaying the audit logs written with it."""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from deploysignal.audit import AuditWriter, read_audit, replay
from deploysignal.calibration import compile_baseline
from deploysignal.detectors import FamilyB
from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import simulate


@pytest.fixture(scope="module")
def step():
    """`deploysignal simulate step --seed 0`: p99 latency alone steps up 0.5 sd at tick 60."""
    sim = simulate("step", seed=0)
    return sim, compile_baseline(sim.baseline, seed=0, robust_covariance=False)


def _fired_a(decisions):
    return [e for d in decisions for e in d.evidence if e.family == "A" and e.fired]


def test_one_signal_regresses_and_only_it_is_named(step):
    sim, cfg = step
    new = Gate(cfg, GateSettings()).run(sim.canary)
    old = Gate(cfg, GateSettings(drivers_rule=1)).run(sim.canary)
    assert new[-1].verdict == "rollback" and "A" in new[-1].fired_families
    fired = _fired_a(new)
    assert fired and {e.drivers for e in fired} == {("p99_latency_ms",)}
    assert all(e.reason.endswith("driven by p99_latency_ms") for e in fired)
    # rule 1 named signals that did not change (what the newcomer saw): the assertion above fails on it
    old_names = {n for e in _fired_a(old) for n in e.drivers}
    assert "p99_latency_ms" in old_names and len(old_names) == 3
    # the rule is explanation only: evidence and verdicts are the same
    for a, b in zip(new, old):
        assert (a.verdict, a.tick, a.fired_families) == (b.verdict, b.tick, b.fired_families)
        assert [(e.family, e.statistic, e.log_wealth, e.fired) for e in a.evidence] == [(e.family, e.statistic, e.log_wealth, e.fired) for e in b.evidence]


def test_slowbleed_drivers_are_the_drifting_signals_frozen_at_the_fire(step):
    _, cfg = step
    b = FamilyB(cfg)
    names, two = [cfg.names[i] for i in b._bleed_idx], b._bleed_two
    ewma = np.zeros(len(names))
    ewma[2], ewma[5] = 0.5, 0.4  # beyond the 0.35 threshold in the harmful direction
    ewma[0] = 0.3  # drifting a little, below the threshold: not a driver
    b._reasons(1, 2, ewma)
    assert b.drivers(np.zeros(len(names))) == (names[2], names[5])  # frozen: a later tick's EWMA is not read
    assert FamilyB(cfg, drivers_rule=1).drivers(ewma) == (names[2], names[5], names[0])  # rule 1: the largest three
    slo = FamilyB(cfg)
    slo._reasons(2, 0, ewma)  # the SLO checks alone fired: no driver
    assert slo.drivers(ewma) == ()
    for j in (1, 3):  # the other way: harm only for a two-sided signal
        away = np.zeros(len(names))
        away[j] = -0.9
        fb = FamilyB(cfg)
        fb._reasons(1, 1, away)
        assert fb.drivers(away) == ((names[j],) if two[j] else ())


def _drifting(sim):
    return set(sim.truth["regression"]["signals"])


def test_slowbleed_through_the_cli_keeps_b_drivers_to_the_last_record(tmp_path):
    """`simulate slowbleed --seed 0` -> calibrate -> gate: B fires at tick 319 and its drifting signals
    shrink back below the threshold before the end; the last record still names them (issue 25 review)."""
    exe = [sys.executable, "-m", "deploysignal"]
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=300)
    assert run(exe + ["simulate", "slowbleed", "--seed", "0", "-o", str(tmp_path / "sb")]).returncode == 0
    assert run(exe + ["calibrate", str(tmp_path / "sb/baseline.csv"), "-o", str(tmp_path / "cfg.json"), "--no-robust"]).returncode == 0
    audit = tmp_path / "a.audit.ndjson"
    g = run(exe + ["gate", str(tmp_path / "sb/canary.csv"), "-c", str(tmp_path / "cfg.json"), "--audit", str(audit)])
    assert g.returncode == 4, g.stderr  # rollback
    _, lines = read_audit(audit)
    b = [r for r in map(json.loads, lines) if r.get("family") == "B" and r.get("fire")]
    truth = _drifting(simulate("slowbleed", seed=0))
    assert b and b[-1]["drivers"] and set(b[-1]["drivers"]) <= truth
    assert {tuple(r["drivers"]) for r in b} == {tuple(b[0]["drivers"])}  # frozen at the fire, every tick after it


@pytest.fixture(scope="module")
def slowbleed():
    """`deploysignal simulate slowbleed --seed 0`: five infrastructure signals drift 0.45 sd (a ramp from tick 40)."""
    sim = simulate("slowbleed", seed=0)
    return sim, compile_baseline(sim.baseline, seed=0, robust_covariance=False)


@pytest.mark.parametrize("mode", ["learned", "capped", "mixture"])
def test_slowbleed_names_the_co_drivers_with_strong_evidence_of_their_own(slowbleed, mode):
    sim, cfg = slowbleed
    ds = Gate(cfg, GateSettings(a_nuisance=mode)).run(sim.canary)
    a = _fired_a(ds)
    assert a, "family A fires on the slow bleed"
    named = set(a[-1].drivers)
    # the top channel and cost_per_request (own e-value ~86 at the fire; rule 1's share test dropped it)
    assert {"ttft_ms", "cost_per_request"} <= named <= _drifting(sim), named
    if mode != "mixture":
        assert "collective_ops_ms" in named  # own e-value ~24 >= 20
    # B's drivers at the last tick: the drifting signals of its fire, never an unchanged one
    b = [e for e in ds[-1].evidence if e.family == "B"][0]
    assert b.fired and b.drivers and set(b.drivers) <= _drifting(sim)


def test_band_branch_names_only_drifting_signals():
    """The band nuisance (family A's e-SR with the band's bets) on a 2 sd step of the five slowbleed signals."""
    from deploysignal.simulate import Regression

    t = simulate("slowbleed", seed=0).truth["regression"]
    sim = simulate("slowbleed", seed=0, regression=Regression(tuple(t["signals"]), 2.0, "step", 40))
    cfg = compile_baseline(sim.baseline, seed=0, robust_covariance=False)
    a = _fired_a(Gate(cfg, GateSettings(a_nuisance="band")).run(sim.canary))
    assert a and len(a[-1].drivers) >= 3 and set(a[-1].drivers) <= set(t["signals"]), a[-1].drivers


@pytest.mark.parametrize("scenario, changed", [("step", "p99_latency_ms"), ("slow_drift", "eval_score")])
def test_single_signal_scenarios_name_only_the_changed_signal(scenario, changed):
    sim = simulate(scenario, seed=0)
    assert _drifting(sim) == {changed}
    cfg = compile_baseline(sim.baseline, seed=0, robust_covariance=False)
    for mode in ("learned", "capped", "mixture"):
        fired = _fired_a(Gate(cfg, GateSettings(a_nuisance=mode)).run(sim.canary))
        assert all(e.drivers == (changed,) for e in fired), (mode, {e.drivers for e in fired})


def test_kayenta_labels_read_the_frozen_drivers(slowbleed):
    """The service's per-signal classification after the whole batch: the drifted signals B named at its
    fire are High/Low, not Pass (the last tick's EWMAs no longer name them)."""
    from deploysignal.service._engine import AnalysisEngine, TickIn

    sim, cfg = slowbleed
    eng = AnalysisEngine(cfg.to_json(), GateSettings().model_dump(mode="json"))
    c = sim.canary
    eng.ingest([TickIn(float(ts), {n: float(v) for n, v in zip(c.signals, row)}) for ts, row in zip(c.timestamps, c.values)])
    labels = {r["name"]: r["classification"] for r in eng.signal_classification()}
    flagged = {n for n, v in labels.items() if v in ("High", "Low")}
    # B fired at tick 319 on these four; by the last tick their EWMAs have fallen back below the threshold
    assert {"ttft_ms", "cost_per_request", "hbm_spill_rate", "collective_ops_ms"} <= flagged <= _drifting(sim), labels


def test_rule_is_recorded_and_old_logs_replay_with_theirs(step, tmp_path):
    sim, cfg = step
    canary = sim.canary
    for rule in (1, 2):
        settings = GateSettings(drivers_rule=rule)
        buf = io.StringIO()
        w = AuditWriter(buf, cfg, settings)
        for d in Gate(cfg, settings).run(canary):
            w.write_lines(d.lines)
        header = json.loads(buf.getvalue().splitlines()[0])["record"]
        # rule 1's header is byte for byte what was written before the field existed (no key)
        assert ("drivers_rule" in header["settings"]) == (rule == 2)
        path = tmp_path / f"rule{rule}.audit.jsonl"
        path.write_text(buf.getvalue(), encoding="utf-8")
        hdr, lines = read_audit(path)
        assert replay(cfg, canary, lines, hdr) == len(lines)
        drivers = {n for r in map(json.loads, lines) if r.get("family") == "A" and r.get("fire") for n in r["drivers"]}
        assert drivers == {"p99_latency_ms"} if rule == 2 else len(drivers) == 3


def test_service_spec_without_the_key_keeps_rule_1(step):
    from deploysignal.service._manager import _engine

    _, cfg = step
    old = _engine(cfg.to_json(), {"settings": GateSettings(drivers_rule=1).model_dump(mode="json")})
    new = _engine(cfg.to_json(), {"settings": GateSettings().model_dump(mode="json")})
    assert old.settings.drivers_rule == 1 and new.settings.drivers_rule == 2
