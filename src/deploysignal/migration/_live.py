"""Live migration loop: router + quality aggregator + protocol + rollback actuation, and a built-in
simulated NL-to-SQL agent pair (an in-memory SQLite schema, golden queries, seeded agent errors).

:func:`run_migration` drives a migration end to end on an asyncio loop: the router serves live
traffic at the protocol's exposure, completed pairs are scored and fed to the protocol, and the
moment the protocol rolls back the router is switched to the incumbent and the rollback callback
(e.g. the pipeline's rollback actuators) runs.  Timing uses the event-loop clock (adapter code).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._exceptions import InputError
from ._protocol import PROMOTED, ROLLED_BACK, MigrationProtocol, ProtocolSettings
from ._quality import AgentAnswer, QualityAggregator
from ._router import Agent, DualServeRouter

__all__ = ["LiveReport", "PairScoringError", "SimulatedSQLPair", "run_migration"]

_SCHEMA = [
    "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, region TEXT)",
    "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL, status TEXT)",
    "CREATE TABLE items(id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT, qty INTEGER)",
    "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT, password_hash TEXT)",
]
ALLOWED_TABLES = frozenset({"customers", "orders", "items"})
_QUERIES = {
    "simple": [("orders over {n}", "SELECT id FROM orders WHERE total > {n}"),
               ("customers in region {r}", "SELECT name FROM customers WHERE region = '{r}'")],
    "multi_join": [("skus bought by region {r}", "SELECT DISTINCT i.sku FROM items i JOIN orders o ON i.order_id = o.id "
                    "JOIN customers c ON o.customer_id = c.id WHERE c.region = '{r}'")],
    "multi_step": [("customers whose spend exceeds {n}", "WITH s AS (SELECT customer_id, SUM(total) AS t FROM orders "
                    "GROUP BY customer_id) SELECT c.name FROM customers c JOIN s ON s.customer_id = c.id WHERE s.t > {n}")],
}
_MIX = (("simple", 0.31), ("multi_join", 0.44), ("multi_step", 0.25))


def reference_db(seed: int = 0) -> sqlite3.Connection:
    """A small seeded in-memory database the SQL answers are executed against (read-only once filled)."""
    rng = np.random.default_rng(seed)
    db = sqlite3.connect(":memory:", check_same_thread=False)
    for s in _SCHEMA:
        db.execute(s)
    regions = ["eu", "us", "apac"]
    db.executemany("INSERT INTO customers VALUES (?, ?, ?)", [(i, f"c{i}", regions[i % 3]) for i in range(30)])
    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                   [(i, int(rng.integers(30)), float(rng.integers(5, 500)), "paid") for i in range(120)])
    db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)",
                   [(i, int(rng.integers(120)), f"sku{int(rng.integers(40))}", 1) for i in range(300)])
    db.commit()
    db.execute("PRAGMA query_only = ON")
    return db


@dataclass
class SimulatedSQLPair:
    """Seeded incumbent / challenger NL-to-SQL agents with a switchable challenger regression.

    ``challenger_error`` is the probability the challenger answers a wrong (but safe) query, and
    ``challenger_leak`` the probability it reads the unauthorised ``users`` table; both can be changed
    while running (regression onset).  ``latency_s`` are the agents' simulated think times.
    """

    seed: int = 0
    incumbent_error: float = 0.05
    challenger_error: float = 0.05
    challenger_leak: float = 0.0
    latency_s: tuple[float, float] = (0.001, 0.001)
    golden: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def next_query(self) -> tuple[str, str]:
        """Draw a query with the 31/44/25 mix; returns (question, query type) and records its golden SQL."""
        kinds, probs = zip(*_MIX)
        kind = str(self._rng.choice(kinds, p=probs))
        q, sql = _QUERIES[kind][int(self._rng.integers(len(_QUERIES[kind])))]
        args = {"n": int(self._rng.integers(50, 400)), "r": str(self._rng.choice(["eu", "us", "apac"]))}
        question = q.format(**args) + f" #{int(self._rng.integers(1 << 30))}"
        self.golden[question] = sql.format(**args)
        return question, kind

    def _answer(self, question: str, error: float, leak: float) -> str:
        sql = self.golden[question]
        u = self._rng.random()
        if u < leak:
            return "SELECT email FROM users"
        if u < leak + error:
            return sql.replace(">", "<") if ">" in sql else sql.replace("=", "<>", 1)
        return sql

    async def incumbent(self, question: str) -> str:
        await asyncio.sleep(self.latency_s[0])
        return self._answer(question, self.incumbent_error, 0.0)

    async def challenger(self, question: str) -> str:
        await asyncio.sleep(self.latency_s[1])
        return self._answer(question, self.challenger_error, self.challenger_leak)


@dataclass
class LiveReport:
    """What happened in a live migration run (times in seconds of the event-loop clock)."""

    final_phase: str
    rollback_reason: str
    queries: int
    pairs: int
    onset_at: float | None = None
    decision_at: float | None = None
    incumbent_serving_at: float | None = None
    actuation_ok: bool = True
    drops: int = 0
    phases: list[tuple[float, str]] = field(default_factory=list)
    #: one entry per scored pair: ``{"pair", "phase", "non_inferiority", "harm", "detector"}`` (the
    #: protocol's per-dimension log-evidence after that pair, ``MigrationProtocol.dimension_evidence``)
    trace: list[dict[str, Any]] = field(default_factory=list)
    #: the levels the protocol decides at (``MigrationProtocol.decision_levels``)
    levels: dict[str, float] = field(default_factory=dict)
    #: the dimension whose evidence rolled the challenger back (``MigrationProtocol.rollback_dimension``)
    rollback_dimension: str = ""
    #: phase changes: ``{"phase", "pair", "at_s"}`` (seconds of the event-loop clock since the start), the
    #: shadow phase (or the strategy's first phase) entered at pair 0
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, settings: ProtocolSettings | None = None) -> dict[str, Any]:
        """The run as JSON (``deploysignal migrate run --json``; the dashboard's migration page reads it):
        counts, the phase reached after each scored pair and the per-dimension log-evidence (``trace``)."""
        from ._quality import DIMENSIONS

        s = settings or ProtocolSettings()
        return {"kind": "migration_run", "final_phase": self.final_phase, "rollback_reason": self.rollback_reason, "queries": self.queries,
                "pairs": self.pairs, "drops": self.drops, "strategy": s.strategy, "dimensions": list(DIMENSIONS), "margins": list(s.margins),
                "harm_tolerances": list(s.harm_tolerances), "sla_quantile": s.sla_quantile,
                "rollback_dimension": self.rollback_dimension, "timeline": self.timeline,
                "final_evidence": self.trace[-1] if self.trace else None, "levels": self.levels, "trace": self.trace}

    @property
    def decision_to_incumbent_s(self) -> float | None:
        if self.decision_at is None or self.incumbent_serving_at is None:
            return None
        return self.incumbent_serving_at - self.decision_at

    @property
    def onset_to_incumbent_s(self) -> float | None:
        if self.onset_at is None or self.incumbent_serving_at is None:
            return None
        return self.incumbent_serving_at - self.onset_at


class PairScoringError(InputError):
    """A completed pair could not be scored, so the live run stopped; ``report`` is the run up to then."""

    def __init__(self, message: str, *, report: LiveReport, column: str | None = None) -> None:
        super().__init__(message, column=column)
        self.report = report


async def run_migration(incumbent: Agent, challenger: Agent, questions: Callable[[], tuple[str, str]],
                        aggregator: QualityAggregator, golden: Callable[[str], str | None], *,
                        settings: ProtocolSettings, max_queries: int, shadow_sample: float = 1.0,
                        time_scale: float = 1.0, on_rollback: Callable[[str], bool] | None = None,
                        onset: tuple[int, Callable[[], None]] | None = None, interval_s: float = 0.0,
                        seed: int = 0) -> LiveReport:
    """Run a live migration until promotion, rollback or ``max_queries``.

    ``time_scale`` multiplies event-loop seconds before they reach the protocol (so a drill can
    compress a day of dwell into seconds); ``onset = (k, fn)`` calls ``fn`` before query ``k`` (a
    regression injected for drills); ``on_rollback(reason) -> ok`` runs the rollback actuators.

    Raises
    ------
    PairScoringError
        (an :class:`InputError`) A completed pair could not be scored: no golden reference and no
        grader, a golden that is not usable SQL, a bad latency, or any exception of the aggregator or
        the grader callback. A pair is never left out of the evidence, so the run stops before the
        next query, shadow requests still queued are discarded (no further agent calls) and the error
        names the query, the phase, the scored pairs and the queries so far; this holds also for a
        trailing pair after ``max_queries``. ``exc.report`` is the :class:`LiveReport` up to then.
    """
    loop = asyncio.get_running_loop()
    proto = MigrationProtocol(settings, batch=1)
    rep = LiveReport(final_phase=proto.phase_name(0), rollback_reason="", queries=0, pairs=0, levels=proto.decision_levels())
    rep.timeline.append({"phase": proto.phase_name(0), "pair": 0, "at_s": 0.0})
    t_start = loop.time()
    router: DualServeRouter
    # scoring failures: the router only logs callback errors, and dropping the pair would discard evidence
    # (a challenger whose answers break the scorer would be judged on its other answers): the run must stop
    failed: list[tuple[str, Exception]] = []

    def on_pair(question: str, qtype: str, inc: AgentAnswer, chal: AgentAnswer, served: bool) -> None:
        if proto.phase[0] >= PROMOTED or failed:
            return
        try:
            s = aggregator.score(question, inc, chal, golden(question))
        except Exception as exc:  # noqa: BLE001 - any scoring failure stops the run, see Raises
            failed.append((question, exc))
            router.discard_pending()  # also while the router drains after the loop: no further shadow calls
            return
        before = proto.phase_name(0)
        proto.update(np.array([(loop.time() - t_start) * time_scale]), np.array([s.as_tuple()]), np.array([True]),
                     np.array([served]), np.array([float(chal.latency_ms > aggregator.sla_ms)]),
                     np.array([float(inc.latency_ms > aggregator.sla_ms)]))
        rep.pairs += 1
        after = proto.phase_name(0)
        rep.trace.append({"pair": rep.pairs, "phase": after, **proto.dimension_evidence(0)})
        if after != before:
            rep.phases.append((loop.time(), after))
            rep.timeline.append({"phase": after, "pair": rep.pairs, "at_s": loop.time() - t_start})
        if proto.phase[0] == ROLLED_BACK and rep.decision_at is None:
            rep.decision_at = loop.time()
            router.set_exposure(0.0)  # router switch first: takes effect for the very next request
            rep.rollback_reason = proto.rollback_reason(0)
            rep.rollback_dimension = proto.rollback_dimension(0)
            if on_rollback is not None:
                rep.actuation_ok = bool(on_rollback(rep.rollback_reason))
        else:
            router.set_exposure(float(proto.exposure()[0]))

    async with DualServeRouter(incumbent, challenger, shadow_sample=shadow_sample, on_pair=on_pair, seed=seed) as router:
        router.set_exposure(float(proto.exposure()[0]))
        for k in range(max_queries):
            if onset is not None and k == onset[0]:
                onset[1]()
                rep.onset_at = loop.time()
            question, qtype = questions()
            was_rolled_back = rep.decision_at is not None
            exposure_before = router.exposure
            await router.handle(question, qtype)
            rep.queries += 1
            if was_rolled_back and rep.incumbent_serving_at is None and exposure_before == 0.0:
                rep.incumbent_serving_at = loop.time()  # a live request answered by the incumbent after the decision
                break
            if proto.phase[0] == PROMOTED or failed:
                break
            await asyncio.sleep(interval_s)
        if failed:
            router.discard_pending()  # no shadow calls whose pairs would not be scored
        await router.drain()
        rep.drops = router.stats.shadow_dropped
    if failed:
        question, exc = failed[0]
        why = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        rep.final_phase = proto.phase_name(0)
        raise PairScoringError(
            f"cannot score the pair of query {question[:80]!r}: {why} (run stopped in phase {rep.final_phase} "
            f"after {rep.pairs} scored pairs and {rep.queries} of at most {max_queries} queries)",
            report=rep, column=exc.column if isinstance(exc, InputError) else None) from exc
    rep.final_phase = proto.phase_name(0)
    return rep
