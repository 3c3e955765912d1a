"""Scenario suite: determinism, nulls are nulls, effects are where the documentation says."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from deploysignal._exceptions import InputError
from deploysignal.simulate._suite import NULL_SCENARIOS, REGRESSION_SCENARIOS, SUITE, postmortem_effects, simulate_suite


@pytest.mark.parametrize("name", list(SUITE))
def test_deterministic_given_seed(name: str) -> None:
    a = simulate_suite(name, 7, canary_ticks=240, baseline_ticks=1440)
    b = simulate_suite(name, 7, canary_ticks=240, baseline_ticks=1440)
    c = simulate_suite(name, 8, canary_ticks=240, baseline_ticks=1440)
    for fa, fb in ((a.baseline, b.baseline), (a.canary, b.canary), (a.control, b.control)):
        assert fa.values.tobytes() == fb.values.tobytes()
        assert fa.timestamps.tobytes() == fb.timestamps.tobytes()
    assert a.canary.values[~np.isnan(a.canary.values)].tobytes() != c.canary.values[~np.isnan(c.canary.values)].tobytes()
    assert a.truth["expected"] == SUITE[name].expected
    assert a.canary.timestamps[0] > a.baseline.timestamps[-1]


def test_suite_covers_the_issue() -> None:
    assert set(NULL_SCENARIOS) == {"null_iid", "null_ar1", "null_diurnal", "null_heavy", "null_gappy"}
    assert {"step", "slow_ramp", "refusal_creep", "tail_widening", "joint_shift", "oscillation", "error_bursts",
            "cohort_dip", "slowbleed", "postmortem_2025"} == set(REGRESSION_SCENARIOS)
    with pytest.raises(InputError):
        simulate_suite("nope")


def _effect(name: str, signal: str, seeds: range = range(6)) -> tuple[float, float]:
    """Mean (canary - control) of a signal before / after onset, in marginal sd, over a few seeds."""
    pre, post = [], []
    for s in seeds:
        sim = simulate_suite(name, s, canary_ticks=480, baseline_ticks=1440)
        j = sim.canary.signals.index(signal)
        d = sim.canary.values[:, j] - sim.control.values[:, j]
        sd = np.nanstd(sim.baseline.values[:, j])
        on = SUITE[name].onset or 0
        pre.append(np.nanmean(d[:on]) / sd if on else 0.0)
        post.append(np.nanmean(d[on + 120 :]) / sd)
    return float(np.mean(pre)), float(np.mean(post))


@pytest.mark.parametrize(
    "name,signal,sign",
    [("step", "p99_latency_ms", 1), ("slow_ramp", "eval_score", -1), ("refusal_creep", "refusal_rate", 1),
     ("slowbleed", "mfu", -1), ("error_bursts", "downstream_error_rate", 1), ("tail_widening", "ttft_ms", 1),
     ("joint_shift", "p99_latency_ms", -1), ("cohort_dip", "eval_score", -1)],
)
def test_regression_moves_signal_after_onset(name: str, signal: str, sign: int) -> None:
    pre, post = _effect(name, signal)
    assert abs(pre) < 0.3
    assert sign * post > 0.15


def test_nulls_have_no_effect() -> None:
    for name in NULL_SCENARIOS:
        sim = simulate_suite(name, 0, canary_ticks=480, baseline_ticks=1440)
        d = np.nanmean(sim.canary.values - sim.control.values, axis=0) / np.nanstd(sim.baseline.values, axis=0)
        assert np.all(np.abs(d) < 0.6), name  # two independent draws of the same process


def test_tail_widening_keeps_median() -> None:
    sim = simulate_suite("tail_widening", 2, canary_ticks=960, baseline_ticks=1440)
    j = sim.canary.signals.index("ttft_ms")
    a, b = sim.canary.values[60:, j], sim.control.values[60:, j]
    sd = np.std(sim.baseline.values[:, j])
    assert abs(np.median(a) - np.median(b)) / sd < 0.25
    assert (np.quantile(a, 0.95) - np.quantile(b, 0.95)) / sd > 1.0


def test_gappy_has_gaps_and_missing_cells() -> None:
    sim = simulate_suite("null_gappy", 0)
    assert np.isnan(sim.canary.values).mean() == pytest.approx(0.05, abs=0.01)
    assert (np.diff(sim.canary.timestamps) > 60).sum() > 10


def test_cohort_dip_hits_one_tier() -> None:
    sim = simulate_suite("cohort_dip", 0, canary_ticks=600, baseline_ticks=1440)
    j = sim.canary.signals.index("eval_score")
    d = sim.canary.values[:, j] - sim.control.values[:, j]
    ent = sim.canary.cohort == "enterprise"
    assert d[ent][20:].mean() < -0.01 and abs(d[~ent].mean()) < 0.003


def test_postmortem_anchors() -> None:
    eff = postmortem_effects(31 * 24, np.random.default_rng(0))
    r = eff["routing"]
    assert r[0] == pytest.approx(0.008, rel=0.5)
    start = datetime(2025, 8, 5, tzinfo=timezone.utc)

    def hour(m: int, d: int, h: int = 0) -> int:
        return int((datetime(2025, m, d, h, tzinfo=timezone.utc) - start).total_seconds() // 3600)

    assert r.max() == pytest.approx(0.16) and hour(8, 31) <= int(np.argmax(r)) < hour(9, 1)
    assert r[: hour(8, 29)].max() < 0.02  # small until the load-balancing change
    c = eff["corruption"]
    assert c[: hour(8, 25)].sum() == 0 and c[hour(9, 2) :].sum() == 0 and c.sum() > 0
    k = eff["topk"]
    assert k[: hour(8, 25)].sum() == 0 and 0 < (k > 0).mean() < 0.2
    sim = simulate_suite("postmortem_2025", 0)
    assert sim.truth["tick_seconds"] == 3600.0 and len(sim.canary) == 31 * 24
    assert datetime.fromtimestamp(sim.canary.timestamps[0], timezone.utc) == start
