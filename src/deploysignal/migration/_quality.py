"""Quality signals of one paired observation: correctness, latency vs SLA, semantic equivalence, safety.

For a natural-language-to-SQL agent the semantic grade compares each answer with the golden SQL:
``2`` = same canonical AST (sqlglot), ``1`` = different AST but the same result set on the reference
database (an in-memory ``sqlite3`` connection the caller supplies), ``0`` = different or failing.
Only SQL that passes the safety check (a read, no write) is ever run on the reference database, and the
aggregator switches the connection it receives to read-only (``PRAGMA query_only``).
Safety flags writes (INSERT/UPDATE/DELETE/DDL) and tables outside an allow-list, by static analysis of
the parsed statement.  The aggregator then turns a pair into the bounded scores the sequential tests
consume (see :mod:`deploysignal.migration._sequential`).
"""

from __future__ import annotations

import functools
import math
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.normalize import normalize

from .._exceptions import InputError

__all__ = ["DIMENSIONS", "AgentAnswer", "PairScores", "QualityAggregator", "sql_grade", "sql_safety_violation"]

DIMENSIONS = ("correctness", "latency", "semantic", "safety")
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Merge, exp.Command)


@dataclass(frozen=True, slots=True)
class AgentAnswer:
    """One agent's answer: the output text (SQL for NL-to-SQL), its latency in ms, an error if any."""

    output: str | None
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PairScores:
    """Paired differences in ``[-1, 1]``, oriented so that positive = the challenger is worse.

    ``correctness``, ``semantic``, ``safety``: ``+1`` only the incumbent is right / better graded /
    safe, ``-1`` only the challenger, ``0`` tie (a concordant pair, or NaN for ``semantic`` when no
    golden reference exists).  ``latency``: ``clip((L_chal - L_inc) / SLA, -1, 1)``.
    """

    correctness: float
    latency: float
    semantic: float
    safety: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.correctness, self.latency, self.semantic, self.safety)


# What sqlglot raises on text it cannot tokenise or parse: SqlglotError (ParseError, TokenError for an
# unterminated string or comment, ...), ValueError, and RecursionError for absurdly deep nesting.
_UNPARSEABLE = (SqlglotError, ValueError, RecursionError)


@functools.lru_cache(maxsize=4096)  # the golden is canonicalised for both answers of every pair
def _canonical(sql: str) -> str | None:
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
        if tree is None:
            return None
        return normalize(tree).sql(dialect="sqlite", normalize=True, pretty=False)
    except _UNPARSEABLE:
        return None


@functools.lru_cache(maxsize=4096)
def _read_only(sql: str) -> bool:
    return not sql_safety_violation(sql, None)


def _result(db: sqlite3.Connection, sql: str) -> list[tuple[object, ...]] | None:
    if not _read_only(sql):  # never run SQL that may write (or that the safety check cannot parse)
        return None
    try:
        rows = db.execute(sql).fetchall()
    except sqlite3.Error:
        return None
    return sorted(rows, key=repr)


def sql_grade(candidate: str | None, golden: str, db: sqlite3.Connection | None = None) -> int:
    """Ordinal semantic grade of ``candidate`` against ``golden``: 2 AST-equal, 1 same result set, 0 else.

    A candidate that cannot be tokenised or parsed (e.g. an unterminated string) grades 0 (wrong). Only
    SQL that passes :func:`sql_safety_violation` (no write) is run on ``db``: a candidate or golden that
    may write is never executed (no grade 1).

    >>> sql_grade("select a from t where b=1", "SELECT a FROM t WHERE b = 1")
    2
    >>> db = sqlite3.connect(":memory:"); _ = db.execute("create table t(a, b)")
    >>> _ = db.executemany("insert into t values (?, ?)", [(1, 1), (2, 2)])
    >>> sql_grade("select a from t where b < 2", "select a from t where b = 1", db)
    1
    >>> sql_grade("select a from t", "select a from t where b = 1", db)
    0
    """
    if candidate is None:
        return 0
    cc, cg = _canonical(candidate), _canonical(golden)
    if cc is not None and cc == cg:
        return 2
    if db is None or cc is None:
        return 0
    rc, rg = _result(db, candidate), _result(db, golden)
    return 1 if rc is not None and rc == rg else 0


def sql_safety_violation(sql: str | None, allowed_tables: Collection[str] | None) -> bool:
    """True when ``sql`` writes, cannot be tokenised or parsed, or reads a table outside ``allowed_tables``.

    >>> sql_safety_violation("select * from users", {"orders"})
    True
    >>> sql_safety_violation("select * from orders o join items i on o.id = i.oid", {"orders", "items"})
    False
    >>> sql_safety_violation("delete from orders", None)
    True
    """
    if sql is None:
        return False
    try:
        trees = sqlglot.parse(sql, read="sqlite")
        for tree in trees:
            if tree is None:
                continue
            if isinstance(tree, _WRITES) or any(True for _ in tree.find_all(*_WRITES)):
                return True
            if allowed_tables is not None:
                allowed = {t.lower() for t in allowed_tables}
                ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
                for t in tree.find_all(exp.Table):
                    if t.name.lower() not in allowed | ctes:
                        return True
    except _UNPARSEABLE:
        return True
    return False


@functools.lru_cache(maxsize=4096)  # checked on every pair
def golden_problem(golden: str) -> str | None:
    """Why ``golden`` cannot serve as a reference, or ``None`` when it can.

    A golden reference must be exactly one read query (sqlglot, SQLite dialect: a ``SELECT``, ``WITH``
    or ``UNION`` ..., an :class:`sqlglot.exp.Query`) that passes :func:`sql_safety_violation`. A golden
    that does not parse grades every answer 0 (every pair a silent tie); a placeholder (``TODO``,
    ``n/a``, ``1``) lets any parseable answer tie or win; a write would change the reference database.

    >>> golden_problem("SELECT 1") is None, golden_problem("SELECT 'x")
    (True, 'golden reference is not SQL that can be parsed')
    >>> golden_problem("TODO"), golden_problem("DELETE FROM orders")
    ('golden reference is not a read query (SELECT ...)', 'golden reference is not a read query (SELECT ...)')
    """
    if not golden.strip():
        return "golden reference is empty"
    try:
        trees = [t for t in sqlglot.parse(golden, read="sqlite") if t is not None]
    except _UNPARSEABLE:
        return "golden reference is not SQL that can be parsed"
    if len(trees) != 1:
        return f"golden reference must be one SQL statement, got {len(trees)}"
    if not isinstance(trees[0], exp.Query) or sql_safety_violation(golden, None):
        return "golden reference is not a read query (SELECT ...)"
    return None


def _sign(inc_good: float, chal_good: float) -> float:
    return float((inc_good > chal_good) - (inc_good < chal_good))


class QualityAggregator:
    """Turns a paired observation into :class:`PairScores`.

    Parameters
    ----------
    sla_ms : float
        Latency SLA; the latency score is the paired difference in SLA units, clipped to [-1, 1].
    grader : callable, optional
        ``grader(query, output) -> bool`` correctness callback; without it correctness is a semantic
        grade >= 1 against the golden reference.
    db : sqlite3.Connection, optional
        Reference database for result-set comparison; switched to read-only (``PRAGMA query_only = ON``),
        and only SQL that passes the safety check is run on it.
    allowed_tables : collection of str, optional
        Tables the agent may read; ``None`` = any table (writes are always violations).
    """

    def __init__(self, *, sla_ms: float, grader: Callable[[str, str | None], bool] | None = None,
                 db: sqlite3.Connection | None = None, allowed_tables: Collection[str] | None = None) -> None:
        if not (isinstance(sla_ms, (int, float)) and math.isfinite(sla_ms) and sla_ms > 0):
            raise InputError(f"sla_ms must be a positive number, got {sla_ms!r}", column="sla_ms")
        self.sla_ms = float(sla_ms)
        self.grader = grader
        if db is not None:
            db.execute("PRAGMA query_only = ON")  # neither an answer nor a golden may change the reference
        self.db = db
        self.allowed_tables = allowed_tables

    def score(self, query: str, incumbent: AgentAnswer, challenger: AgentAnswer, golden: str | None = None) -> PairScores:
        """Score one pair; an errored or timed-out answer counts as wrong, ungraded and unsafe-free.

        An answer that cannot be tokenised or parsed as SQL counts as wrong and unsafe. Raises
        :class:`InputError` (column ``golden`` / the agent) for a pair that cannot be scored: no golden and
        no grader, a golden that is not a string or not one read query (:func:`golden_problem`; also with a
        grader callback), a bad latency.
        """
        for name, a in (("incumbent", incumbent), ("challenger", challenger)):
            if not (isinstance(a.latency_ms, (int, float)) and math.isfinite(a.latency_ms) and a.latency_ms >= 0):
                raise InputError(f"latency_ms must be a finite non-negative number, got {a.latency_ms!r}", column=name)
        if self.grader is None and golden is None:
            raise InputError("need a golden reference or a grader callback", column="golden")
        if golden is not None and not isinstance(golden, str):
            raise InputError(f"golden reference must be a SQL string, got {type(golden).__name__}", column="golden")
        if golden is not None and (why := golden_problem(golden)) is not None:
            raise InputError(f"{why}: {golden[:80]!r}", column="golden")
        out_i = incumbent.output if incumbent.error is None else None
        out_c = challenger.output if challenger.error is None else None
        g_i = sql_grade(out_i, golden, self.db) if golden is not None else 0
        g_c = sql_grade(out_c, golden, self.db) if golden is not None else 0
        if self.grader is not None:
            ok_i = out_i is not None and bool(self.grader(query, out_i))
            ok_c = out_c is not None and bool(self.grader(query, out_c))
        else:
            ok_i, ok_c = g_i >= 1, g_c >= 1
        safe_i = not sql_safety_violation(out_i, self.allowed_tables)
        safe_c = not sql_safety_violation(out_c, self.allowed_tables)
        lat = max(-1.0, min(1.0, (challenger.latency_ms - incumbent.latency_ms) / self.sla_ms))
        semantic = _sign(g_i, g_c) if golden is not None else math.nan
        return PairScores(_sign(ok_i, ok_c), lat, semantic, _sign(safe_i, safe_c))
