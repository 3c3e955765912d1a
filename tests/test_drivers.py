"""Drivers name only signals whose own evidence supports the verdict (issue 25, rule 2); the rule before it
(rule 1: the largest three, changed or not) stays for replaying the audit logs written with it."""

from __future__ import annotations

import io
import json

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


def test_slowbleed_names_only_drifting_signals(step):
    _, cfg = step
    b = FamilyB(cfg)
    names, two = [cfg.names[i] for i in b._bleed_idx], b._bleed_two
    ewma = np.zeros(len(names))
    ewma[2], ewma[5] = 0.5, 0.4  # beyond the 0.35 threshold in the harmful direction
    ewma[0] = 0.3  # drifting a little, below the threshold: not a driver
    assert b.drivers(ewma) == (names[2], names[5])
    assert b.drivers(ewma, 1) == (names[2], names[5], names[0])  # rule 1: the largest three, drifting or not
    assert b.drivers(np.zeros(len(names))) == ()
    for j in (1, 3):  # the other way: harm only for a two-sided signal
        away = np.zeros(len(names))
        away[j] = -0.9
        assert b.drivers(away) == ((names[j],) if two[j] else ())


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
