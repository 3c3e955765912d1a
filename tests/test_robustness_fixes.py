"""Missing ticks, cohorts, discrete signals, day-to-day drift, pairing and CLI messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deploysignal import InputError
from deploysignal.calibration import compile_baseline, g_step_innovation
from deploysignal.cli import app
from deploysignal.gate import Gate, GateSettings, Standardizer
from deploysignal.simulate import NoiseSpec, simulate, simulate_streams
from deploysignal.telemetry import Frame

runner = CliRunner()


def test_g_step_innovations_are_standardised_and_uncorrelated_across_gaps():
    """AR(0.9) with 40% of ticks missing: the g-step innovations have unit variance and no lag-1
    correlation; the naive 'restart at the marginal' rule leaves strong serial correlation."""
    rng = np.random.default_rng(0)
    phi, n = 0.9, 200_000
    e = rng.standard_normal(n)
    y = np.empty(n)
    y[0] = e[0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        y[t] = phi * y[t - 1] + e[t]
    seen = rng.random(n) > 0.4
    idx = np.flatnonzero(seen)
    ys, gaps = y[idx], np.diff(idx).astype(float)
    z, _ = g_step_innovation(ys[1:], ys[:-1], gaps, np.full(gaps.size, phi), np.full(gaps.size, np.sqrt(1 - phi**2)))
    assert abs(z.var() - 1.0) < 0.02
    assert abs(np.corrcoef(z[1:], z[:-1])[0, 1]) < 0.01
    naive = np.where(gaps == 1, ys[1:] - phi * ys[:-1], ys[1:] * np.sqrt(1 - phi**2))
    assert np.corrcoef(naive[1:], naive[:-1])[0, 1] > 0.05


def test_standardizer_bridges_gaps_with_the_last_observed_value():
    sim = simulate("healthy", seed=2, baseline_ticks=2880, canary_ticks=10)
    cfg = compile_baseline(sim.baseline, seed=2, robust_covariance=False)
    std = Standardizer(cfg)
    ts, vals = sim.canary.timestamps, sim.canary.values.copy()
    vals[1:4, 0] = np.nan  # signal 0 missing for three ticks
    gate = Gate(cfg)
    zs = []
    for i in range(6):
        cell, _, nb, w = gate._locate(ts[i], "")
        zs.append(std(ts[i], vals[i][None], cell, nb, w)[0])
    phi, scale = cfg.signals[0].phi, cfg.signals[0].innov_scale
    cell, _, nb, w = gate._locate(ts[4], "")
    lv = w * np.array(cfg.cells[cell].location) + (1 - w) * np.array(cfg.cells[nb].location)
    cell0, _, nb0, w0 = gate._locate(ts[0], "")
    lv0 = w0 * np.array(cfg.cells[cell0].location) + (1 - w0) * np.array(cfg.cells[nb0].location)
    y4, y0 = vals[4, 0] - lv[0], vals[0, 0] - lv0[0]
    expect = (y4 - phi**4 * y0) / np.sqrt((1 - phi**8) / (1 - phi**2)) / scale
    orient = -1.0 if cfg.signals[0].direction == "down" else 1.0
    assert zs[4][0] == pytest.approx(orient * expect, rel=1e-12)
    assert np.isnan(zs[2][0]) and not np.isnan(zs[2][1])


def test_cohorts_are_separate_streams_and_may_share_timestamps(sim_healthy, cfg_healthy):
    gate = Gate(cfg_healthy, GateSettings(window=20))
    ts, vals = sim_healthy.canary.timestamps, sim_healthy.canary.values
    for i in range(5):
        gate.update(ts[i], vals[i], cohort="a")
        gate.update(ts[i], vals[i], cohort="b")  # same timestamp, other cohort: accepted
    with pytest.raises(InputError, match="cohort 'a'"):
        gate.update(ts[2], vals[2], cohort="a")
    st = json.loads(json.dumps(gate.state()))
    assert sorted(st["cohorts"]) == ["a", "b"]
    again = Gate.from_state(cfg_healthy, GateSettings(window=20), st)
    d1 = gate.update(ts[5], vals[5], cohort="b")
    d2 = again.update(ts[5], vals[5], cohort="b")
    assert d1.records == d2.records


def test_legacy_single_clock_state_keeps_its_floor_for_new_cohorts(sim_healthy, cfg_healthy):
    """A state written before per-cohort clocks had one shared clock; it must not reopen the past."""
    gate = Gate(cfg_healthy, GateSettings(window=20))
    ts, vals = sim_healthy.canary.timestamps, sim_healthy.canary.values
    for i in range(4):
        gate.update(ts[i], vals[i])
    st = json.loads(json.dumps(gate.state()))
    legacy = {k: v for k, v in st.items() if k != "cohorts"}
    legacy.update(canary_std=st["cohorts"][""]["canary_std"], control_std=st["cohorts"][""]["control_std"])
    old = Gate.from_state(cfg_healthy, GateSettings(window=20), legacy)
    with pytest.raises(InputError, match="not after"):
        old.update(ts[2], vals[2], cohort="new")
    old.update(ts[4], vals[4], cohort="new")
    again = Gate.from_state(cfg_healthy, GateSettings(window=20), json.loads(json.dumps(old.state())))
    with pytest.raises(InputError, match="not after"):
        again.update(ts[3], vals[3], cohort="other")


def test_discrete_low_count_error_rate_is_centred_and_scaled():
    """Binomial(50, 1%)/50 error rate: most ticks are 0. The level is the mean, the scale the sd, the
    SLO reference is floored at one error per 50 requests."""
    rng = np.random.default_rng(4)
    n = 2880
    vals = np.stack([rng.binomial(50, 0.01, n) / 50, rng.normal(200, 10, n)], axis=1)
    cfg = compile_baseline(Frame(1.7e9 + 60 * np.arange(n), vals, ("downstream_error_rate", "p99_latency_ms")), robust_covariance=False)
    meta = cfg.signals[0]
    assert meta.resolution == pytest.approx(0.02)
    assert cfg.cells[0].location[0] == pytest.approx(np.mean(np.arcsin(np.sqrt(vals[:, 0]))), abs=0.01)
    assert meta.innov_scale > 0.05  # a MAD would collapse on the atom at 0 (~1e-3)
    assert cfg.signals[1].resolution == 0.0


def test_day_to_day_level_variation_is_measured_only_when_present():
    rng = np.random.default_rng(7)
    sigs = ("p99_latency_ms", "mfu")
    ts, flat = simulate_streams(rng, 1, 14 * 1440, noise=NoiseSpec(phi=0.5, diurnal=0.0), signals=sigs)
    _, days = simulate_streams(rng, 1, 14 * 1440, noise=NoiseSpec(phi=0.5, diurnal=0.0, day_effect=0.3), signals=sigs)
    c_flat = compile_baseline(Frame(ts, flat[0], sigs), robust_covariance=False)
    c_days = compile_baseline(Frame(ts, days[0], sigs), robust_covariance=False)
    assert np.all(c_days.arrays["day_bias_var"] > 0)
    assert np.all(c_flat.arrays["day_bias_var"] == 0)


def test_control_must_be_paired_by_timestamp(sim_healthy, cfg_healthy):
    can = sim_healthy.canary
    shifted = Frame(can.timestamps + 600.0, sim_healthy.control.values, can.signals)
    with pytest.raises(InputError, match="row 1.*not paired"):
        Gate(cfg_healthy, GateSettings(mode="two-sample")).run(can, shifted)


def test_cli_settings_error_names_the_field(tmp_path):
    sim = simulate("healthy", seed=1, baseline_ticks=1440, canary_ticks=60)
    from deploysignal.sources import write_csv

    write_csv(sim.baseline, tmp_path / "b.csv")
    write_csv(sim.canary, tmp_path / "c.csv")
    assert runner.invoke(app, ["calibrate", str(tmp_path / "b.csv"), "-o", str(tmp_path / "cfg.json")]).exit_code == 0
    res = runner.invoke(app, ["gate", "-c", str(tmp_path / "cfg.json"), str(tmp_path / "c.csv"), "--alpha", "2"])
    assert res.exit_code == 2 and "alpha" in res.output and "errors.pydantic.dev" not in res.output


def test_final_extend_at_the_horizon_reports_its_tick(tmp_path):
    from deploysignal.sources import write_csv

    sim = simulate("healthy", seed=5, baseline_ticks=1440, canary_ticks=40)
    vals = sim.canary.values.copy()
    vals[np.random.default_rng(0).random(vals.shape) < 0.8] = np.nan  # too few valid ticks to proceed
    write_csv(sim.baseline, tmp_path / "b.csv")
    write_csv(Frame(sim.canary.timestamps, vals, sim.canary.signals), tmp_path / "c.csv")
    runner.invoke(app, ["calibrate", str(tmp_path / "b.csv"), "-o", str(tmp_path / "cfg.json")])
    res = runner.invoke(app, ["gate", "-c", str(tmp_path / "cfg.json"), str(tmp_path / "c.csv"), "--window", "20", "--json"])
    out = json.loads(res.output.strip().splitlines()[-1])
    assert res.exit_code == 3 and out["verdict"] == "extend" and out["decided_at_tick"] == 39
    res = runner.invoke(app, ["gate", "-c", str(tmp_path / "cfg.json"), str(tmp_path / "c.csv"), "--window", "40", "--json"])
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["verdict"] == "extend" and out["decided_at_tick"] is None  # one extension left: not decided


def test_file_errors_name_the_data_row_and_the_file_line(tmp_path):
    from deploysignal.sources import read_frame

    p = tmp_path / "x.csv"
    p.write_text("timestamp,p99_latency_ms\n1,2\n\n\n2,abc\n")
    with pytest.raises(InputError, match=r"row 2, column 'p99_latency_ms'.*line 5"):
        read_frame(p)
    q = tmp_path / "x.jsonl"
    q.write_text('{"timestamp": 1, "a": 1}\n\n{"timestamp": 2, "a": "x"}\n')
    with pytest.raises(InputError, match=r"row 2, column 'a'.*line 3"):
        read_frame(q)
