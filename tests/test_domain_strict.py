"""Issue 23, values (review fixes): a value outside its signal's declared range is never clamped to the
bound and never used as given; under ``out_of_domain="missing"`` it is exactly that signal of that tick
missing (the reason in the tick's ``schema_continuity``), so a regression rolls back no later than the
same run with those values deleted from the input. The only tolerance is float rounding (1e-9
relative); a value at a bound is inside. Ranges carried by a compiled config are checked on load.

Cost: a few CPU-s (the slow ramp of ``test_issue23_values`` compiled once per session, ~14 gate runs).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_issue23_values import _clean, _ramp

from deploysignal._exceptions import ConfigError
from deploysignal.calibration import CompiledConfig
from deploysignal.gate import Gate, GateSettings
from deploysignal.telemetry import CATALOGUE, Frame, SignalSpec, signal_domains


def _rollback(mode: str, every: int, value: float, policy: str = "missing"):
    """(final tick, verdict, decisions) of the ramp with eval_score = ``value`` every ``every`` ticks."""
    sim, cfg = _ramp()
    j = sim.canary.signals.index("eval_score")
    v = sim.canary.values.copy()
    v[5::every, j] = value
    gate = Gate(cfg, GateSettings(mode=mode, out_of_domain=policy))
    ds = gate.run(Frame(sim.canary.timestamps, v, sim.canary.signals), sim.control if mode == "two-sample" else None)
    d = next((d for d in ds if d.final), ds[-1])
    return d.tick, d.verdict, ds


@pytest.mark.parametrize("mode", ["one-sample", "two-sample"])
@pytest.mark.parametrize("value", [-1e307, -0.26, 1.1, 1.25, 2.0])
def test_out_of_domain_is_the_value_deleted(mode, value):
    """The review's probes: eval_score -1e307 (taken at the bound 0 before: two-sample never rolled back
    within 600 ticks), 1.1 / 1.25 (used as given: no rollback), every 25 ticks. Each must give the run
    with those values deleted (NaN in the input), evidence and rollback tick alike."""
    tick, verdict, ds = _rollback(mode, 25, value)
    ref_tick, ref_verdict, ref = _rollback(mode, 25, math.nan)
    assert ref_verdict == "rollback"
    assert (verdict, tick) == ("rollback", ref_tick), (value, tick, ref_tick)
    assert tick <= _clean(mode)  # and no later than the ramp as simulated (584 one-sample, 561 two-sample)
    for d, r in zip(ds, ref):
        assert [(e.family, e.log_wealth, e.fired) for e in d.evidence] == [(e.family, e.log_wealth, e.fired) for e in r.evidence]
    assert all("out-of-domain:eval_score" in ds[t].schema_continuity for t in range(5, tick + 1, 25))


def test_the_tolerance_is_float_rounding_and_a_bound_is_inside():
    specs = [CATALOGUE["eval_score"], CATALOGUE["tool_success_rate"], SignalSpec("errors", "up", "count", (0.0, 1000.0)),
             SignalSpec("p99", "up", "continuous", (0.0, None)), SignalSpec("errs", "up", "count")]
    d = signal_domains(specs)
    for j, (lo, hi) in enumerate([(0.0, 1.0), (0.0, 1.0), (0.0, 1000.0), (0.0, math.inf), (0.0, math.inf)]):
        assert lo - 1e-8 < d.lo_ok[j] <= lo and hi <= d.hi_ok[j] and (hi == math.inf or d.hi_ok[j] < hi + 1e-5), (j, d.lo_ok[j], d.hi_ok[j])
    sim, cfg = _ramp()
    gate = Gate(cfg, GateSettings(out_of_domain="missing"))
    row = dict(zip(sim.canary.signals, sim.canary.values[0].tolist()))
    assert gate.update(sim.canary.timestamps[0], {**row, "eval_score": 1.0, "tool_success_rate": 0.0}).schema_continuity == "ok"
    d1 = gate.update(sim.canary.timestamps[1], {**row, "eval_score": 1.0 + 1e-6})
    assert d1.schema_continuity == "out-of-domain:eval_score"


@pytest.mark.parametrize(("rng", "what"), [([0.0], "[lo, hi]"), ([1.0, 0.0], "lo < hi"), ([0.0, 100.0], "inside [0, 1]"),
                                           ([None, None], "inside [0, 1]"), (["NaN", 1.0], "finite")])
def test_a_config_range_is_checked_on_load(rng, what):
    """A compiled config whose signal carries a broken range is refused on load naming the signal and
    the field (before: IndexError traceback, a 500, or a rate's domain silently widened)."""
    _sim, cfg = _ramp()
    doc = json.loads(cfg.to_json())
    j = next(i for i, s in enumerate(doc["signals"]) if s["name"] == "tool_success_rate")
    doc["signals"][j]["range"] = [float(x) if isinstance(x, str) else x for x in rng]
    try:
        doc["version_id"] = CompiledConfig.content_id(doc)  # anyone can recompute it
    except ValueError:  # NaN: no canonical JSON
        pass
    text = json.dumps(doc)
    with pytest.raises(ConfigError) as err:
        CompiledConfig.from_json(text)
    assert "tool_success_rate" in str(err.value) and "range" in str(err.value) and what in str(err.value), str(err.value)


def test_signals_csv_range_errors_name_file_and_row(tmp_path):
    """Review note 9: a range error in a signals CSV names the file and the row, as the YAML form names the file."""
    from deploysignal._exceptions import InputError
    from deploysignal.sources import read_signals_file

    c = tmp_path / "signals.csv"
    c.write_text("name,direction,kind,min,max\nok,up,continuous,0,\nerr,up,rate,0,\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_signals_file(c)
    assert str(c) in str(err.value) and err.value.row == 2 and "err" in str(err.value) and "inside [0, 1]" in str(err.value), str(err.value)


def test_calibrate_says_where_a_declared_range_comes_from():
    """Review note 8: a baseline on another scale than the catalogue's eval_score [0, 1] is refused
    with a message that says how to declare its own range."""
    from deploysignal._exceptions import InputError
    from deploysignal.calibration import compile_baseline

    rng = np.random.default_rng(1)
    base = Frame(np.arange(300.0) * 60, (5 + rng.standard_normal(300)).reshape(-1, 1), ("eval_score",))
    with pytest.raises(InputError) as err:
        compile_baseline(base, check_model=False)
    assert "catalogue" in str(err.value) and "range: [lo, hi]" in str(err.value) and "--signals" in str(err.value), str(err.value)


def test_the_simulator_keeps_rates_in_their_domain():
    """``simulate("healthy_heavy")`` (Student-t(3) innovations) emitted rates outside [0, 1] (a success
    rate of 1.16, a refusal rate of -0.21), clipped by the gate's old one-unit slack; with rates held to
    [0, 1] the simulated baseline would be refused by ``calibrate``. The simulator clips rates to [0, 1]."""
    from deploysignal.simulate import simulate

    for seed in range(4):
        sim = simulate("healthy_heavy", seed=seed)
        for frame in (sim.baseline, sim.canary, sim.control):
            for j, name in enumerate(frame.signals):
                if CATALOGUE[name].kind == "rate":
                    v = frame.values[:, j]
                    assert not ((v < 0.0) | (v > 1.0)).any(), (seed, name, np.nanmin(v), np.nanmax(v))


def test_cli_refuses_a_config_with_a_broken_range_saying_why(tmp_path):
    """``gate -c`` with a config whose rate carries ``range: [0.0]``: exit 2 and the whole message (it
    ended in an IndexError traceback before; rich took ``[lo, hi]`` in the message for markup)."""
    from typer.testing import CliRunner

    from deploysignal.cli import app
    from deploysignal.sources import write_csv

    sim, cfg = _ramp()
    doc = json.loads(cfg.to_json())
    doc["signals"][cfg.names.index("tool_success_rate")]["range"] = [0.0]
    doc["version_id"] = CompiledConfig.content_id(doc)
    (tmp_path / "cfg.json").write_text(json.dumps(doc), encoding="utf-8")
    write_csv(sim.canary.rows(0, 5), tmp_path / "canary.csv")
    r = CliRunner().invoke(app, ["gate", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "cfg.json")])
    assert r.exit_code == 2 and "tool_success_rate" in r.output and "range must be [lo, hi]" in " ".join(r.output.split()), r.output
