"""The one-sample run-time model check (issue 22; :mod:`deploysignal.gate._runtime_check`).

A healthy simulated process with a strong daily cycle, 3-day baseline; its canary shown one hour late
(the timestamps moved by +1 h: the cycle runs an hour later than the baseline's, a DST change after
compile time) must make the check fire, hold the gate from proceeding and say so in the records,
``gate --json`` and the replayed audit; the same canary on time must leave every verdict and audit line
exactly as with the check off; and no harmful shift may raise the phase or level evidence.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deploysignal.calibration import compile_baseline
from deploysignal.cli import app
from deploysignal.gate import Gate, GateSettings, RuntimeCheck
from deploysignal.simulate import NoiseSpec, simulate
from deploysignal.telemetry import Frame

runner = CliRunner()


@pytest.fixture(scope="module")
def sim():
    s = simulate("healthy", seed=0, baseline_ticks=4320, canary_ticks=480, noise=NoiseSpec(diurnal=2.0))
    return s, compile_baseline(s.baseline, seed=0, robust_covariance=False)


def _late(frame: Frame, seconds: float = 3600.0) -> Frame:
    return Frame(frame.timestamps + seconds, frame.values, frame.signals)


def test_on_time_canary_is_unchanged_by_the_check(sim):
    s, cfg = sim
    on, off = Gate(cfg, GateSettings()), Gate(cfg, GateSettings(runtime_check=0.0))
    a, b = on.run(s.canary), off.run(s.canary)
    assert on.runtime_status["fired_at"] == -1 and on.runtime_status["status"] == ""
    assert [d.lines for d in a] == [d.lines for d in b]
    assert a[-1].verdict == "proceed"


def test_phase_shift_fires_holds_and_is_recorded(sim):
    s, cfg = sim
    late = _late(s.canary)
    on, off = Gate(cfg, GateSettings()), Gate(cfg, GateSettings(runtime_check=0.0))
    a, b = on.run(late), off.run(late)
    t = on.runtime_status["fired_at"]
    assert 0 <= t < 200, on.runtime_status
    assert "daily cycle runs later" in on.runtime_status["reason"]
    # before the check fires: the same verdicts and the same audit lines, bit for bit
    assert [d.lines for d in a[:t]] == [d.lines for d in b[:t]]
    # from the firing tick on: the gate record says so, with the tick
    gate_rec = a[t].records[-1]
    assert gate_rec["runtime_check"].startswith(f"one-sample, uncertified at tick {t}: run-time model check")
    assert "runtime_check" not in a[t - 1].records[-1]
    assert a[-1].verdict != "proceed"


def test_fired_check_holds_a_proceed_unless_allowed(sim):
    """A canary *better* than the baseline by 0.5 sd on p99, TTFT and cost (signals that carry the daily
    cycle): the families see no harm and the check-off gate proceeds; to the check it is a benign offset
    it cannot tell from a misfit (documented), so it fires and the gate extends instead, unless
    ``runtime_check_proceed`` allows the proceed."""
    from deploysignal.simulate._core import _PROFILE

    s, cfg = sim
    v = s.canary.values.copy()
    for j, name in enumerate(s.canary.signals):
        if name in ("p99_latency_ms", "ttft_ms", "cost_per_request"):
            v[:, j] -= 0.5 * _PROFILE[name][1]
    better = Frame(s.canary.timestamps, v, s.canary.signals)
    on = Gate(cfg, GateSettings())
    held, free = on.run(better), Gate(cfg, GateSettings(runtime_check=0.0)).run(better)
    assert on.runtime_status["fired_at"] >= 0
    assert free[-1].verdict == "proceed" and held[-1].verdict == "extend"
    assert Gate(cfg, GateSettings(runtime_check_proceed=True)).run(better)[-1].verdict == "proceed"


def test_state_round_trip_continues_identically(sim):
    s, cfg = sim
    late = _late(s.canary)
    whole = Gate(cfg, GateSettings()).run(late)
    g = Gate(cfg, GateSettings())
    first = g.update_many(late.timestamps[:30], late.values[:30])
    st = json.loads(json.dumps(g.state()))
    g2 = Gate.from_state(cfg, GateSettings(), st)
    rest = g2.update_many(late.timestamps[30:], late.values[30:])
    assert [d.lines for d in first + rest] == [d.lines for d in whole]
    assert g2.runtime_status["fired_at"] >= 0


def test_no_harmful_shift_raises_phase_or_level_evidence(sim):
    """Property of the construction: the phase and level parts read only the benign half of their
    regressors, so raising any oriented innovation of a one-sided signal (a regression of any shape)
    never raises their log e-value, at any tick."""
    s, cfg = sim
    P, n = 64, 480
    rng = np.random.default_rng(22)
    k = len(cfg.names)
    one_sided = ~np.asarray(cfg.arrays["two_sided"], dtype=bool)
    z = rng.standard_normal((P, n, k)) + rng.normal(0, 0.3, size=(P, 1, k))  # some paths with level offsets of either sign
    z[rng.random(z.shape) < 0.03] = np.nan
    onset = rng.integers(0, n, size=P)
    size = rng.exponential(1.0, size=(P, 1, k)) * (rng.random((P, 1, k)) < 0.5) * one_sided
    ramp = rng.random(P) < 0.5
    t = np.arange(n)[None, :, None]
    shape = np.where(ramp[:, None, None], np.clip((t - onset[:, None, None]) / 100.0, 0, 1), t >= onset[:, None, None])
    spikes = (rng.random(z.shape) < 0.02) * 20.0 * one_sided
    shifted = z + size * shape + spikes
    gate = Gate(cfg, GateSettings())
    plain, harm = RuntimeCheck([cfg] * P, 0.01), RuntimeCheck([cfg] * P, 0.01)
    for i, ts in enumerate(s.canary.timestamps.tolist()):
        cells = gate._cell(ts, "")[0], gate._cell(ts - 3600.0, "")[0], gate._cell(ts + 3600.0, "")[0]
        plain.step(i, z[:, i], *cells)
        harm.step(i, shifted[:, i], *cells)
        assert (harm.log_e()[:, :2] <= plain.log_e()[:, :2] + 1e-9).all(), f"tick {i}"


def test_cli_json_audit_and_replay_say_uncertified(tmp_path, sim):
    s, cfg = sim
    base, can = tmp_path / "baseline.csv", tmp_path / "canary.csv"
    for path, frame in ((base, s.baseline), (can, _late(s.canary))):
        rows = ["timestamp," + ",".join(frame.signals)]
        rows += [f"{t!r}," + ",".join(repr(float(v)) for v in row) for t, row in zip(frame.timestamps.tolist(), frame.values)]
        path.write_text("\n".join(rows) + "\n")
    cfg_path, audit = tmp_path / "cfg.json", tmp_path / "audit.jsonl"
    r = runner.invoke(app, ["calibrate", str(base), "-o", str(cfg_path), "--seed", "0", "--no-robust", "--backtest-windows", "0"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["gate", str(can), "-c", str(cfg_path), "--audit", str(audit), "--json"])
    last = json.loads(r.output.strip().splitlines()[-1])
    assert r.exit_code in (3, 4), r.output
    assert last["certified"] is False and last["basis"] == "one-sample, uncertified"
    assert last["certification_reasons"][0].startswith(f"one-sample, uncertified at tick {last['runtime_check']['fired_at']}: ")
    assert last["verdict"] != "proceed"
    lines = [json.loads(x)["record"] for x in audit.read_text().splitlines()]
    assert lines[0]["settings"]["runtime_check"] == 0.01
    assert any("runtime_check" in x for x in lines if x.get("family") == "gate")
    r = runner.invoke(app, ["replay", str(can), "-c", str(cfg_path), "--audit", str(audit)])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("seed", range(3))
def test_heavy_tailed_healthy_canary_is_not_flagged(seed):
    """Review finding 1: Student-t(3) innovations (the ``healthy_heavy`` law, here with a daily cycle) are
    MAD-scaled by the compiler, so their z have E[z^2] > 1; the variance part must be calibrated on the
    baseline's own innovations, not on a unit variance. Healthy heavy-tailed canaries: the check does not
    fire and every verdict and audit line is that of the gate without it."""
    s = simulate("healthy", seed=seed, baseline_ticks=4320, canary_ticks=960, noise=NoiseSpec(diurnal=2.0, kind="t3"))
    cfg = compile_baseline(s.baseline, seed=seed, robust_covariance=False)
    on, off = Gate(cfg, GateSettings()), Gate(cfg, GateSettings(runtime_check=0.0))
    a, b = on.run(s.canary), off.run(s.canary)
    assert on.runtime_status["fired_at"] == -1, on.runtime_status
    assert [d.lines for d in a] == [d.lines for d in b]


def test_check_stops_at_the_final_decision(sim):
    """Review finding 3: the canary one hour late (the check fires at about tick 60 on it), gated with a
    40-tick window and no extension, so the verdict is final at tick 39, before the check can fire. The
    decision was made while the model held, so the check stops there: it does not fire, the run stays
    certified (``gate --json`` and the service read ``runtime_status``), and every line, in one batch or
    tick by tick, equals the check-off gate's. A gate whose window is long enough fires on the same data."""
    s, cfg = sim
    late = _late(s.canary)
    short = GateSettings(window=40, max_extensions=0)
    on, off = Gate(cfg, short), Gate(cfg, short.model_copy(update={"runtime_check": 0.0}))
    a, b = on.run(late), off.run(late)
    assert b[-1].final and b[-1].decided_at_tick == 39, b[-1]
    st = on.runtime_status
    assert st["fired_at"] == -1 and st["stopped_at"] == 39, st
    assert [d.lines for d in a] == [d.lines for d in b]
    one = Gate(cfg, short)
    assert [one.update(t, v).lines for t, v in zip(late.timestamps, late.values)] == [d.lines for d in b]
    assert one.runtime_status == st
    longer = Gate(cfg, GateSettings(window=10**6, max_extensions=0))
    longer.run(late)
    assert 39 < longer.runtime_status["fired_at"] < 480, longer.runtime_status


def test_status_says_when_the_variance_part_is_off(sim):
    """Second review, note 5: a config without a reference pair (one held-out row per tier: family C's
    minimum) cannot bound the variance part's null rate (its bound is 1: the part never fires);
    ``runtime_status`` says so instead of staying silent, and a config with reference rows has no such entry."""
    s, cfg = sim
    bare = cfg.model_copy(update={"reference": {t: rows[:1] for t, rows in cfg.reference.items()}})
    st = Gate(bare, GateSettings()).runtime_status
    assert "variance part is off" in st["variance_off"], st
    assert "variance_off" not in Gate(cfg, GateSettings()).runtime_status
