"""Gate semantics: verdicts, missing data, two-sample mode, bad ticks, state, batch equivalence."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from deploysignal import InputError
from deploysignal.calibration import compile_baseline
from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import Regression, simulate
from deploysignal.telemetry import Frame


def test_healthy_proceeds_at_window_end(sim_healthy, cfg_healthy):
    ds = Gate(cfg_healthy, GateSettings(window=300)).run(sim_healthy.canary)
    assert [d.verdict for d in ds[:-1]] == ["pending"] * 299
    assert ds[-1].verdict == "proceed" and ds[-1].final and ds[-1].decided_at_tick == 299


def test_step_rolls_back_with_explanation():
    sim = simulate("step", seed=3, baseline_ticks=2880, regression=Regression(("p99_latency_ms",), 1.5, "step", 50))
    cfg = compile_baseline(sim.baseline, seed=3, robust_covariance=False)
    ds = Gate(cfg).run(sim.canary)
    d = next(d for d in ds if d.verdict == "rollback")
    assert d.final and d.fired_families == ("A",) and d.decided_at_tick > 50
    ev = next(e for e in d.evidence if e.family == "A")
    assert ev.drivers[0] == "p99_latency_ms" and "p99_latency_ms" in ev.reason
    assert ds[-1].verdict == "rollback" and ds[-1].decided_at_tick == d.tick


def test_missing_data_never_rolls_back_nor_proceeds(sim_healthy, cfg_healthy):
    vals = sim_healthy.canary.values.copy()
    vals[np.random.default_rng(0).random(vals.shape) < 0.7] = np.nan  # most ticks invalid
    ds = Gate(cfg_healthy, GateSettings(window=300)).run(Frame(sim_healthy.canary.timestamps, vals, sim_healthy.canary.signals))
    assert ds[-1].verdict == "extend" and all(d.verdict != "rollback" for d in ds)
    nan = np.full_like(vals, np.nan)
    ds = Gate(cfg_healthy, GateSettings(window=300, max_extensions=0)).run(Frame(sim_healthy.canary.timestamps, nan, sim_healthy.canary.signals))
    assert ds[-1].verdict == "extend" and ds[-1].final


def test_two_sample_cancels_common_shocks_and_catches_canary_only_shift():
    sim = simulate("healthy", seed=8, baseline_ticks=2880)
    cfg = compile_baseline(sim.baseline, seed=8, robust_covariance=False)
    shock = np.zeros_like(sim.canary.values)
    shock[100:, 0] = 200.0  # load event moves p99 latency of canary and control by 5 sd
    can = Frame(sim.canary.timestamps, sim.canary.values + shock, sim.canary.signals)
    ctl = Frame(sim.control.timestamps, sim.control.values + shock, sim.control.signals)
    one = Gate(cfg).run(can)[-1]
    two = Gate(cfg, GateSettings(mode="two-sample")).run(can, ctl)[-1]
    assert one.verdict == "rollback"  # one-sample blames the canary
    assert two.verdict != "rollback"  # the paired difference removes the shared shock
    only = Frame(sim.canary.timestamps, sim.canary.values + shock, sim.canary.signals)
    assert Gate(cfg, GateSettings(mode="two-sample")).run(only, sim.control)[-1].verdict == "rollback"


def test_bad_ticks_are_rejected_without_changing_state(cfg_healthy, sim_healthy):
    g = Gate(cfg_healthy)
    row = sim_healthy.canary.values[0]
    t0 = sim_healthy.canary.timestamps[0]
    g.update(t0, row)
    before = copy.deepcopy(g.state())
    for ts, vals, msg in [
        (t0, row, "not after the previous tick"),
        (t0 - 60, row, "not after"),
        (float("nan"), row, "not finite"),
        ("soon", row, "timestamp must be a number"),
        (t0 + 60, row[:3], "has 3 values"),
        (t0 + 60, np.where(np.arange(row.size) == 2, np.inf, row), "infinite"),
        (t0 + 60, {"p99_latency_ms": "fast"}, "column 'p99_latency_ms'"),
    ]:
        with pytest.raises(InputError, match=msg):
            g.update(ts, vals)
    with pytest.raises(InputError, match="one-sample mode"):
        g.update(t0 + 60, row, control=row)
    assert g.state() == before


def test_mapping_input_records_schema_continuity(cfg_healthy, sim_healthy):
    g = Gate(cfg_healthy)
    names = cfg_healthy.names
    vals = dict(zip(names[1:], sim_healthy.canary.values[0][1:]))
    vals["new_metric"] = 1.0
    d = g.update(sim_healthy.canary.timestamps[0], vals)
    cont = {r["schema_continuity"] for r in d.records}
    assert cont == {f"missing:{names[0]};extra:new_metric"}


def test_state_roundtrip_mid_stream(cfg_healthy, sim_healthy):
    s = GateSettings(window=300)
    g = Gate(cfg_healthy, s)
    can = sim_healthy.canary
    for i in range(150):
        g.update(can.timestamps[i], can.values[i])
    h = Gate.from_state(cfg_healthy, s, copy.deepcopy(g.state()))
    for i in range(150, 300):
        a, b = g.update(can.timestamps[i], can.values[i]), h.update(can.timestamps[i], can.values[i])
        assert a.records == b.records and a.verdict == b.verdict


def test_batch_equals_single_stream():
    sims = [simulate("step", seed=s, baseline_ticks=2880, canary_ticks=400) for s in range(3)]
    ts = sims[0].baseline.timestamps
    cfgs = [compile_baseline(s.baseline, seed=i, robust_covariance=False) for i, s in enumerate(sims)]
    assert all(np.array_equal(s.baseline.timestamps, ts) for s in sims)
    batch = Gate(cfgs).run_batch(sims[0].canary.timestamps, np.stack([s.canary.values for s in sims]))
    for i, s in enumerate(sims):
        d = Gate(cfgs[i]).run(s.canary)[-1]
        assert batch.verdicts()[i] == d.verdict
        assert (batch.decided_at[i] if batch.decided_at[i] >= 0 else None) == d.decided_at_tick


def test_slowbleed_rule_and_static_slo_warning():
    sim = simulate("slowbleed", seed=2, baseline_ticks=2880)
    cfg = compile_baseline(sim.baseline, seed=2, robust_covariance=False)
    s = GateSettings(shares={"A": 0.4})
    d = Gate(cfg, s).run(sim.canary)
    b = [e for e in d[-1].evidence if e.family == "B"][0]
    assert b.fired and "slowbleed" in b.reason
    # latency doubling trips the static SLO check: configured to warn, it makes the verdict extend
    healthy = simulate("healthy", seed=2, baseline_ticks=2880)
    vals = healthy.canary.values.copy()
    vals[:, 0] *= 2.5
    s2 = GateSettings(shares={"A": 0.4}, window=480, max_extensions=0)
    g = Gate(compile_baseline(healthy.baseline, seed=2, robust_covariance=False), s2)
    from deploysignal.detectors import RuleSettings

    out = g.run(Frame(healthy.canary.timestamps, vals, healthy.canary.signals))[-1]
    bev = [e for e in out.evidence if e.family == "B"][0]
    assert bev.fired and bev.action == "warn" and "SLO" in bev.reason
    assert RuleSettings().slo_action == "warn"


def test_settings_validation():
    with pytest.raises(ValueError, match="must not exceed 1"):
        GateSettings(shares={"A": 0.9}, proceed_share=0.2)
    with pytest.raises(ValueError, match="unknown families"):
        GateSettings(shares={"Z": 0.1})


def test_memoised_cell_lookup_matches_the_keys():
    """The memo of Gate._cell (hour of week, tier) gives the cell that cell_keys resolves, for any time."""
    from deploysignal.calibration import cell_keys, compile_baseline
    from deploysignal.telemetry import Frame

    rng = np.random.default_rng(7)
    n = 3 * 1440
    tiers = np.array(["gold", "free"])[rng.integers(0, 2, n)]
    cfg = compile_baseline(Frame(np.arange(n) * 60.0, rng.normal(size=(n, 2)), ("p99_latency_ms", "ttft_ms"), cohort=tiers), seed=1)
    gate = Gate(cfg, GateSettings())
    for ts in np.concatenate([rng.uniform(-3e7, 3e9, 3000), np.arange(0, 14 * 86400, 1799.5)]):
        for tier in ("gold", "free", "unknown", ""):
            want = next(((cfg.cell_map[k], k) for k in cell_keys(float(ts), tier) if k in cfg.cell_map), (cfg.cell_map["*"], "*"))
            assert gate._cell(float(ts), tier) == want


@pytest.mark.parametrize("scenario", ["step", "slowbleed", "joint_shift", "oscillation", "novel_pattern"])
@pytest.mark.parametrize("mode", ["one-sample", "two-sample"])
def test_update_many_equals_tick_by_tick(scenario, mode):
    """Batches of any size give the same decisions, evidence and audit records as one tick at a time,
    including fires (and their explanations) in the middle of a batch, cohorts and missing values."""
    sim = simulate(scenario, seed=11)
    cfg = compile_baseline(sim.baseline, seed=11, robust_covariance=False)
    settings = GateSettings(mode=mode, window=60)
    can = sim.canary.values.copy()
    can[np.random.default_rng(2).random(can.shape) < 0.05] = np.nan
    ctl = sim.control.values if mode == "two-sample" else None
    ts = sim.canary.timestamps
    cohorts = ["a" if i % 3 else None for i in range(len(ts))]  # two interleaved streams of one canary
    one = Gate(cfg, settings)
    ref = [one.update(ts[i], can[i], cohort=cohorts[i], control=None if ctl is None else ctl[i]) for i in range(len(ts))]
    many = Gate(cfg, settings)
    got = []
    bounds = [0, 1, 5, 77, 78, 300, len(ts)]
    for a, b in zip(bounds, bounds[1:]):
        got += many.update_many(ts[a:b], can[a:b], cohorts=cohorts[a:b], control=None if ctl is None else ctl[a:b])
    assert [d.records for d in got] == [d.records for d in ref]
    assert [repr(d.evidence) for d in got] == [repr(d.evidence) for d in ref]  # repr: NaN statistics compare equal
    assert json.dumps(many.state(), sort_keys=True) == json.dumps(one.state(), sort_keys=True)
    assert any(e.fired for d in ref for e in d.evidence) or scenario == "novel_pattern" and mode == "two-sample"


def test_update_many_rejects_a_bad_tick_without_evaluating_any(cfg_healthy, sim_healthy):
    gate = Gate(cfg_healthy, GateSettings(window=50))
    ts, vals = sim_healthy.canary.timestamps, sim_healthy.canary.values
    gate.update_many(ts[:10], vals[:10])
    before = json.dumps(gate.state(), sort_keys=True)
    bad = vals[10:20].copy()
    bad[4, 2] = np.inf
    with pytest.raises(InputError) as err:
        gate.update_many(ts[10:20], bad)
    assert err.value.row == 15
    times = ts[10:20].copy()
    times[6] = times[5]
    with pytest.raises(InputError, match="not after") as err:
        gate.update_many(times, vals[10:20])
    assert err.value.row == 17
    assert json.dumps(gate.state(), sort_keys=True) == before
    assert [d.tick for d in gate.update_many(ts[10:13], vals[10:13])] == [10, 11, 12]


def test_cohorts_differing_only_by_trailing_nul_stay_separate(cfg_healthy, sim_healthy):
    """Cohorts are grouped by exact string (numpy string comparison would strip trailing NULs)."""
    ts, vals = sim_healthy.canary.timestamps[:12], sim_healthy.canary.values[:12]
    cohorts = ["a" if i % 2 else "a\x00" for i in range(12)]
    one = Gate(cfg_healthy, GateSettings(window=50))
    ref = [one.update(ts[i], vals[i], cohort=cohorts[i]) for i in range(12)]
    many = Gate(cfg_healthy, GateSettings(window=50))
    got = many.update_many(ts, vals, cohorts=cohorts)
    assert [d.records for d in got] == [d.records for d in ref]
    assert many.cohort_clock("a\x00") == ts[10] and many.cohort_clock("a") == ts[11]


def test_batch_of_arrays_names_the_first_bad_tick_and_changes_nothing(cfg_healthy, sim_healthy):
    """update_many converts a numeric (n, k) array at once; its errors still name the first bad tick
    (a timestamp error before an infinity is reported first) and its signal, and nothing changes."""
    can = sim_healthy.canary
    g = Gate(cfg_healthy, GateSettings(mode="two-sample"))
    g.update_many(can.timestamps[:3], can.values[:3], control=can.values[:3])
    before = copy.deepcopy(g.state())
    ts, vals, ctl = can.timestamps[3:9].copy(), can.values[3:9].copy(), can.values[3:9].copy()
    vals[3, 2] = -np.inf
    with pytest.raises(InputError, match="canary value is infinite") as err:
        g.update_many(ts, vals, control=ctl)
    assert (err.value.row, err.value.column) == (7, cfg_healthy.names[2])
    ts[1] = ts[0]
    with pytest.raises(InputError, match="not after") as err:
        g.update_many(ts, vals, control=ctl)
    assert err.value.row == 5
    ts, vals = can.timestamps[3:9], can.values[3:9]
    ctl[4, 0] = np.inf
    with pytest.raises(InputError, match="control value is infinite") as err:
        g.update_many(ts, vals, control=ctl)
    assert (err.value.row, err.value.column) == (8, cfg_healthy.names[0])
    assert g.state() == before
    arrays = g.update_many(ts, vals, control=can.values[3:9])
    rows = Gate.from_state(cfg_healthy, GateSettings(mode="two-sample"), before).update_many(ts, list(vals), control=list(can.values[3:9]))
    assert [d.lines for d in arrays] == [d.lines for d in rows]  # same as the row-by-row path
