"""Issue #26 (migration): per-dimension harm tests with tolerances, the SLA check, and `deploysignal migrate plan`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from deploysignal._exceptions import InputError
from deploysignal.cli._migration import app
from deploysignal.migration import MigrationProtocol, ProtocolSettings
from deploysignal.migration._plan import AgentProfile, simulate_plan
from deploysignal.migration._settings_file import settings_from_mapping
from deploysignal.migration._simulation import HARMFUL, _run_protocol, simulate_streams

runner = CliRunner()
PAPER_INCUMBENT = "accuracy=0.842,latency_ms=38,p99_ms=140,violations=0.004"
PAPER_CHALLENGER = "accuracy=0.896,latency_ms=43,p99_ms=151,violations=0.003"
#: the paper's challenger whose tail grew: p99 300 ms, beyond the 200 ms SLA (3.3 % of answers over it)
SLA_BREAKER = "accuracy=0.896,latency_ms=43,p99_ms=300,violations=0.003"


def _plan(*args: str) -> tuple[dict, str]:
    res = runner.invoke(app, ["migrate", "plan", "--incumbent", PAPER_INCUMBENT, "--sla-ms", "200", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1]), res.output


def _cp99_lower(k: int, n: int) -> float:
    return float(stats.beta.ppf(0.01, k, n - k + 1)) if k > 0 else 0.0


def _cp99_upper(k: int, n: int) -> float:
    return float(stats.beta.ppf(0.99, k + 1, n - k)) if k < n else 1.0


@pytest.mark.montecarlo
def test_paper_example_challenger_is_promoted_and_was_rolled_back_without_the_tolerance() -> None:
    """The paper's example (correctness 84.2 -> 89.6 %, median 38 -> 43 ms, p99 151 ms under a 200 ms SLA,
    violations 0.4 -> 0.3 %) through `deploysignal migrate plan`, 100 seeded runs: promoted in >= 95 % (the
    issue's acceptance figure; here 100 of 100). With the latency tolerance set to 0 (the old harm test:
    any average slowdown is harm) it is rolled back for latency, as issue #26 found."""
    last, text = _plan("--challenger", PAPER_CHALLENGER, "--runs", "100", "--seed", "0")
    assert set(last) >= {"promoted", "rolled_back", "median_days_to_promotion", "median_days_to_rollback"}
    assert last["promoted"] >= 0.95, text
    assert last["median_days_to_promotion"] is not None and 3.0 < last["median_days_to_promotion"] < 20.0
    old, text = _plan("--challenger", PAPER_CHALLENGER, "--runs", "100", "--seed", "0", "--latency-tolerance", "0")
    assert old["rolled_back"] >= 0.9 and old["promoted"] <= 0.05, text
    assert "latency" in text and old["median_days_to_rollback"] < 3.0


@pytest.mark.montecarlo
def test_challenger_breaking_the_sla_is_rolled_back() -> None:
    """Same challenger with its p99 at 300 ms (3.3 % of answers beyond the 200 ms SLA, mean +16 ms): rolled back
    in every one of 60 runs (one-sided 99 % Clopper-Pearson lower bound >= 0.92), never promoted; the SLA
    test is among the dimensions that roll it back."""
    res = simulate_plan(AgentProfile.parse(PAPER_INCUMBENT, "incumbent"), AgentProfile.parse(SLA_BREAKER, "challenger"),
                        sla_ms=200.0, runs=60, seed=3)
    k = round(res.rolled_back * 60)
    assert _cp99_lower(k, 60) >= 0.92, res
    assert res.promoted == 0.0 and "latency_sla" in res.rollback_dimensions, res.rollback_dimensions
    # the SLA part alone: tolerance so wide the mean slowdown is never harm; the p99 still is
    wide = settings_from_mapping({"harm_tolerances": {"latency": 0.5}})
    res = simulate_plan(AgentProfile.parse(PAPER_INCUMBENT, "incumbent"), AgentProfile.parse(SLA_BREAKER, "challenger"),
                        sla_ms=200.0, runs=30, seed=4, settings=wide)
    assert res.rolled_back == 1.0 and set(res.rollback_dimensions) == {"latency_sla"}, res


@pytest.mark.montecarlo
@pytest.mark.parametrize("scenario, runs", [("latency_regression", 30),
                                            *[pytest.param(s, 200, marks=pytest.mark.extended) for s in sorted(HARMFUL)]])
def test_harmful_scenarios_are_still_caught_with_the_tolerances(scenario: str, runs: int) -> None:
    """The evaluation's harmful scenarios under the default tolerances are rolled back (CP99 lower bound in
    the assertion message). CI runs the one the latency tolerance touches (latency x1.35;
    test_evaluation_small_ci_version keeps three others); the 200-run versions of all five are extended."""
    proto, _, _ = _run_protocol(simulate_streams(scenario, runs, 500), ProtocolSettings(), 501)
    k = int((proto.phase == 5).sum())
    # CI's 30 runs: every one caught; 200 runs: the one-sided 99 % lower bound at the paper's 96 % (the
    # 200-run evaluation of seed 0 misses 1 of 200 intermittent-hallucination and authorisation runs)
    assert (k == runs) if runs < 100 else _cp99_lower(k, runs) >= 0.96, (scenario, k, runs, _cp99_lower(k, runs))


def _boundary_paths(paths: int, n: int, seed: int) -> float:
    """A challenger exactly at every harm tolerance, all phases: latency worse by exactly the tolerance on
    average (heavy-tailed, volatility-clustered noise), SLA exceeded exactly 1 % of the time (in bursts
    whose conditional rate stays 1 %), correctness / semantic / safety equal (correlated), the error budget
    not reached. Returns the fraction of paths rolled back within ``n`` pairs."""
    rng = np.random.default_rng(seed)
    st = ProtocolSettings(horizon_pairs=n)
    tol = st.harm_tolerances[1]
    p = MigrationProtocol(st, batch=paths)
    rolled = np.zeros(paths, dtype=bool)
    vol = np.ones(paths)
    for i in range(n):
        u = rng.random(paths)
        x = np.zeros((paths, 4))
        x[:, 0] = np.where(u < 0.025, 1.0, np.where(u < 0.05, -1.0, 0.0))
        x[:, 2] = np.where(rng.random(paths) < 0.8, x[:, 0], 0.0)
        shock = np.clip(rng.standard_t(2, paths) * 0.1 * vol, -0.9, 0.9)  # symmetric: mean exactly 0
        vol = 0.9 * vol + 0.1 * (1 + 5 * np.abs(shock))
        x[:, 1] = tol + shock
        v = rng.random(paths)
        x[:, 3] = np.where(v < 0.001, 1.0, np.where(v < 0.002, -1.0, 0.0))
        sla = (rng.random(paths) < 1.0 - st.sla_quantile).astype(float)
        served = rng.random(paths) < p.exposure()
        # the incumbent never over the SLA: the relative SLA part (default) rejects, so the SLA part's p is the
        # absolute test's, at its boundary (the hardest case for the intersection-union combination)
        rolled |= p.update(np.full(paths, 60.0 * i), x, np.ones(paths, dtype=bool), served, sla,
                           np.zeros(paths)).rolled_back
    return float(rolled.mean())


@pytest.mark.montecarlo
@pytest.mark.parametrize("paths, n", [(400, 3000), pytest.param(2000, 20_000, marks=pytest.mark.extended)])
def test_challenger_exactly_at_the_tolerances_is_rolled_back_at_most_alpha(paths: int, n: int) -> None:
    """The guarantee at the boundary: a challenger exactly at every tolerance (and the SLA quantile exactly at
    the SLA) is rolled back in any phase within ``n`` pairs with probability <= alpha_rollback (one-sided
    99 % Clopper-Pearson upper bound over ``paths`` seeded paths)."""
    rate = _boundary_paths(paths, n, 91)
    k = round(rate * paths)
    assert _cp99_upper(k, paths) <= ProtocolSettings().alpha_rollback, (k, paths)


def test_harm_evidence_is_monotone_in_the_latency_slowdown() -> None:
    """Evidence is monotone in harm: on the same noise, a larger latency slowdown never gives a larger harm
    p-value (latency, including its SLA part) at any pair."""
    rng = np.random.default_rng(5)
    n = 1500
    noise = np.clip(rng.normal(0.0, 0.15, n), -0.8, 0.8)
    exceed = rng.random(n)
    deltas = np.array([0.0, 0.03, 0.06, 0.1])
    p = MigrationProtocol(ProtocolSettings(min_shadow_pairs=10**9), batch=deltas.size)  # one row per slowdown
    for i in range(n):
        x = np.zeros((deltas.size, 4))
        x[:, 1] = np.minimum(1.0, noise[i] + deltas)
        p.update(np.full(deltas.size, 60.0 * i), x, np.ones(deltas.size, dtype=bool), None,
                 (exceed[i] < 0.005 + deltas / 5).astype(float))
        ps = p.harm_p_values()[:, 1]
        assert np.all(np.diff(ps) <= 1e-12), (i, ps)
    assert ps[-1] < 0.01 < 0.5 < ps[0], ps


def test_plan_bad_input_is_named_and_output_is_deterministic() -> None:
    for args, field in ((["--challenger", "accuracy=89.6,latency_ms=43,p99_ms=151,violations=0.003"], "challenger accuracy"),
                        (["--challenger", "accuracy=0.9,latency_ms=43,violations=0.003"], "missing field(s) p99_ms"),
                        (["--challenger", "accuracy=0.9,latency_ms=43,p99_ms=40,violations=0.003"], "challenger p99_ms"),
                        (["--challenger", "accuracy=0.9,latency=43,p99_ms=151,violations=0.003"], "unknown field 'latency'"),
                        (["--challenger", "accuracy=0.9,latency_ms=fast,p99_ms=151,violations=0.003"], "latency_ms must be a number"),
                        (["--challenger", PAPER_CHALLENGER, "--runs", "0"], "runs"),
                        (["--challenger", PAPER_CHALLENGER, "--queries-per-day", "-1"], "queries_per_day"),
                        (["--challenger", PAPER_CHALLENGER, "--latency-tolerance", "1.5"], "harm_tolerances"),
                        (["--challenger", PAPER_CHALLENGER, "--sla-quantile", "1"], "sla_quantile")):
        res = runner.invoke(app, ["migrate", "plan", "--incumbent", PAPER_INCUMBENT, "--sla-ms", "200", *args])
        assert res.exit_code == 2 and field in res.output and "Traceback" not in res.output, (args, res.output)
    a = runner.invoke(app, ["migrate", "plan", "--incumbent", PAPER_INCUMBENT, "--challenger", SLA_BREAKER, "--sla-ms",
                            "200", "--runs", "8", "--seed", "2", "--json"])
    b = runner.invoke(app, ["migrate", "plan", "--incumbent", PAPER_INCUMBENT, "--challenger", SLA_BREAKER, "--sla-ms",
                            "200", "--runs", "8", "--seed", "2", "--json"])
    assert a.exit_code == 0 and a.output == b.output
    full = json.loads(a.output)
    assert full["runs"] == 8 and full["rolled_back"] + full["promoted"] + full["undecided"] == pytest.approx(1.0)
    assert set(full["phase_days"]) == {"shadow", "canary", "progressive", "tail", "promoted", "rolled_back"}


def test_settings_file_and_options_reach_the_protocol(tmp_path) -> None:
    st = settings_from_mapping({"harm_tolerances": {"latency": 0.08, "safety": 0.001}, "sla_quantile": 0.995})
    p = MigrationProtocol(st)
    assert [e.m for e in p._harm] == [0.0, 0.08, 0.0, 0.001] and p._sla.m == pytest.approx(0.005)
    assert [d._e.m for d in p._det] == [0.0, 0.08, 0.0, 0.001]
    for bad, col in (({"harm_tolerance": 0.1}, "harm_tolerance"), ({"harm_tolerances": {"speed": 0.1}}, "harm_tolerances.speed"),
                     ({"harm_tolerances": [0.0, -0.1, 0.0, 0.0]}, "harm_tolerances"), ({"sla_quantile": "high"}, "sla_quantile")):
        with pytest.raises(InputError) as e:
            settings_from_mapping(bad)
        assert e.value.column == col, (bad, e.value.column)
    cfg = tmp_path / "s.yaml"
    cfg.write_text("harm_tolerances: {latency: 0.0}\n")
    # the YAML sets the old behaviour back (no latency tolerance): the paper's challenger is rolled back
    last, _ = _plan("--challenger", PAPER_CHALLENGER, "--runs", "5", "--settings", str(cfg), "--max-days", "5")
    assert last["rolled_back"] == 1.0
    cfg.write_text("harm_tolerances: {latency: 0.0}\nsla_quantile: [1]\n")
    res = runner.invoke(app, ["migrate", "plan", "--incumbent", PAPER_INCUMBENT, "--challenger", PAPER_CHALLENGER,
                              "--sla-ms", "200", "--settings", str(cfg)])
    assert res.exit_code == 2 and "sla_quantile" in res.output


def test_canary_baseline_tests_only_the_traffic_it_served() -> None:
    """The 7-day canary compares the challenger's own outcomes on the ~5 % of queries it served with the
    incumbent's on the rest (unpaired): on a -5 pp degradation it sees ~90 challenger answers in 7 days and
    detects far less often than the same tests on all ~1,840 paired queries of the window would; blue-green
    serves everyone at once and can only roll back after its day of monitoring."""
    from deploysignal.migration._simulation import DAY, _unpaired_tests, evaluate

    s = simulate_streams("accuracy_degradation", 40, 11)
    win = s["t"] < 7 * DAY
    served = (np.random.default_rng(13).random(s["t"].shape) < 0.05) & win
    assert 60 < served.sum(axis=1).mean() < 130 and 1500 < win.sum(axis=1).mean() < 2200
    st = ProtocolSettings()
    rej_served, _ = _unpaired_tests(s["chal"], served, s["inc"], win & ~served, st)
    rej_all, _ = _unpaired_tests(s["chal"], win, s["inc"], win, st)  # as if it had both answers to every query
    assert rej_all.mean() >= 0.9 and rej_served.mean() <= 0.5, (rej_all.mean(), rej_served.mean())
    res = {r.policy: r for r in evaluate("accuracy_degradation", 8, 12, n_queries=2000)}
    assert set(res) == {"confidence-gated", "fixed-window", "7-day canary", "blue-green"}
    bg = res["blue-green"]
    assert not bg.before_impact.any() and np.all(bg.time_days == np.where(bg.rolled_back, 1.0, 0.0))
    assert np.all(res["7-day canary"].promoted == ~res["7-day canary"].rolled_back)


def test_migrate_run_honours_simulate_regression_zero_and_reports_timeline_and_evidence(tmp_path) -> None:
    """`--simulate-regression 0.0` used to become 0.05 (the incumbent's error rate): now a challenger that is
    never wrong, so on the same seed its correctness non-inferiority evidence exceeds the default pair's.
    The run prints its phase timeline and per-dimension evidence; --json carries them."""
    ev = {}
    for flag in ([], ["--simulate-regression", "0.0"]):
        out = tmp_path / f"run{len(flag)}.json"
        res = runner.invoke(app, ["migrate", "run", "--max-queries", "300", "--seed", "4", "--json", str(out), *flag])
        assert res.exit_code in (0, 3), res.output
        assert "phases: shadow (pair 0)" in res.output and "evidence, -log p (non-inferiority / harm): correctness" in res.output
        run = json.loads(out.read_text())
        assert run["timeline"][0] == {"phase": "shadow", "pair": 0, "at_s": 0.0}
        assert run["final_evidence"]["pair"] == run["pairs"] and run["harm_tolerances"] == [0.0, 0.05, 0.0, 0.0]
        ev[len(flag)] = run["final_evidence"]["non_inferiority_max"][0]
    assert ev[2] > ev[0] + 1.0, ev
