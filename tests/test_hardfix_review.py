"""Review fixes of the issue-23 hardening: what 0.4.0 accepted stays readable (replay of a real 0.4.0
log); a gate that failed closed or was voided never proceeds but still rolls back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from deploysignal.cli import app
from test_issue23_values import _ramp, _run  # the slow-ramp runs of the issue-23 property tests

FIX = Path(__file__).parent / "fixtures" / "v040_rate95"


def test_a_real_0_4_0_log_with_an_out_of_domain_rate_still_replays():
    """``fixtures/v040_rate95`` was written by 0.4.0 (see its README): row 11 holds a success rate of 95,
    which 0.4.0 accepted. New input is screened (``gate`` on the same file is exit 2 naming the row and
    signal), but replay re-derives what was accepted: every record matches (exit 0)."""
    runner = CliRunner()
    r = runner.invoke(app, ["replay", "-c", str(FIX / "cfg.json"), "--audit", str(FIX / "audit040.jsonl"), str(FIX / "canary.csv")])
    assert r.exit_code == 0, r.output
    assert "120 records match" in " ".join(r.output.split())
    r = runner.invoke(app, ["gate", "-c", str(FIX / "cfg.json"), str(FIX / "canary.csv"), "--window", "20"])
    assert r.exit_code == 2 and "row 11" in r.output and "tool_success_rate" in r.output, r.output


def _decide(closed_state, t, lw_a, fired_a):
    """One call of the compiled verdict update for one stream, family A (alpha 0.02) and B."""
    import numpy as np

    from deploysignal.detectors._kernels import decide_step

    st = closed_state
    decide_step(
        t, np.array([[lw_a, np.nan]]), np.array([[fired_a, False]]), np.zeros(1, dtype=bool), np.ones(1, dtype=bool),
        np.zeros(1, dtype=bool), np.array([-np.log(0.02), np.inf]), 10, 20, 0.8, 0.5, False, 0.5,
        st["n_valid"], st["max_lw"], st["verdict"], st["final"], st["decided_at"], st["first_fire"], st["b_warn"], st["closed"],
        np.zeros(1, dtype=bool),  # hold: the run-time model check has not fired
    )


def test_failing_closed_never_proceeds_but_a_later_fire_still_rolls_back():
    """A NaN log-wealth at tick 2 closes the stream (final extend); no window end proceeds it (ticks up to
    the horizon with no evidence), and a fire at tick 15 turns it into a rollback decided at 15 (before
    the fix the final extend stayed and the fire was never recorded)."""
    import numpy as np

    from deploysignal.detectors._kernels import EXTEND, ROLLBACK

    st = {"n_valid": np.zeros(1, dtype=np.int64), "max_lw": np.full((1, 2), -np.inf), "verdict": np.zeros(1, dtype=np.int64),
          "final": np.zeros(1, dtype=bool), "decided_at": np.full(1, -1, dtype=np.int64), "first_fire": np.full((1, 2), -1, dtype=np.int64),
          "b_warn": np.zeros(1, dtype=bool), "closed": np.zeros(1, dtype=bool)}
    for t in range(15):
        _decide(st, t, np.nan if t == 2 else 0.0, False)
        if t >= 2:
            assert st["verdict"][0] == EXTEND and st["final"][0] and st["closed"][0] and st["decided_at"][0] == 2
    _decide(st, 15, 10.0, True)
    assert st["verdict"][0] == ROLLBACK and st["final"][0] and st["decided_at"][0] == 15 and st["first_fire"][0, 0] == 15
    _decide(st, 16, 0.0, False)  # a rollback is final
    assert st["verdict"][0] == ROLLBACK and st["decided_at"][0] == 15


def _summary(ds):
    return [(d.tick, d.verdict, d.final, d.decided_at_tick, d.fired_families,
             [(e.family, e.log_wealth) for e in d.evidence]) for d in ds]


@pytest.mark.parametrize("mode", ["one-sample", "two-sample"])
@pytest.mark.parametrize("ticks", [(560,), tuple(range(5, 560, 50))], ids=["late", "spaced"])
@pytest.mark.parametrize(("signal", "value", "policy", "note"), [("eval_score", 1e307, "missing", "out-of-domain:eval_score"),
                                                                 ("ttft_ms", -1e307, "reject", "spike:ttft_ms")])
def test_a_spike_for_the_canary_counts_as_a_missing_value(mode, ticks, signal, value, policy, note):
    """The review's cases: eval_score = +1e307 (its good direction, ~1e309 sd) at tick 560 moved the slow
    ramp's rollback (584 one-sample / 561 two-sample) to 594 / 588; at ticks 5, 55, ..., 555 it gave a
    final proceed at 479 in both modes. Now each such spike is a missing value, noted in the tick's
    records (``schema_continuity``): the decisions and every family's evidence equal those of the same
    run with NaN there, and the ramp is rolled back by family A. Since declared ranges, +1e307 is out
    of eval_score's [0, 1] (rejected, or missing under ``out_of_domain="missing"``); the spike path
    itself is checked on ttft_ms (no declared range), -1e307 being its good direction."""
    spiked = _run(mode, {(t, signal): value for t in ticks}, policy=policy)
    missing = _run(mode, {(t, signal): math.nan for t in ticks}, policy=policy)
    assert spiked[-1].verdict == "rollback" and spiked[-1].fired_families == ("A",)
    assert _summary(spiked) == _summary(missing)
    for t in ticks:
        if t < len(spiked):
            assert all(r["schema_continuity"] == note for r in spiked[t].records), spiked[t].records[0]
            assert all(r["schema_continuity"] == "ok" for r in missing[t].records)


def _continuous_signals():
    """Continuous signals without a declared range: any finite value is inside their domain."""
    _sim, cfg = _ramp()
    return [s.name for s in cfg.signals if s.kind == "continuous" and s.range is None]


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), mode=st.sampled_from(["one-sample", "two-sample"]), on_control=st.booleans())
def test_spikes_at_any_tick_never_delay_a_rollback_beyond_missing_values(data, mode, on_control):
    """Property (review MUST 1): one to twelve spikes (|x| >= 1e20, beyond Z_BOUND baseline sd, either
    sign) at any ticks of the slow ramp, in the canary or the control, leave the rollback (family A) at
    the same or an earlier tick than the same run with those values missing: a spike counting for the
    canary is a missing value, a harmful one is evidence at the clip. (Against the clean run a missing
    value can cost a few ticks: 584 -> 588 for one at tick 560, one-sample.)"""
    sig = _continuous_signals()
    spikes = data.draw(st.dictionaries(st.tuples(st.integers(0, 599), st.sampled_from(sig)),
                                       st.sampled_from([1e307, -1e307, 1e20, -1e20, 1.7976931348623157e308]), min_size=1, max_size=12))
    nans = dict.fromkeys(spikes, math.nan)
    control = on_control and mode == "two-sample"
    spiked = _run(mode, None if control else spikes, spikes if control else None)
    missing = _run(mode, None if control else nans, nans if control else None)
    assert missing[-1].verdict == "rollback"
    assert spiked[-1].verdict == "rollback" and "A" in spiked[-1].fired_families
    assert spiked[-1].tick <= missing[-1].tick, (spiked[-1].tick, missing[-1].tick)


def test_serve_max_clock_skew_only_minus_one_turns_the_check_off():
    """Review note: any value in [-1, 0) turned the clock-skew check off; now only -1 does, others exit 2."""
    r = CliRunner().invoke(app, ["serve", "--max-clock-skew", "-0.5", "--port", "1"])
    assert r.exit_code == 2 and "max-clock-skew" in r.output, r.output


def test_void_refuses_a_missing_store_and_a_non_utf8_reason(tmp_path):
    """Review notes: ``service void --store`` with a mistyped SQLite path created an empty database;
    a reason with an undecodable byte (``$'bad\\xff'``, a lone surrogate in Python) was stored and made
    GET a permanent 500. Both exit 2 now, and the mistyped path is not created."""
    missing = tmp_path / "typo.db"
    r = CliRunner().invoke(app, ["service", "void", "--store", f"sqlite:///{missing}", "--analysis", "a", "--reason", "x"])
    assert r.exit_code == 2 and "no SQLite store" in r.output and not missing.exists(), r.output
    from deploysignal._exceptions import InputError
    from deploysignal.calibration import CompiledConfig
    from deploysignal.gate import Gate

    gate = Gate(CompiledConfig.from_json((FIX / "cfg.json").read_text()))
    for bad in ("bad\udcff", "a\x00b", "two\nlines"):
        with pytest.raises(InputError, match="printable UTF-8"):
            gate.void(bad)
    gate.void("source misconfigured")
    with pytest.raises(InputError, match="already voided"):
        gate.void("again")
    assert gate.void("again", screen=False).verdict == "extend"  # a stored second void (unreleased main) still rebuilds
