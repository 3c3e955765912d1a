"""Peer baselines: naive-transcription checks, behaviour on planted changes, contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from deploysignal._exceptions import InputError
from deploysignal.evaluation import (
    ADWINMethod,
    FlaggerAnalysis,
    GateMethod,
    KayentaJudge,
    Method,
    MethodResult,
    PageHinkleyMethod,
    PeekingTTest,
    StaticThresholds,
    classify_metric,
    cumulative_welch,
    iqr_outliers,
    mann_whitney_interval,
    reference_rows,
)
from deploysignal.gate import GateSettings
from deploysignal.simulate._suite import simulate_suite
from deploysignal.telemetry import CATALOGUE, Frame

SIGNALS = tuple(CATALOGUE)


def _naive_interval(x: np.ndarray, y: np.ndarray, conf: float) -> tuple[float, float, float, object]:
    """R's wilcox.test asymptotic interval, transcribed with full re-ranking and plain bisection."""
    nx, ny = len(x), len(y)

    def f(mu: float, q: float) -> float:
        pooled = np.concatenate([x - mu, y])
        r = stats.rankdata(pooled)
        dz = r[:nx].sum() - nx * (nx + 1) / 2 - nx * ny / 2
        _, t = np.unique(pooled, return_counts=True)
        sigma = math.sqrt(nx * ny / 12 * ((nx + ny + 1) - np.sum(t**3 - t) / ((nx + ny) * (nx + ny - 1))))
        return (dz - math.copysign(0.5, dz) * (dz != 0)) / sigma - q

    lo_, hi_ = x.min() - y.max(), x.max() - y.min()

    def root(q: float) -> float:
        if f(lo_, q) <= 0:
            return lo_
        if f(hi_, q) >= 0:
            return hi_
        a, b = lo_, hi_
        for _ in range(200):
            m = (a + b) / 2
            if f(m, q) > 0:
                a = m
            else:
                b = m
        return (a + b) / 2

    z = stats.norm.ppf((1 - conf) / 2)
    return root(-z), root(z), root(0.0), f


@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True)])
def test_mann_whitney_interval_matches_naive_transcription(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(0.4, 1, 60), rng.normal(0, 1, 80)
    if ties:
        x, y = np.round(x, 1), np.round(y, 1)
    fast = mann_whitney_interval(x, y, 0.98)
    lo, hi, _est, f = _naive_interval(x, y, 0.98)
    np.testing.assert_allclose(fast[:2], (lo, hi), atol=1e-6 * (x.max() - y.min()))
    # the estimate solves f(mu, 0) = 0, whose solution set is a short flat interval (continuity correction):
    # any point of it is a valid root, so check the equation rather than one particular root
    d = 1e-6 * (x.max() - y.min())
    assert f(fast[2] - d, 0.0) >= 0.0 >= f(fast[2] + d, 0.0)


def test_mann_whitney_estimate_near_hodges_lehmann() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(2.0, 1, 150), rng.normal(0, 1, 150)
    lo, hi, est = mann_whitney_interval(x, y, 0.98)
    hl = float(np.median(np.subtract.outer(x, y)))
    assert abs(est - hl) < 0.02
    assert lo < 2.0 < hi


def test_classify_metric_labels() -> None:
    rng = np.random.default_rng(4)
    c = rng.normal(100, 5, 200)
    assert classify_metric(c + 20, c, "increase") == "High"
    assert classify_metric(c - 20, c, "decrease") == "Low"
    assert classify_metric(c + 20, c, "decrease") == "Pass"  # harmless direction
    assert classify_metric(c.copy(), c, "either") == "Pass"
    assert classify_metric(np.array([]), c, "either") == "Nodata"
    # mean-ratio effect gate: a significant increase is not High if the mean ratio is below allowed_increase
    assert classify_metric(c + 20, c, "increase", allowed_increase=1.5) == "Pass"


def test_iqr_outliers_flags_planted_value() -> None:
    v = np.concatenate([np.random.default_rng(5).normal(size=500), [50.0]])
    mask = iqr_outliers(v)
    assert mask[-1] and mask[:-1].sum() == 0


def _frames(n_base: int = 2880, n: int = 480, shift: dict[str, float] | None = None, seed: int = 0) -> tuple[Frame, Frame]:
    rng = np.random.default_rng(seed)
    level = np.array([850, 220, 0.8, 0.95, 0.03, 0.01, 0.004, 410, 0.6, 0.4, 0.02, 14.0])
    sd = level * 0.02
    base = Frame(np.arange(n_base) * 60.0, level + sd * rng.standard_normal((n_base, 12)), SIGNALS)
    can = level + sd * rng.standard_normal((n, 12))
    for name, k in (shift or {}).items():
        can[:, SIGNALS.index(name)] += k * sd[SIGNALS.index(name)]
    return base, Frame(n_base * 60.0 + np.arange(n) * 60.0, can, SIGNALS)


def test_kayenta_score_one_failing_metric_of_twelve() -> None:
    base, can = _frames(shift={"ttft_ms": 3.0})
    judge = KayentaJudge()
    dirs = ["increase"] * 12
    score = judge.score(can.values, base.values[-480:], dirs)
    assert score == round(100 * 11 / 12, 2)  # WeightedSumScorer rounds to two decimals


def test_kayenta_score_fails_with_half_the_metrics_nodata() -> None:
    """WeightedSumScorer.tooManyNodata: >= 50% Nodata metrics score 0 (the others all Pass); < 50% are
    left out of the score."""
    base, can = _frames()
    ev, ctl = can.values[:, :4].copy(), base.values[-480:, :4]
    ev[:, :2] = np.nan  # two of four metrics without canary data
    assert KayentaJudge().score(ev, ctl, ["increase"] * 4) == 0.0
    ev[:, 1] = can.values[:, 1]  # one of four
    assert KayentaJudge().score(ev, ctl, ["increase"] * 4) == 100.0


def test_kayenta_mean_ratio_nan_skips_the_effect_size_check() -> None:
    """EffectSizes.meanRatio is NaN when the control mean is 0; the High condition then rests on the
    interval alone (the old transcription took the ratio as 1.0, which fails allowed_increase > 1)."""
    ctl = np.arange(-149.5, 150.0, 1.0)  # symmetric half-integers: the mean is exactly 0
    assert float(np.mean(ctl)) == 0.0
    exp = np.random.default_rng(1).normal(200.0, 50.0, 300)
    assert classify_metric(exp, ctl, "increase", allowed_increase=1.2) == "High"


def test_kayenta_stage_rolls_back_at_window_end_and_proceeds_when_clean() -> None:
    base, can = _frames(shift={"ttft_ms": 3.0})
    r = KayentaJudge(window=480, interval=60).run(base, can)
    assert r.verdict == "rollback" and r.first_alarm == 479  # marginal all along, fails the final pass check
    base, can = _frames(seed=1)
    r = KayentaJudge(window=480, interval=60).run(base, can)
    assert r.verdict == "proceed" and r.decided_at == 479
    ups = ("p99_latency_ms", "ttft_ms", "refusal_rate", "downstream_error_rate", "cost_per_request")
    base, can = _frames(shift={n: 3.0 for n in ups})
    r = KayentaJudge(window=480, interval=60).run(base, can)
    assert r.verdict == "rollback" and r.first_alarm == 59  # 5 of 12 fail: score 58 < marginal at first run


def test_static_thresholds() -> None:
    base, can = _frames(shift={"p99_latency_ms": 60.0})  # +120%: more than x2 of the mean
    r = StaticThresholds().run(base, can)
    assert r.verdict == "rollback" and r.first_alarm == 0
    base, can = _frames()
    assert StaticThresholds().run(base, can).verdict == "proceed"


def test_flagger_counter_counts_failed_rounds() -> None:
    base, can = _frames()
    vals = can.values.copy()
    j = SIGNALS.index("downstream_error_rate")
    vals[100:103, j] = 1.0  # 3 ticks far out: 5-tick averages fail for 7 rounds
    one = ("downstream_error_rate",)
    r = FlaggerAnalysis(threshold=5, signals=one).run(base, Frame(can.timestamps, vals, SIGNALS))
    assert r.verdict == "rollback" and r.first_alarm == 104
    r = FlaggerAnalysis(threshold=8, signals=one).run(base, Frame(can.timestamps, vals, SIGNALS))
    assert r.verdict == "proceed"


def test_cumulative_welch_prefixes_with_missing_values() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(40, 2))
    x[5, 0] = np.nan
    t, df = cumulative_welch(x, y)
    for n in (3, 10, 40):
        xs = x[:n, 0][~np.isnan(x[:n, 0])]
        ref = stats.ttest_ind(xs, y[:n, 0], equal_var=False)
        assert t[n - 1, 0] == pytest.approx(ref.statistic)
        assert df[n - 1, 0] == pytest.approx(ref.df)
    assert np.isnan(t[0]).all()


def test_peeking_ttest_fires_on_shift_and_inflates_on_null() -> None:
    base, can = _frames(shift={"eval_score": -1.0})
    r = PeekingTTest().run(base, can)
    assert r.verdict == "rollback" and r.first_alarm < 100
    # the peeking procedure: over many looks its false-alarm rate on an i.i.d. null exceeds its level
    fired = sum(PeekingTTest(bonferroni=False).run(*_frames(seed=s, n_base=1440)).verdict == "rollback" for s in range(20))
    assert fired / 20 > 0.05


def test_river_methods_fire_on_large_shift() -> None:
    pytest.importorskip("river")
    base, can = _frames(shift={"ttft_ms": 4.0})
    for m in (PageHinkleyMethod(), ADWINMethod()):
        r = m.run(base, can)
        assert r.verdict == "rollback" and r.first_alarm < 120


def test_gate_method_rolls_back_on_step_and_proceeds_on_null() -> None:
    sim = simulate_suite("step", 1, canary_ticks=480, baseline_ticks=2880)
    r = GateMethod(GateSettings(window=480)).run(sim.baseline, sim.canary)
    assert r.verdict == "rollback" and r.first_alarm >= 60
    assert r.trace is not None and r.trace[r.first_alarm] >= 0.0
    sim = simulate_suite("null_iid", 1, canary_ticks=480, baseline_ticks=2880)
    r = GateMethod(GateSettings(window=480)).run(sim.baseline, sim.canary)
    assert r.verdict == "proceed"


def test_methods_follow_contract_and_are_deterministic() -> None:
    sim = simulate_suite("slowbleed", 3, canary_ticks=300, baseline_ticks=2880)
    methods = [GateMethod(GateSettings(window=240)), KayentaJudge(window=240, interval=30), StaticThresholds(window=240),
               FlaggerAnalysis(window=240), PeekingTTest(window=240)]
    for m in methods:
        assert isinstance(m, Method)
        a, b = m.run(sim.baseline, sim.canary), m.run(sim.baseline, sim.canary)
        assert (a.first_alarm, a.verdict, a.decided_at) == (b.first_alarm, b.verdict, b.decided_at)
        assert a.trace is not None and len(a.trace) == len(sim.canary)
        c = m.run(sim.baseline, sim.canary, sim.control)  # two-sample mode runs too
        assert c.verdict in ("proceed", "extend", "rollback")


def test_method_result_validation() -> None:
    with pytest.raises(InputError):
        MethodResult(None, "rollback", 3)
    with pytest.raises(InputError):
        MethodResult(5, "proceed", 5)
    with pytest.raises(InputError):
        MethodResult(None, "maybe", None)


def test_reference_rows_same_time_yesterday() -> None:
    base = Frame(np.arange(2880) * 60.0, np.zeros((2880, 1)), ("x",))
    can = Frame(2880 * 60.0 + np.arange(10) * 60.0, np.zeros((10, 1)), ("x",))
    rows = reference_rows(base, can)
    np.testing.assert_array_equal(base.timestamps[rows], can.timestamps - 86400.0)
    short = Frame(np.arange(100) * 60.0, np.zeros((100, 1)), ("x",))
    assert (reference_rows(short, can) >= 90).all()
