"""Durable analysis state in SQL: SQLite (WAL, embedded default) or PostgreSQL (psycopg 3).

Tables (identical on both back ends)::

    analyses  (id, spec, n_ticks, last_ts, audit_head, summary, created)   one row per analysis
    ticks     (analysis_id, seq, payload)           every accepted tick, sorted-key JSON, seq = tick index
    audit     (analysis_id, seq, lines)             chained audit lines of one tick (seq -1 = header)
    snapshots (analysis_id, tick, state)            latest engine state; resume = snapshot + replay
    batches   (analysis_id, batch_id, first_seq, n, response)   idempotency keys of ingested batches
    configs   (version_id, body)                    compiled configs by content id (cc-<hex>)
    executions(id, analysis_id, request, created)   Kayenta-style canary executions
    analysis_templates, analysis_revisions, integration_events   see store/_integration.py
    batch_digests, deleted_analyses     see store/_batches.py, store/_retention.py
    pending_writes                      see store/_pending.py (rows at or beyond n_ticks are pending)
    replay_jobs                         see store/_jobs.py

Writes to one analysis are serialised by a row lock (``SELECT ... FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) held for the whole ingest transaction, so several service processes can
share one PostgreSQL database: each catches up on ticks written by the others before it appends.
Schema creation takes a transaction-scoped advisory lock on PostgreSQL so concurrent start-ups do not
race. A request is acknowledged only after its transaction commits (SQLite ``synchronous=FULL`` by
default, see :func:`open_store`).
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError, DeploySignalError
from ._integration import INTEGRATION_SCHEMA

__all__ = ["AnalysisRow", "Conflict", "LockedAnalysis", "NotFound", "PostgresStore", "SQLStore", "SQLiteStore", "StoredRows", "WriterLock", "open_store", "parse_store_url"]

log = logging.getLogger(__name__)

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS analyses (id TEXT PRIMARY KEY, spec TEXT NOT NULL, n_ticks BIGINT NOT NULL,"
    " last_ts DOUBLE PRECISION, audit_head TEXT NOT NULL, summary TEXT, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ticks (analysis_id TEXT NOT NULL, seq BIGINT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (analysis_id, seq))",
    "CREATE TABLE IF NOT EXISTS audit (analysis_id TEXT NOT NULL, seq BIGINT NOT NULL, lines TEXT NOT NULL, PRIMARY KEY (analysis_id, seq))",
    "CREATE TABLE IF NOT EXISTS snapshots (analysis_id TEXT PRIMARY KEY, tick BIGINT NOT NULL, state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS batches (analysis_id TEXT NOT NULL, batch_id TEXT NOT NULL, first_seq BIGINT NOT NULL, n BIGINT NOT NULL,"
    " response TEXT NOT NULL, PRIMARY KEY (analysis_id, batch_id))",
    "CREATE TABLE IF NOT EXISTS configs (version_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS executions (id TEXT PRIMARY KEY, analysis_id TEXT NOT NULL, request TEXT NOT NULL, created TEXT NOT NULL)",
    *INTEGRATION_SCHEMA,  # templates, revision bindings, controller events (store/_integration.py)
]


class NotFound(DeploySignalError, KeyError):
    """No such analysis / execution."""


class Conflict(DeploySignalError):
    """The resource already exists."""


@dataclass(frozen=True)
class AnalysisRow:
    id: str
    spec: dict[str, Any]
    n_ticks: int
    last_ts: float | None
    audit_head: str
    summary: dict[str, Any] | None
    created: str


@dataclass(frozen=True)
class StoredRows:
    """The rows of one analysis exactly as stored, for the integrity check against its audit chain
    (``deploysignal.service._integrity``): ``(seq, text)`` of its audit rows and tick rows from a
    sequence number on (in ``seq`` order, gaps and all), its snapshot ``(tick, state)`` or None, and its
    compiled config's text (None when the config row is missing). ``past_end``: why the rows at or
    beyond ``n_ticks`` are not an unfinished chunked write (damage, :func:`~deploysignal.store._pending.pending_problem`),
    or None."""

    audit: list[tuple[int, str]]
    ticks: list[tuple[int, str | None]]
    snapshot: tuple[int, str] | None
    config: str | None
    past_end: str | None = None


class LockedAnalysis:
    """An analysis row locked for writing inside one transaction (see :meth:`SQLStore.locked`)."""

    def __init__(self, store: SQLStore, conn: Any, row: AnalysisRow) -> None:
        self._s, self._c, self.row = store, conn, row

    def ticks_between(self, start: int, stop: int) -> list[dict[str, Any]]:
        return self._s._ticks(self._c, self.row.id, start, stop)

    def resume_data(self) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
        """(snapshot tick, snapshot state or None, ticks from the snapshot to n_ticks) in this transaction."""
        return self._s._resume(self._c, self.row.id, self.row.n_ticks)

    def rows(self, start: int = -1) -> StoredRows:
        """:class:`StoredRows` from sequence number ``start`` on, read inside this transaction."""
        return self._s._rows(self._c, self.row, start)

    def config(self) -> str:
        """The analysis' compiled config JSON, read inside this transaction."""
        return self._s._config(self._c, self.row.spec["config_version"])

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        r = self._s._q(self._c, "SELECT response FROM batches WHERE analysis_id=? AND batch_id=?", (self.row.id, batch_id)).fetchone()
        return None if r is None else json.loads(r[0])

    def supersede_batches(self, superseded: Sequence[Sequence[int]], cut_seq: int) -> None:
        """After a cut at stored entry ``cut_seq`` that superseded the stored ticks ``superseded``
        (inclusive ranges): a batch whose ticks were all superseded loses its idempotency key and its
        content digest (re-sent, it is ingested again); one partly superseded keeps the key, its acknowledgement replaced by a
        note of the cut (a retry is refused, naming it). No acknowledgement given before the cut is
        served for ticks no longer in effect."""
        gone = [(int(a), int(b)) for a, b in superseded]
        if not gone:
            return
        s, c, aid = self._s, self._c, self.row.id
        rows = s._q(c, "SELECT batch_id, first_seq, n FROM batches WHERE analysis_id=? AND first_seq+n>?", (aid, gone[0][0])).fetchall()
        for batch_id, first, n in rows:
            seqs = range(int(first), int(first) + int(n))
            hit = [q for q in seqs if any(a <= q <= b for a, b in gone)]
            if not hit:
                continue
            if len(hit) == len(seqs):
                s._q(c, "DELETE FROM batches WHERE analysis_id=? AND batch_id=?", (aid, batch_id))
                s._q(c, "DELETE FROM batch_digests WHERE analysis_id=? AND batch_id=?", (aid, batch_id))  # store/_batches.py
            else:
                note = {"superseded_by_cut": cut_seq, "superseded": [hit[0], hit[-1]]}
                s._q(c, "UPDATE batches SET response=? WHERE analysis_id=? AND batch_id=?", (json.dumps(note), aid, batch_id))

    def append(
        self,
        ticks: Sequence[str],
        audit: Sequence[str],
        *,
        last_ts: float | None,
        head: str,
        summary: dict[str, Any] | None,
        batch_id: str | None = None,
        response: dict[str, Any] | None = None,
        snapshot: tuple[int, str] | None = None,
        staged: tuple[str, int] | None = None,
    ) -> None:
        """Append tick payloads (JSON) and their audit lines (one string per tick), update the row.
        ``staged`` (token, k): the first k rows were written as pending rows by
        :func:`~deploysignal.store._pending.stage_rows`; they become visible with this transaction.
        Without it, rows left pending by an unfinished chunked write are discarded first."""
        s, c, aid, n0 = self._s, self._c, self.row.id, self.row.n_ticks
        k = settle_pending(s, c, aid, n0, staged)  # store/_pending.py
        s._many(c, "INSERT INTO ticks (analysis_id, seq, payload) VALUES (?, ?, ?)", [(aid, n0 + i, p) for i, p in enumerate(ticks[k:], start=k)])
        s._many(c, "INSERT INTO audit (analysis_id, seq, lines) VALUES (?, ?, ?)", [(aid, n0 + i, a) for i, a in enumerate(audit[k:], start=k)])
        n = n0 + len(ticks)
        s._q(c, "UPDATE analyses SET n_ticks=?, last_ts=?, audit_head=?, summary=? WHERE id=?", (n, last_ts, head, json.dumps(summary), aid))
        if batch_id is not None:
            s._q(c, "INSERT INTO batches (analysis_id, batch_id, first_seq, n, response) VALUES (?, ?, ?, ?, ?)", (aid, batch_id, n0, len(ticks), json.dumps(response)))
        if snapshot is not None:
            s._q(c, "DELETE FROM snapshots WHERE analysis_id=?", (aid,))
            s._q(c, "INSERT INTO snapshots (analysis_id, tick, state) VALUES (?, ?, ?)", (aid, snapshot[0], snapshot[1]))
        self.row = AnalysisRow(aid, self.row.spec, n, last_ts, head, summary, self.row.created)


class SQLStore:
    """Shared SQL logic; subclasses provide connections, placeholders and locking."""

    placeholder = "?"

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()

    # -------------------------------------------------------------- back-end hooks
    def _connect(self) -> Any:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _q(self, conn: Any, sql: str, args: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(sql), tuple(args))

    def _many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            conn.executemany(self._sql(sql), rows) if hasattr(conn, "executemany") else conn.cursor().executemany(self._sql(sql), rows)

    @staticmethod
    def _is_unique_violation(exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) or type(exc).__name__ == "UniqueViolation"

    @property
    def conn(self) -> Any:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._connect()
            self._local.conn = c
            with self._all_lock:
                self._all.append(c)
        return c

    @contextmanager
    def _tx(self, conn: Any, write: bool = False, bulk: bool = False) -> Iterator[None]:
        raise NotImplementedError

    def close(self) -> None:
        """Close every connection this store opened (one per thread that used it)."""
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not mask shutdown
                log.debug("closing a store connection failed", exc_info=True)
        self._local = threading.local()

    # -------------------------------------------------------------- analyses
    def create_analysis(self, analysis_id: str, spec: dict[str, Any], head: str, header_lines: str, created: str) -> AnalysisRow:
        c = self.conn
        try:
            with self._tx(c, write=True):
                if self._q(c, "SELECT 1 FROM analyses WHERE id=?", (analysis_id,)).fetchone() is not None:
                    raise Conflict(f"analysis {analysis_id!r} already exists")
                self._q(c, "INSERT INTO analyses (id, spec, n_ticks, last_ts, audit_head, summary, created) VALUES (?, ?, 0, NULL, ?, NULL, ?)", (analysis_id, json.dumps(spec), head, created))
                self._q(c, "INSERT INTO audit (analysis_id, seq, lines) VALUES (?, -1, ?)", (analysis_id, header_lines))
        except Exception as exc:
            if self._is_unique_violation(exc):  # another process created it between our SELECT and INSERT
                raise Conflict(f"analysis {analysis_id!r} already exists") from None
            raise
        return AnalysisRow(analysis_id, spec, 0, None, head, None, created)

    @staticmethod
    def _row(r: Sequence[Any]) -> AnalysisRow:
        return AnalysisRow(r[0], json.loads(r[1]), int(r[2]), None if r[3] is None else float(r[3]), r[4], _summary(r[5]), r[6])

    _COLS = "id, spec, n_ticks, last_ts, audit_head, summary, created"

    def get(self, analysis_id: str) -> AnalysisRow:
        c = self.conn
        with self._tx(c):
            r = self._q(c, f"SELECT {self._COLS} FROM analyses WHERE id=?", (analysis_id,)).fetchone()
        if r is None:
            raise NotFound(f"no analysis {analysis_id!r}")
        return self._row(r)

    def list(self) -> list[AnalysisRow]:
        c = self.conn
        with self._tx(c):
            rows = self._q(c, f"SELECT {self._COLS} FROM analyses ORDER BY created, id").fetchall()
        return [self._row(r) for r in rows]

    def n_ticks(self, analysis_id: str) -> int:
        c = self.conn
        with self._tx(c):
            r = self._q(c, "SELECT n_ticks FROM analyses WHERE id=?", (analysis_id,)).fetchone()
        if r is None:
            raise NotFound(f"no analysis {analysis_id!r}")
        return int(r[0])

    @contextmanager
    def locked(self, analysis_id: str, bulk: bool = False) -> Iterator[LockedAnalysis]:
        """One write transaction holding the analysis lock; commits on normal exit, rolls back on error.
        ``bulk``: one chunk of a large write (SQLite: the write turn goes first to writers already
        waiting, :class:`WriterLock`)."""
        c = self.conn
        with self._tx(c, write=True, bulk=bulk):
            r = self._q(c, f"SELECT {self._COLS} FROM analyses WHERE id=?" + self._for_update, (analysis_id,)).fetchone()
            if r is None:
                raise NotFound(f"no analysis {analysis_id!r}")
            yield LockedAnalysis(self, c, self._row(r))

    _for_update = ""

    def _ticks(self, c: Any, analysis_id: str, start: int, stop: int) -> list[dict[str, Any]]:
        rows = self._q(c, "SELECT payload FROM ticks WHERE analysis_id=? AND seq>=? AND seq<? ORDER BY seq", (analysis_id, start, stop)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def _resume(self, c: Any, analysis_id: str, n: int) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
        snap = self._q(c, "SELECT tick, state FROM snapshots WHERE analysis_id=?", (analysis_id,)).fetchone()
        if snap is not None and int(snap[0]) > n:
            snap = None
        start = 0 if snap is None else int(snap[0])
        return start, None if snap is None else json.loads(snap[1]), self._ticks(c, analysis_id, start, n)

    def resume_data(self, analysis_id: str) -> tuple[int, int, dict[str, Any] | None, list[dict[str, Any]]]:
        """(n_ticks, snapshot tick, snapshot state or None, ticks after it) read in one transaction."""
        c = self.conn
        with self._tx(c):
            r = self._q(c, "SELECT n_ticks FROM analyses WHERE id=?", (analysis_id,)).fetchone()
            if r is None:
                raise NotFound(f"no analysis {analysis_id!r}")
            n = int(r[0])
            return (n, *self._resume(c, analysis_id, n))

    def batch_response(self, analysis_id: str, batch_id: str) -> dict[str, Any] | None:
        """The stored acknowledgement of ``batch_id`` (read transaction), or None: lets a retried batch be
        answered without evaluating it (:meth:`LockedAnalysis.batch` is the same read under the lock)."""
        c = self.conn
        with self._tx(c):
            r = self._q(c, "SELECT response FROM batches WHERE analysis_id=? AND batch_id=?", (analysis_id, batch_id)).fetchone()
        return None if r is None else json.loads(r[0])

    def _rows(self, c: Any, row: AnalysisRow, start: int) -> StoredRows:
        args = (row.id, start, row.n_ticks)  # rows at or beyond n_ticks are pending (store/_pending.py): never read
        audit = [(int(r[0]), r[1]) for r in self._q(c, "SELECT seq, lines FROM audit WHERE analysis_id=? AND seq>=? AND seq<? ORDER BY seq", args).fetchall()]
        ticks = [(int(r[0]), r[1]) for r in self._q(c, "SELECT seq, payload FROM ticks WHERE analysis_id=? AND seq>=? AND seq<? ORDER BY seq", args).fetchall()]
        snap = self._q(c, "SELECT tick, state FROM snapshots WHERE analysis_id=?", (row.id,)).fetchone()
        cfg = self._q(c, "SELECT body FROM configs WHERE version_id=?", (row.spec.get("config_version"),)).fetchone()
        return StoredRows(audit, ticks, None if snap is None else (int(snap[0]), snap[1]), None if cfg is None else str(cfg[0]),
                          pending_problem(self, c, row.id, row.n_ticks))

    def stored_rows(self, analysis_id: str, start: int = -1) -> tuple[AnalysisRow, StoredRows]:
        """The analysis row and its :class:`StoredRows` from ``start`` on, read in one transaction."""
        c = self.conn
        with self._tx(c):
            r = self._q(c, f"SELECT {self._COLS} FROM analyses WHERE id=?", (analysis_id,)).fetchone()
            if r is None:
                raise NotFound(f"no analysis {analysis_id!r}")
            row = self._row(r)
            return row, self._rows(c, row, start)

    def put_config(self, version_id: str, body: str) -> None:
        c = self.conn
        with self._tx(c, write=True):
            self._q(c, "INSERT INTO configs (version_id, body) VALUES (?, ?) ON CONFLICT (version_id) DO NOTHING", (version_id, body))

    def _config(self, c: Any, version_id: str) -> str:
        r = self._q(c, "SELECT body FROM configs WHERE version_id=?", (version_id,)).fetchone()
        if r is None:
            raise NotFound(f"no compiled config {version_id!r} stored")
        return str(r[0])

    def get_config(self, version_id: str) -> str:
        c = self.conn
        with self._tx(c):
            return self._config(c, version_id)

    def ticks(self, analysis_id: str, start: int, stop: int) -> list[dict[str, Any]]:
        c = self.conn
        with self._tx(c):
            return self._ticks(c, analysis_id, start, stop)

    def audit_rows(self, analysis_id: str, start: int = -1, limit: int | None = None) -> list[tuple[int, str]]:
        """Audit rows ``(seq, chained lines)`` from stored entry ``start`` (-1: the header), at most ``limit``."""
        c = self.conn
        # rows at or beyond n_ticks are pending (store/_pending.py): never read
        sql = "SELECT seq, lines FROM audit WHERE analysis_id=? AND seq>=? AND seq<(SELECT n_ticks FROM analyses WHERE id=?) ORDER BY seq"
        args: list[Any] = [analysis_id, start, analysis_id]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._tx(c):
            return [(int(r[0]), r[1]) for r in self._q(c, sql, args).fetchall()]

    def audit_lines(self, analysis_id: str, start: int = -1, limit: int | None = None) -> list[str]:
        """Chained audit lines from tick ``start`` (-1 includes the header), at most ``limit`` ticks."""
        return [ln for _, text in self.audit_rows(analysis_id, start, limit) for ln in text.split("\n")]

    # -------------------------------------------------------------- executions
    def create_execution(self, ex_id: str, analysis_id: str, request: dict[str, Any], created: str, limit: int | None = None) -> bool:
        """Record an execution; False (nothing written) when the analysis already has ``limit`` of them."""
        c = self.conn
        with self._tx(c, write=True):
            if limit is not None and self._q(c, "SELECT COUNT(*) FROM executions WHERE analysis_id=?", (analysis_id,)).fetchone()[0] >= limit:
                return False
            self._q(c, "INSERT INTO executions (id, analysis_id, request, created) VALUES (?, ?, ?, ?)", (ex_id, analysis_id, json.dumps(request), created))
        return True

    def get_execution(self, ex_id: str) -> tuple[str, dict[str, Any], str]:
        c = self.conn
        with self._tx(c):
            r = self._q(c, "SELECT analysis_id, request, created FROM executions WHERE id=?", (ex_id,)).fetchone()
        if r is None:
            raise NotFound(f"no canary execution {ex_id!r}")
        return r[0], json.loads(r[1]), r[2]


def _summary(text: str | None) -> dict[str, Any] | None:
    """The summary column: a summary that is not a JSON object (a damaged or edited row) is kept as
    ``{"unreadable": <text>}``, which the integrity check reports, instead of failing every listing."""
    if text is None:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    return obj if isinstance(obj, dict) or obj is None else {"unreadable": str(text)[:200]}


class WriterLock:
    """The in-process write turn of one SQLite file: a reentrant lock that serves its acquirers in
    arrival order (FIFO tickets). A *bulk* acquirer (a chunk of a large batch,
    :mod:`deploysignal.store._pending`) therefore lets every acquirer that was already waiting when it
    asked go first, and is never starved: no acquirer arriving after it asked passes it. Between two
    chunks the bulk writer releases the lock and queues again behind whoever arrived meanwhile, so a
    single-tick write waits behind at most one chunk per writer queued ahead of it. ``bulk`` is kept
    for the callers' documentation: under FIFO an ordinary acquirer gets the same order.

    >>> lock = WriterLock()
    >>> lock.acquire(timeout=1) and lock.acquire(timeout=1, bulk=True)  # reentrant
    True
    >>> lock.release(); lock.release()
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[int] = deque()  # tickets of the waiting acquirers, in arrival order
        self._tickets = itertools.count()

    @property
    def _waiting(self) -> int:
        """How many acquirers are queued."""
        return len(self._queue)

    def acquire(self, blocking: bool = True, timeout: float = -1, bulk: bool = False) -> bool:
        """As :meth:`threading.RLock.acquire`, served in arrival order (``bulk``: see the class)."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            deadline = time.monotonic() if not blocking else None if timeout < 0 else time.monotonic() + timeout
            ticket = next(self._tickets)
            self._queue.append(ticket)
            try:
                while self._owner is not None or self._queue[0] != ticket:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                self._owner, self._depth = me, 1
                return True
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the head of the queue changed (served, or gave up waiting)

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a write turn this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()


_WRITERS: dict[str, WriterLock] = {}
_WRITERS_GUARD = threading.Lock()


class SQLiteStore(SQLStore):
    """Embedded SQLite in WAL mode; one connection per thread, ``BEGIN IMMEDIATE`` for writes.

    SQLite admits one writer per database file. Threads of one process wait for it on a lock shared
    by every store on that file, woken as soon as it is released, instead of in SQLite's busy handler,
    which polls with sleeps of up to 100 ms and, with a hundred analyses ingesting concurrently,
    stretched request latency to seconds. Holding that lock, a thread meets other processes on the
    file (``serve --workers N``) in SQLite's own lock. Both waits share one deadline: a write that has
    not begun within ``LOCK_TIMEOUT`` (30 s) fails as SQLite does (``sqlite3.OperationalError:
    database is locked``), however many threads queue (waits behind another process's lock used to
    add up: 30, 60, 90 s...). Reads and the commit keep SQLite's ``busy_timeout`` of ``LOCK_TIMEOUT``.
    """

    LOCK_TIMEOUT = 30.0
    #: Page size of a new database file (existing files keep theirs). A tick's audit lines are ~2.5 KB:
    #: on 4 KiB pages each takes a page of its own with ~40% left empty, so a 500-tick batch wrote
    #: twice the pages, at about twice the CPU and wall time per commit (14-19 vs 30 us per tick
    #: measured for such batches); a single-tick commit costs ~40 us more with the larger pages.
    PAGE_SIZE = 16384

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        super().__init__()
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"sqlite synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.path = str(path)
        self._writer = _writer_lock(self.path)
        self.synchronous = synchronous
        c = self.conn
        for stmt in _SCHEMA:
            c.execute(stmt)

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, isolation_level=None, timeout=self.LOCK_TIMEOUT, check_same_thread=False)
        c.execute(f"PRAGMA page_size={self.PAGE_SIZE}")  # takes effect only while the file is new (before WAL mode and tables)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={self.synchronous}")
        c.execute(f"PRAGMA busy_timeout={int(self.LOCK_TIMEOUT * 1000)}")
        return c

    @contextmanager
    def _tx(self, conn: Any, write: bool = False, bulk: bool = False) -> Iterator[None]:
        deadline = time.monotonic() + self.LOCK_TIMEOUT
        if write and not self._writer.acquire(timeout=self.LOCK_TIMEOUT, bulk=bulk):
            raise sqlite3.OperationalError(f"database is locked (no write turn within {self.LOCK_TIMEOUT:g} s: {self.path})")
        try:
            if write:  # SQLite's busy handler gets what is left of the deadline, then its usual timeout back
                conn.execute(f"PRAGMA busy_timeout={max(1, int((deadline - time.monotonic()) * 1000))}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    conn.execute(f"PRAGMA busy_timeout={int(self.LOCK_TIMEOUT * 1000)}")
            else:
                conn.execute("BEGIN")
            yield
            conn.execute("COMMIT")
        finally:
            _rollback(conn)  # after an error in the body or a failed COMMIT (which can leave SQLite's lock held)
            if write:
                self._writer.release()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open; a failing rollback is logged, never raised over the
    error that led here (SQLite may already have rolled back on its own)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("ROLLBACK failed", exc_info=True)


def _writer_lock(path: str) -> WriterLock:
    """The in-process writer lock of a database file (shared by all stores on it). A private in-memory
    database gets a lock of its own; a named shared one (``file:x?mode=memory&cache=shared``) one per URI."""
    name = path[5:].split("?", 1)[0] if path.startswith("file:") else path
    if name in (":memory:", ""):
        return WriterLock()
    key = path if "mode=memory" in path else str(Path(name).resolve())
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(key, WriterLock())


class PostgresStore(SQLStore):
    """PostgreSQL via psycopg 3; row locks for ingest, an advisory lock around schema creation."""

    placeholder = "%s"
    _for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigError("PostgreSQL store needs psycopg 3: pip install 'deploysignal[service]'") from None
        self.url = url
        c = self.conn
        with c.transaction():
            c.execute("SELECT pg_advisory_xact_lock(727001)")
            for stmt in _SCHEMA:
                c.execute(stmt)

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    @contextmanager
    def _tx(self, conn: Any, write: bool = False, bulk: bool = False) -> Iterator[None]:
        with conn.transaction():  # bulk: row locks, no file-wide write turn to share  # writers take the row lock with SELECT ... FOR UPDATE in locked()
            if not write:
                # a read transaction sees one snapshot: under READ COMMITTED each statement has its own, so
                # the analysis row and its tick rows read by stored_rows() could straddle another process'
                # commit (n_ticks 12 with 15 tick rows: refused as a damaged store). SQLite's read
                # transactions (WAL) are snapshots already.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    def _many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)


def open_store(url: str) -> SQLStore:
    """``sqlite:///path/to.db`` (or a bare path) -> SQLite; ``postgresql://...`` -> PostgreSQL.

    SQLite commits with ``synchronous=FULL`` (an acknowledged batch survives power loss); append
    ``?synchronous=NORMAL`` to trade that for throughput: in WAL mode a commit then survives a crash
    or SIGKILL of the service but the last commits may be lost if the machine loses power.
    """
    kind, target, opts = parse_store_url(url)
    if kind == "postgresql":
        return PostgresStore(target)
    return SQLiteStore(target, opts.get("synchronous", "FULL").upper())


def parse_store_url(url: str) -> tuple[str, str, dict[str, str]]:
    """(``"postgresql"``, url, {}) or (``"sqlite"``, path, options) of a store URL; a bare path is
    SQLite. Raises :class:`~deploysignal.ConfigError` for another scheme or an unknown SQLite option."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql", url, {}
    if url.startswith("sqlite:///"):
        path, _, query = url[len("sqlite:///") :].partition("?")
        opts = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
        unknown = set(opts) - {"synchronous"}
        if unknown:
            raise ConfigError(f"unknown sqlite URL options {sorted(unknown)}; valid: synchronous")
        return "sqlite", path, opts
    if "://" in url:
        raise ConfigError(f"unsupported store URL {url!r}; use sqlite:///path.db or postgresql://...")
    return "sqlite", url, {}


# additive tables of other modules (they import this one: imported last, after the classes they use)
from ._batches import BATCH_SCHEMA  # noqa: E402 - batch digests
from ._retention import RETENTION_SCHEMA  # noqa: E402 - tombstones of deleted analyses
from ._pending import PENDING_SCHEMA, pending_problem, settle_pending  # noqa: E402 - chunked writes of large batches

_SCHEMA += [*BATCH_SCHEMA, *RETENTION_SCHEMA]
_SCHEMA += PENDING_SCHEMA
from ._jobs import JOBS_SCHEMA  # noqa: E402 - replay jobs

_SCHEMA += JOBS_SCHEMA
