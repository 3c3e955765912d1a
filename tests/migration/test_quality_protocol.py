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


def test_golden_reference_must_be_a_string() -> None:
    with pytest.raises(InputError, match="golden reference must be a SQL string, got int") as exc:
        _agg().score("q", AgentAnswer(GOLD, 1.0), AgentAnswer(GOLD, 1.0), 5)  # type: ignore[arg-type]
    assert exc.value.column == "golden"


def test_live_run_stops_with_an_error_on_a_pair_it_cannot_score() -> None:
    """No golden and no grader: every pair fails to score. The router only logs callback errors, so the
    run used to go on without evidence (pairs: 0) until max_queries; it must stop and name the query."""
    import asyncio

    from deploysignal.migration._live import run_migration

    async def agent(q: str) -> str:
        return "select 1"

    qs = iter([(f"q{i}", "simple") for i in range(1000)])
    with pytest.raises(InputError, match="cannot score the pair of query 'q0': need a golden reference") as exc:
        asyncio.run(asyncio.wait_for(run_migration(agent, agent, lambda: next(qs), QualityAggregator(sla_ms=100.0),
                                                   {}.get, settings=ProtocolSettings(), max_queries=1000), 60))
    assert exc.value.column == "golden"
    assert len(list(qs)) > 900  # stopped right after the first pair, not at max_queries


@pytest.mark.parametrize("bad", ["SELECT 'oops", "select 1 /* x", 'SELECT "unterminated'])
def test_untokenizable_answer_grades_wrong_and_unsafe(bad: str) -> None:
    """sqlglot raises TokenError (not ParseError) for an unterminated string or comment: the pair used
    to fail to score at all. Such an answer is wrong and unsafe, as unparseable SQL is."""
    from deploysignal.migration import sql_grade, sql_safety_violation

    assert sql_grade(bad, GOLD, reference_db(0)) == 0 and sql_grade(bad, GOLD) == 0
    assert sql_safety_violation(bad, None) and sql_safety_violation(bad, ALLOWED_TABLES)
    s = _agg().score("q", AgentAnswer(GOLD, 10.0), AgentAnswer(bad, 10.0), GOLD)
    assert (s.correctness, s.semantic, s.safety) == (1.0, 1.0, 1.0)
    s = _agg().score("q", AgentAnswer(bad, 10.0), AgentAnswer(GOLD, 10.0), GOLD)
    assert (s.correctness, s.semantic, s.safety) == (-1.0, -1.0, -1.0)


@pytest.mark.parametrize("golden, why", [("SELECT 'x", "is not SQL that can be parsed"), ("  ", "is empty"),
                                         ("this is not sql at all (((", "is not SQL that can be parsed")])
def test_golden_that_cannot_be_parsed_or_run_is_an_input_error(golden: str, why: str) -> None:
    """A golden that neither parses nor runs grades every answer 0: each pair would be a silent tie."""
    with pytest.raises(InputError, match=f"golden reference {why}") as exc:
        _agg().score("q", AgentAnswer(GOLD, 1.0), AgentAnswer(GOLD, 1.0), golden)
    assert exc.value.column == "golden"
    with pytest.raises(InputError, match=f"golden reference {why}"):
        QualityAggregator(sla_ms=10.0).score("q", AgentAnswer(GOLD, 1.0), AgentAnswer(GOLD, 1.0), golden)


@pytest.mark.parametrize("golden", ["TODO", "n/a", "1", "hello world", "DELETE FROM orders", "VALUES (1)",
                                    "SELECT 1; DROP TABLE orders", "SELECT id FROM orders WHERE total > 100 /* x"])
def test_placeholder_write_or_unparseable_golden_is_rejected_and_never_run(golden: str) -> None:
    """Review finding: a placeholder golden ("TODO") let a challenger answering SELECT 2 be promoted, and
    with a reference database a golden sqlglot could not parse was run on it ("DELETE FROM orders /* x"
    emptied orders). A golden must be one read query; it is rejected (also with a grader) and never run."""
    from deploysignal.migration._quality import golden_problem

    db = reference_db(0)
    assert golden_problem(golden) is not None
    for agg in (QualityAggregator(sla_ms=1000.0, db=db, allowed_tables=ALLOWED_TABLES),
                QualityAggregator(sla_ms=1000.0, db=db, grader=lambda q, out: True)):
        with pytest.raises(InputError, match="golden reference") as exc:
            agg.score("q", AgentAnswer(GOLD, 1.0), AgentAnswer("SELECT 2", 1.0), golden)
        assert exc.value.column == "golden"
    assert db.execute("SELECT COUNT(*) FROM orders").fetchone() == (120,)


@pytest.mark.parametrize("golden", ["SELECT id FROM orders WHERE total > 100",
                                    "WITH s AS (SELECT id FROM orders) SELECT id FROM s",
                                    "SELECT id FROM orders UNION SELECT id FROM items"])
def test_read_query_goldens_are_accepted(golden: str) -> None:
    from deploysignal.migration._quality import golden_problem

    assert golden_problem(golden) is None
    assert _agg().score("q", AgentAnswer(golden, 1.0), AgentAnswer(golden, 1.0), golden).correctness == 0.0


def test_sql_that_may_write_is_never_run_on_the_reference_database() -> None:
    """sql_grade ran a parseable write golden on the database (a "DELETE FROM orders" golden emptied it),
    and an unparseable one too; only SQL passing the safety check is executed."""
    from deploysignal.migration import sql_grade

    db = sqlite3.connect(":memory:")  # writable: the guard in the grader itself is under test
    db.execute("CREATE TABLE orders(id, total)")
    db.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i) for i in range(5)])
    for golden in ("DELETE FROM orders", "DELETE FROM orders /* x", "DROP TABLE orders"):
        assert sql_grade("SELECT id FROM orders WHERE 0", golden, db) == 0
        assert sql_grade(golden, "SELECT id FROM orders WHERE 0", db) == 0
    assert db.execute("SELECT COUNT(*) FROM orders").fetchone() == (5,)


def test_grading_database_is_read_only() -> None:
    """The built-in reference database, and any connection the aggregator receives, reject writes."""
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reference_db(0).execute("DELETE FROM orders")
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t(a)")
    QualityAggregator(sla_ms=10.0, db=db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.execute("INSERT INTO t VALUES (1)")


def test_golden_check_is_cached_per_golden_string() -> None:
    from deploysignal.migration._quality import golden_problem

    agg, golden = _agg(), "SELECT id FROM orders WHERE total > 321"
    before = golden_problem.cache_info()
    for _ in range(5):
        agg.score("q", AgentAnswer(golden, 1.0), AgentAnswer(GOLD, 1.0), golden)
    after = golden_problem.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 4


def _half_bad_run(bad: str, seed: int = 1) -> object:
    import asyncio

    from deploysignal.migration._live import SimulatedSQLPair, run_migration

    pair = SimulatedSQLPair(seed=seed, challenger_error=0.0)
    calls = {"n": 0}

    async def challenger(q: str) -> str:
        calls["n"] += 1
        answer = await pair.challenger(q)
        return bad if calls["n"] % 2 == 0 else answer

    agg = QualityAggregator(sla_ms=2000.0, db=reference_db(seed), allowed_tables=ALLOWED_TABLES)
    return asyncio.run(asyncio.wait_for(run_migration(
        pair.incumbent, challenger, pair.next_query, agg, pair.golden.get, settings=ProtocolSettings(),
        max_queries=5000, time_scale=86_400.0, interval_s=0.0005, seed=seed), 120))


def test_challenger_answering_untokenizable_sql_is_rolled_back_like_a_wrong_one() -> None:
    """Review finding: the same challenger was rolled back when half its answers were wrong-but-parseable
    SQL, and PROMOTED when they were untokenizable, because those pairs raised and were dropped."""
    wrong = _half_bad_run("SELECT id FROM orders WHERE total < 0")
    broken = _half_bad_run("SELECT 'oops")
    assert wrong.final_phase == "rolled_back"  # type: ignore[attr-defined]
    assert broken.final_phase == "rolled_back" and broken.pairs < 200  # type: ignore[attr-defined]


def _run_until_the_grader_fails(n_queries: int, interval_s: float) -> tuple[InputError, dict[str, int]]:
    """A live run whose grader callback raises from its 7th call (the 4th pair); the shadow (challenger)
    path is slow, so requests queue behind it. Returns the PairScoringError and the call counts."""
    import asyncio

    from deploysignal.migration._live import PairScoringError, run_migration

    calls = {"chal": 0, "graded": 0}

    async def incumbent(q: str) -> str:
        return "42"

    async def challenger(q: str) -> str:
        calls["chal"] += 1
        await asyncio.sleep(0.02)
        return "42"

    def grader(q: str, out: str | None) -> bool:
        calls["graded"] += 1
        if calls["graded"] > 6:
            raise RuntimeError("grader backend down")
        return True

    qs = iter([(f"q{i}", "simple") for i in range(n_queries)])
    with pytest.raises(PairScoringError) as exc:
        asyncio.run(asyncio.wait_for(run_migration(
            incumbent, challenger, lambda: next(qs), QualityAggregator(sla_ms=100.0, grader=grader), {}.get,
            settings=ProtocolSettings(), max_queries=n_queries, interval_s=interval_s), 60))
    return exc.value, calls


def test_live_run_stops_on_any_scoring_exception_and_says_where() -> None:
    """Any exception of the scorer (here the grader callback) stops the run: not only InputError. The error
    names the phase, pairs and queries, carries the report, and queued shadow requests are not sent."""
    err, calls = _run_until_the_grader_fails(10_000, 0.001)
    assert isinstance(err, InputError) and isinstance(err.__cause__, RuntimeError)
    assert "RuntimeError: grader backend down" in str(err)
    rep = err.report  # type: ignore[attr-defined]
    assert rep.pairs == 3 and rep.final_phase == "shadow"  # 3 pairs scored (2 grader calls each), the 4th failed
    assert f"run stopped in phase shadow after 3 scored pairs and {rep.queries} of at most 10000 queries" in str(err)
    assert rep.queries < 200
    assert calls["chal"] <= 4 + 2  # the failing pair, in-flight calls of the 2 workers; the queue was discarded


def test_live_run_failing_while_the_router_drains_discards_the_queued_shadow_requests() -> None:
    """Review finding: the queue was discarded only when the main loop broke; a failure while the router
    drains (the loop already finished its max_queries) still made every queued challenger call."""
    err, calls = _run_until_the_grader_fails(60, 0.0)  # all 60 queries are queued before pair 4
    assert err.report.queries == 60 and err.report.pairs == 3  # type: ignore[attr-defined]
    assert calls["chal"] <= 4 + 2  # the failing pair and the workers' in-flight calls, not all 60


def test_live_run_stops_on_a_trailing_pair_at_max_queries() -> None:
    """max_queries reached: a last pair that cannot be scored still stops the run with an error (its
    evidence cannot be dropped) and the message says the query budget was used up."""
    import asyncio

    from deploysignal.migration._live import PairScoringError, run_migration

    async def agent(q: str) -> str:
        return GOLD if q != "q4" else "SELECT 1"

    golden = {f"q{i}": GOLD for i in range(4)} | {"q4": "SELECT 'x"}
    qs = iter([(f"q{i}", "simple") for i in range(5)])
    with pytest.raises(PairScoringError, match=r"'q4': golden reference is not SQL .* after 4 scored pairs and 5 of "
                                               r"at most 5 queries") as exc:
        asyncio.run(asyncio.wait_for(run_migration(agent, agent, lambda: next(qs), _agg(), golden.get,
                                                   settings=ProtocolSettings(), max_queries=5), 60))
    assert exc.value.report.pairs == 4 and exc.value.column == "golden"


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
@pytest.mark.parametrize("design", [0.0, pytest.param(None, marks=pytest.mark.extended)])  # CI keeps the default, 0.0 (docs/testing.md)
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


@pytest.mark.parametrize("line, got", [({"question": "q2"}, "got nothing"),
                                       ({"question": "q2", "golden": 5}, "got int"),
                                       ({"question": "q2", "golden": None, "qtype": "simple"}, "got nothing")])
def test_cli_migrate_run_queries_need_a_string_golden(tmp_path: Path, line: dict, got: str) -> None:
    """The HTTP path grades against the golden SQL only (no grader): a query without one, or with a
    non-string one, is rejected when the file is read, naming the line and the field."""
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question": "q1", "golden": GOLD}) + "\n" + json.dumps(line) + "\n")
    res = runner.invoke(app, ["migrate", "run", "--incumbent-url", "http://127.0.0.1:9/a",
                              "--challenger-url", "http://127.0.0.1:9/b", "--queries", str(q)])
    assert res.exit_code == 2, res.output
    assert "row 2, column 'golden'" in res.output and got in res.output and "Traceback" not in res.output
    q.write_bytes(b'{"question": "q1", "golden": "select \xff"}\n')
    res = runner.invoke(app, ["migrate", "run", "--incumbent-url", "http://127.0.0.1:9/a",
                              "--challenger-url", "http://127.0.0.1:9/b", "--queries", str(q)])
    assert res.exit_code == 2 and "not UTF-8" in res.output, res.output


def test_cli_migrate_run_queries_golden_must_parse_and_questions_be_unique(tmp_path: Path) -> None:
    """An untokenizable golden passed the string check and then every pair was silently dropped; a repeated
    question silently took the later golden. Both are rejected when the file is read, naming the row."""
    q = tmp_path / "q.jsonl"
    args = ["migrate", "run", "--incumbent-url", "http://127.0.0.1:9/a", "--challenger-url", "http://127.0.0.1:9/b",
            "--queries", str(q)]
    q.write_text(json.dumps({"question": "q1", "golden": GOLD}) + "\n" + json.dumps({"question": "q2", "golden": "SELECT 'x"}) + "\n")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "row 2, column 'golden'" in res.output and "golden reference is not SQL that can be parsed" in res.output
    q.write_text("".join(json.dumps({"question": f"q{i % 2}", "golden": f"{GOLD} + {i}"}) + "\n" for i in range(3)))
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "row 3, column 'question'" in res.output, res.output
    assert "question 'q0' already on line 1 with another golden" in res.output
    q.write_text(json.dumps({"question": "q1", "golden": "TODO"}) + "\n")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "row 1, column 'golden'" in res.output, res.output
    assert "golden reference is not a read query" in res.output
    q.write_text(json.dumps({"question": "q1", "golden": GOLD}) + "\n" + "[" * 100_000 + "\n")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "row 2: " in res.output and "not valid JSON" in res.output, res.output
    q.write_bytes(json.dumps({"question": "q1", "golden": GOLD}).encode() + b'\n{"question": "q\xff"}\n')
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "not UTF-8 text (line 2)" in res.output, res.output


def test_queries_file_may_repeat_a_question_with_the_same_golden(tmp_path: Path) -> None:
    """Review finding: replayed traffic (the same question and golden twice) was rejected; only repeats
    whose goldens differ are ambiguous."""
    from deploysignal.cli._migration import _load_queries

    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"question": f"q{i % 2}", "golden": GOLD}) + "\n" for i in range(4)))
    assert [r["question"] for r in _load_queries(q)] == ["q0", "q1", "q0", "q1"]


@pytest.mark.parametrize("challenger_sql", ["SELECT 'oops", "SELECT id FROM orders WHERE total < -1"])
def test_cli_migrate_run_http_challenger_with_untokenizable_sql_is_rolled_back(tmp_path: Path, challenger_sql: str) -> None:
    """Review finding: against a challenger answering SELECT 'oops every pair raised TokenError in the
    router callback (a logged traceback each), pairs: 0, exit 3. It is now graded wrong: rolled back (4),
    exactly like a challenger answering wrong-but-parseable SQL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["query"]
            out = f"SELECT id FROM orders WHERE total > {query[1:]}" if self.path == "/a" else challenger_sql
            body = json.dumps({"output": out}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        q = tmp_path / "q.jsonl"
        q.write_text("".join(json.dumps({"question": f"q{i}", "golden": f"SELECT id FROM orders WHERE total > {i}"})
                             + "\n" for i in range(300)))
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        res = runner.invoke(app, ["migrate", "run", "--incumbent-url", url + "/a", "--challenger-url", url + "/b",
                                  "--queries", str(q)])
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(10)
    assert res.exit_code == 4, res.output
    assert "final phase: rolled_back" in res.output and "pairs: 0" not in res.output


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
@pytest.mark.extended  # 200 runs (~100 s); CI runs the 30-run version (test_evaluation_small_ci_version)
def test_committed_evaluation_reproduces_and_meets_the_papers_figures() -> None:
    """The committed 200-run table of seed 0 (docs/migration_eval.md, before its notes) is regenerated byte for
    byte; on it the protocol meets the paper's detection (>= 96%) and false-alarm (< 4%) figures, is faster
    than both fixed baselines and at least 41% faster than the 7-day canary on the mean over all seven
    scenarios (42.5%; the benign challengers alone are slower than the canary, 7.99 against 7.00 days: the
    notes say why). The assertion guards against regressions; it does not establish the figure (one seed)."""
    from deploysignal.migration._simulation import run_evaluation

    def body(md: str) -> list[str]:
        head = md.split("\n## Seed sensitivity")[0].split("\n## Notes")[0]
        return [ln for ln in head.splitlines() if not ln.startswith("    deploysignal migrate eval")]

    committed = (Path(__file__).resolve().parents[2] / "docs" / "migration_eval.md").read_text()
    md, results = run_evaluation(runs=200, seed=0)
    assert body(md) == body(committed), "docs/migration_eval.md is stale: regenerate with the command in it"
    s = summary(results)
    ours = s["confidence-gated"]
    assert ours["detection"] >= 0.96 and ours["before_impact"] >= 0.96
    assert ours["false_alarm"] < 0.04
    assert ours["detection"] >= 0.99 and ours["false_alarm"] <= 0.02  # issue #26's goals for harmful / benign
    for baseline in ("fixed-window", "7-day canary"):
        assert ours["mean_time_days"] < s[baseline]["mean_time_days"], (baseline, ours, s[baseline])
    assert 1.0 - ours["mean_time_days"] / s["7-day canary"]["mean_time_days"] >= 0.41


@pytest.mark.montecarlo
def test_false_rollback_of_an_equal_challenger_through_the_whole_protocol() -> None:
    """The joint null: a challenger no worse on any dimension at any time (here exactly equal: every
    harm test sits at its boundary) is rolled back, in any phase within ``horizon_pairs`` pairs, with
    probability at most ``alpha_rollback`` (module docstring: union of Ville, Holm and Doob's bound).
    1,000 paths run shadow -> canary -> progressive steps -> tail with one pair per minute and the
    challenger serving its exposure share; dimensions correlated (the semantic grade follows the
    correctness discordance), latency heavy-tailed with clustered volatility, safety rare; 99 %
    Clopper-Pearson bound."""
    from scipy import stats

    rng = np.random.default_rng(83)
    st = ProtocolSettings()
    paths = 1000
    p = MigrationProtocol(st, batch=paths)
    rolled = np.zeros(paths, dtype=bool)
    vol = np.ones(paths)
    for i in range(st.horizon_pairs):
        u = rng.random(paths)
        x = np.zeros((paths, 4))
        x[:, 0] = np.where(u < 0.025, 1.0, np.where(u < 0.05, -1.0, 0.0))  # 5 % discordant, symmetric
        x[:, 2] = np.where(rng.random(paths) < 0.8, x[:, 0], 0.0)
        shock = np.clip(rng.standard_t(2, paths) * 0.1 * vol, -1, 1)
        vol = 0.9 * vol + 0.1 * (1 + 5 * np.abs(shock))
        x[:, 1] = shock
        v = rng.random(paths)
        x[:, 3] = np.where(v < 0.001, 1.0, np.where(v < 0.002, -1.0, 0.0))
        served = rng.random(paths) < p.exposure()
        rolled |= p.update(np.full(paths, 60.0 * i), x, np.ones(paths, dtype=bool), served).rolled_back
        if (p.phase >= 4).all():
            break
    k = int(rolled.sum())
    assert float(stats.beta.ppf(0.99, k + 1, paths - k)) <= st.alpha_rollback, k
    assert (p.phase == 4).mean() > 0.9  # the equal challenger does get promoted: the protocol ran its phases
