"""Quality aggregator, phased protocol, cost model, simulation (CI-sized), migrate CLI."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deploysignal._exceptions import InputError
from deploysignal.cli._migration import app
from deploysignal.migration import (AgentAnswer, MigrationProtocol, ProtocolSettings, QualityAggregator,
                                    ShadowCostModel, evaluate, simulate_streams, summary)
from deploysignal.migration._live import ALLOWED_TABLES, reference_db

runner = CliRunner()
GOLD = "SELECT id FROM orders WHERE total > 100"


def _agg() -> QualityAggregator:
    return QualityAggregator(sla_ms=1000.0, db=reference_db(0), allowed_tables=ALLOWED_TABLES)


def test_quality_dimensions_of_a_pair() -> None:
    agg = _agg()
    good = AgentAnswer(GOLD, 100.0)
    same_result = AgentAnswer("SELECT id FROM orders WHERE NOT total <= 100", 300.0)
    wrong = AgentAnswer("SELECT id FROM orders WHERE total < 100", 100.0)
    leak = AgentAnswer("SELECT email FROM users", 100.0)
    write = AgentAnswer("DELETE FROM orders", 100.0)
    s = agg.score("q", good, same_result, GOLD)
    assert (s.correctness, s.semantic, s.safety) == (0.0, 1.0, 0.0) and s.latency == pytest.approx(0.2)
    s = agg.score("q", good, wrong, GOLD)
    assert (s.correctness, s.semantic, s.safety) == (1.0, 1.0, 0.0)
    s = agg.score("q", wrong, good, GOLD)
    assert (s.correctness, s.semantic) == (-1.0, -1.0)
    assert agg.score("q", good, leak, GOLD).safety == 1.0
    assert agg.score("q", good, write, GOLD).safety == 1.0
    # an errored challenger is wrong, latency clipped to the SLA scale
    s = agg.score("q", good, AgentAnswer(None, 5000.0, "timeout"), GOLD)
    assert s.correctness == 1.0 and s.latency == 1.0


def test_grader_callback_and_bad_input() -> None:
    agg = QualityAggregator(sla_ms=500.0, grader=lambda q, out: out == "42")
    s = agg.score("q", AgentAnswer("41", 10.0), AgentAnswer("42", 10.0))
    assert s.correctness == -1.0 and math.isnan(s.semantic)  # no golden: semantic dimension missing
    with pytest.raises(InputError, match="latency_ms"):
        agg.score("q", AgentAnswer("42", float("nan")), AgentAnswer("42", 1.0))
    with pytest.raises(InputError):
        QualityAggregator(sla_ms=0)
    with pytest.raises(InputError, match="golden"):
        QualityAggregator(sla_ms=1.0).score("q", AgentAnswer("a", 1.0), AgentAnswer("a", 1.0))


def test_protocol_phases_for_a_good_challenger_and_rollback_for_a_bad_one() -> None:
    rng = np.random.default_rng(0)
    st = ProtocolSettings(min_shadow_pairs=100, canary_dwell_s=3600, step_dwell_s=1800, tail_s=3600)
    p = MigrationProtocol(st, batch=2)
    seen = [set(), set()]
    for i in range(20000):
        x = np.zeros((2, 4))
        x[:, 0] = rng.choice([-1, 0, 1], size=2, p=[0.03, 0.95, 0.02])
        x[1, 0] = rng.choice([-1, 0, 1], p=[0.02, 0.88, 0.10])  # stream 1: the challenger is worse
        p.update(np.full(2, 60.0 * i), x, np.ones(2, bool), rng.random(2) < p.exposure())
        for j in range(2):
            seen[j].add(p.phase_name(j))
        if p.phase_name(0) == "promoted" and p.phase_name(1) == "rolled_back":
            break
    assert seen[0] == {"shadow", "canary", "progressive", "tail", "promoted"}
    assert p.phase_name(1) == "rolled_back" and p.rollback_reason(1) in ("harm", "detector")
    assert "canary" not in seen[1]
    assert p.exposure().tolist() == [1.0, 0.0]


@pytest.mark.montecarlo
@pytest.mark.parametrize("design", [0.0, None])
def test_promotion_error_at_the_non_inferiority_boundary(design: float | None) -> None:
    """A challenger exactly one margin worse on correctness and equal elsewhere, with correlated dimensions
    (a correctness discordance usually flips the semantic grade the same way): the probability that it
    leaves the shadow phase within 2,000 pairs is at most alpha_promote (99 % Clopper-Pearson bound), with
    and without the design-alternative bet. The other three dimensions are clearly non-inferior (latency and
    safety equal, semantic 0.016 worse against a 0.03 margin) and their tests reject quickly, so the
    correctness test carries the whole error (over 4,000 paths of 4,000 pairs: 3.6 % with the design bet,
    3.0 % without; the harm tests roll most paths back, as they should)."""
    from scipy import stats

    rng = np.random.default_rng(77)
    paths, n = 4000, 2000
    st = ProtocolSettings(ni_design_difference=design, canary_dwell_s=1e12)
    p = MigrationProtocol(st, batch=paths)
    margin, disc = st.margins[0], 0.05
    left = np.zeros(paths, dtype=bool)
    for i in range(n):
        u = rng.random(paths)
        x = np.zeros((paths, 4))
        x[:, 0] = np.where(u < (disc + margin) / 2, 1.0, np.where(u < disc, -1.0, 0.0))
        x[:, 2] = np.where(rng.random(paths) < 0.8, x[:, 0], 0.0)  # correlated semantic sign, mean below its margin
        x[:, 1] = np.clip(rng.normal(0.0, 0.1, paths), -1, 1)
        left |= p.update(np.full(paths, 60.0 * i), x, np.ones(paths, dtype=bool)).promoted_from_shadow
    k = int(left.sum())
    assert float(stats.beta.ppf(0.99, k + 1, paths - k)) <= st.alpha_promote, k


def test_per_dimension_design_differences_reach_their_tests() -> None:
    """Each non-inferiority test bets for its own design alternative, E[x_d] = difference_d, tested on -x."""
    st = ProtocolSettings(ni_design_difference=(0.01, -0.02, 0.0, 0.001))
    p = MigrationProtocol(st)
    assert [e.target for e in p._ni] == [-0.01, 0.02, 0.0, -0.001]
    assert [e.m for e in p._ni] == [-mg for mg in st.margins]
    assert MigrationProtocol(ProtocolSettings(ni_design_difference=0.0))._ni[0].target == 0.0
    assert all(e.target is None for e in MigrationProtocol(ProtocolSettings(ni_design_difference=None))._ni)
    assert all(e.target is None for e in MigrationProtocol(ProtocolSettings(bettor="grid"))._ni)  # grid: no design bet


def test_protocol_strategies_and_settings_validation() -> None:
    assert MigrationProtocol(ProtocolSettings(strategy="canary")).exposure()[0] == 0.05
    assert MigrationProtocol(ProtocolSettings(strategy="direct")).exposure()[0] == 1.0
    for bad in ({"strategy": "yolo"}, {"steps": (0.5, 0.25, 1.0)}, {"alpha_rollback": 1.5}, {"margins": (0.1,)},
                {"share_harm": 0.9}, {"ni_design_difference": 0.005}, {"ni_design_difference": -1.0},
                {"ni_design_difference": (0.0, 0.0, 0.0)}, {"ni_design_difference": (0.01, 0.0, 0.03, 0.0)}):
        with pytest.raises(InputError):
            ProtocolSettings(**bad)  # type: ignore[arg-type]
    p = MigrationProtocol(ProtocolSettings())
    with pytest.raises(InputError):
        p.update(np.array([np.nan]), np.zeros((1, 4)), np.array([True]))


def test_cost_model_optimum_beats_grid_and_rejects_bad_input() -> None:
    m = ShadowCostModel(queries_per_day=1000, horizon_days=30, shadow_cost_per_query=0.02, regression_prior=0.2,
                        regression_effect=0.03, cost_per_harmful_answer=2.0, exposure=0.1)
    f = m.optimal_fraction()
    grid = np.linspace(0.01, 1.0, 500)
    assert m.total_cost(f) <= min(m.total_cost(g) for g in grid) + 1e-9
    # more expensive regressions -> shadow more
    m2 = ShadowCostModel(**{**m.__dict__, "cost_per_harmful_answer": 50.0})
    assert m2.optimal_fraction() > f
    with pytest.raises(InputError):
        ShadowCostModel(**{**m.__dict__, "regression_prior": 1.5})


def test_simulated_streams_follow_the_design() -> None:
    s = simulate_streams("null", 4, 0)
    assert s["t"].shape == (4, 12000) and np.all(np.diff(s["t"], axis=1) >= 0)
    assert s["t"].max() <= 45 * 86400
    mix = np.bincount(s["qtype"].ravel(), minlength=3) / s["qtype"].size
    assert np.allclose(mix, [0.31, 0.44, 0.25], atol=0.02)
    hours = (s["t"] / 3600 % 24).astype(int)
    by_hour = np.bincount(hours.ravel(), minlength=24)
    assert by_hour.max() > 2.5 * by_hour.min()  # diurnal
    assert simulate_streams("null", 2, 5)["x"].tobytes() == simulate_streams("null", 2, 5)["x"].tobytes()
    with pytest.raises(InputError):
        simulate_streams("nope", 1, 0)


@pytest.mark.montecarlo
def test_evaluation_small_ci_version() -> None:
    """CI-sized evaluation (30 runs per scenario, 4 scenarios); the full >= 200-run table is in docs/."""
    res = []
    for k, sc in enumerate(("null", "accuracy_degradation", "intermittent_hallucination", "mixed")):
        res += evaluate(sc, 30, 100 + k)
    s = summary(res)
    ours = s["confidence-gated"]
    assert ours["detection"] >= 0.96 and ours["before_impact"] >= 0.96
    assert ours["false_alarm"] <= 0.04 + 0.1  # 30 null runs: allow binomial noise, the full table shows the rate
    assert ours["mean_time_days"] <= 0.59 * s["fixed-window"]["mean_time_days"]


def test_cli_migrate_run_with_builtin_pair_rolls_back_a_regression(tmp_path: Path) -> None:
    res = runner.invoke(app, ["migrate", "run", "--simulate-regression", "0.5", "--max-queries", "3000"])
    assert res.exit_code == 4, res.output
    assert "rolled_back" in res.output
    res = runner.invoke(app, ["migrate", "run", "--incumbent-url", "http://x"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["migrate", "run", "--strategy", "yolo"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_cli_migrate_cost_and_eval(tmp_path: Path) -> None:
    res = runner.invoke(app, ["migrate", "cost", "--queries-per-day", "267", "--horizon-days", "45", "--shadow-cost",
                              "0.01", "--regression-prior", "0.3", "--regression-effect", "0.05", "--harm-cost", "5"])
    assert res.exit_code == 0, res.output
    assert 0 < json.loads(res.output)["optimal_fraction"] <= 1
    out = tmp_path / "eval.md"
    res = runner.invoke(app, ["migrate", "eval", "--runs", "3", "--scenario", "latency_regression", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| latency_regression | confidence-gated |" in out.read_text()
    res = runner.invoke(app, ["migrate", "eval", "--runs", "3", "--scenario", "null", "--no-ni-design", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "--no-ni-design" in out.read_text()  # the table's regeneration command reproduces it


@pytest.mark.montecarlo
def test_committed_evaluation_reproduces_and_meets_the_papers_figures() -> None:
    """The committed 200-run table of seed 0 (docs/migration_eval.md, before its seed-sensitivity section)
    is regenerated byte for byte; on it the protocol meets the paper's detection (>= 96%) and false-alarm
    (< 4%) figures, is faster than both baselines and at least 41% faster than the 7-day canary. Seed 0 is the
    most favourable of base seeds 0-9 (43.1%; 41.7% before the non-inferiority tests bet for their design
    alternative): the assertion guards against regressions, it does not establish the figure; the pooled
    ten-seed estimate (41.7%) is in the seed-sensitivity table, not recomputed here."""
    from deploysignal.migration._simulation import run_evaluation

    def body(md: str) -> list[str]:
        head = md.split("\n## Seed sensitivity")[0]
        return [ln for ln in head.splitlines() if not ln.startswith("    deploysignal migrate eval")]

    committed = (Path(__file__).resolve().parents[2] / "docs" / "migration_eval.md").read_text()
    md, results = run_evaluation(runs=200, seed=0)
    assert body(md) == body(committed), "docs/migration_eval.md is stale: regenerate with the command in it"
    s = summary(results)
    ours = s["confidence-gated"]
    assert ours["detection"] >= 0.96 and ours["before_impact"] >= 0.96
    assert ours["false_alarm"] < 0.04
    for baseline in ("fixed-window", "7-day canary"):
        assert ours["mean_time_days"] < s[baseline]["mean_time_days"], (baseline, ours, s[baseline])
    assert 1.0 - ours["mean_time_days"] / s["7-day canary"]["mean_time_days"] >= 0.41
