"""Baselines calibrated to a matched false-rollback rate (deploysignal.evaluation._matched)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deploysignal.evaluation._matched import KNOBS, MATCHED_SUFFIX, calibrate, calibration_seed, tuned
from deploysignal.evaluation._runner import METHOD_NAMES, build_methods, replicate_seed
from deploysignal.simulate._suite import SUITE, simulate_suite

SMALL = {"canary_ticks": 240, "baseline_ticks": 1440}


def test_every_baseline_has_a_knob_whose_grid_starts_at_its_default() -> None:
    assert set(KNOBS) == set(METHOD_NAMES) - {"gate"}
    for m in build_methods(list(KNOBS), window=240):
        knob = KNOBS[m.name]
        assert len(set(map(str, knob.grid))) == len(knob.grid) >= 5, m.name
        first = knob.apply(m, knob.grid[0])
        if m.name in ("page_hinkley", "adwin"):  # library defaults: compare the detectors river builds
            attr = "threshold" if m.name == "page_hinkley" else "delta"
            assert getattr(first._make(1.0), attr) == getattr(m._make(1.0), attr), m.name
        else:
            assert first == m, f"{m.name}: grid[0] is not the default setting"
        t = tuned(m, knob.grid[-1])
        assert t.name == m.name + MATCHED_SUFFIX and t != dataclasses.replace(m, name=t.name)


def test_calibration_draws_are_disjoint_from_evaluation_draws() -> None:
    ev = {replicate_seed(0, s, r) for s in SUITE for r in range(200)}
    cal = {calibration_seed(0, s, r) for s in SUITE for r in range(200)}
    assert not ev & cal


@pytest.mark.parametrize("scenario", ["null_ar1", "step"])
def test_kayenta_scored_once_equals_one_run_per_threshold(scenario: str) -> None:
    sim = simulate_suite(scenario, 7, **SMALL)
    (m,) = build_methods(["kayenta"], window=int(sim.truth["window"]))
    knob = KNOBS["kayenta"]
    settings = [knob.apply(m, v) for v in knob.grid]
    many = knob.results(settings, sim.baseline, sim.canary)
    one = [s.run(sim.baseline, sim.canary) for s in settings]
    assert [(r.first_alarm, r.verdict, r.decided_at) for r in many] == [(r.first_alarm, r.verdict, r.decided_at) for r in one]
    assert "rollback" in [r.verdict for r in many]


def test_sensitivity_is_monotone_on_one_draw() -> None:
    """Turning a knob towards the conservative side never turns a proceed into a rollback (same draw)."""
    for seed in (3, 4):
        sim = simulate_suite("null_ar1", seed, **SMALL)
        for m in build_methods(list(KNOBS), window=int(sim.truth["window"])):
            rb = [v == "rollback" for v in KNOBS[m.name].verdicts(m, sim.baseline, sim.canary)]
            assert rb == sorted(rb, reverse=True), (m.name, rb)


def test_calibration_mixes_neighbouring_settings_to_hit_the_target_exactly() -> None:
    kw = dict(target=0.2, reps=5, seed=3, **SMALL)
    cal = calibrate(["gate", "static", "ttest_peek"], ["null_ar1", "null_iid"], **kw)
    assert set(cal) == {"static", "ttest_peek"}  # the gate has no knob: it is not calibrated
    for name, c in cal.items():
        rate = np.array([p["k"] / p["n"] for p in c["curve"]])
        assert c["curve"][0]["n"] == 10 and c["nulls"] == ["null_ar1", "null_iid"]
        assert 0.0 <= c["p_lo"] < 1.0
        assert c["lo_index"] == (c["index"] - 1 if c["matched"] and c["index"] > 0 else c["index"])
        if c["matched"]:
            assert rate[c["index"]] <= 0.2 and (c["index"] == 0 or rate[c["index"] - 1] > 0.2)
            # the mixture's calibration rate is the target (up to rounding), unless the default is already below it
            assert c["calibration_rate"] == pytest.approx(0.2 if c["index"] > 0 else rate[0], abs=1e-6)
        else:
            assert rate.min() > 0.2 and c["p_lo"] == 0.0
    # the peeking t-test at its default level rolls back AR(1) nulls far more often than 20%
    assert cal["ttest_peek"]["curve"][0]["k"] > 2 and cal["ttest_peek"]["index"] > 0
    assert calibrate(["static", "ttest_peek"], ["null_ar1", "null_iid"], jobs=2, **kw) == cal


def test_mixture_uses_the_sensitive_setting_with_probability_p() -> None:
    from deploysignal.evaluation._matched import matched_method

    (m,) = build_methods(["static"], window=240)
    cal = {"index": 3, "lo_index": 2, "p_lo": 0.3}
    scales = [matched_method(m, cal, replicate_seed(0, "step", r)).scale for r in range(2000)]
    share = np.mean(np.array(scales) == KNOBS["static"].grid[2])
    assert set(scales) == {KNOBS["static"].grid[2], KNOBS["static"].grid[3]}
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)
    assert matched_method(m, cal, 17) == matched_method(m, cal, 17)  # a seeded coin per draw


def test_calibrate_rejects_bad_arguments() -> None:
    from deploysignal._exceptions import InputError

    with pytest.raises(InputError, match="reps"):
        calibrate(["static"], ["null_iid"], target=0.05, reps=0)
    with pytest.raises(InputError, match="target"):
        calibrate(["static"], ["null_iid"], target=1.5, reps=1)
