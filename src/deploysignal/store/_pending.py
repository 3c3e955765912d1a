"""A large batch written in bounded transactions under a pending marker (issue 23, noisy neighbour).

SQLite's write lock covers the whole database file: a 10,000-tick batch written in one transaction
(its tick rows and ~25 MB of chained audit lines) kept every other analysis' ingest waiting for about
half a second. :func:`stage_rows` writes all but the last ``chunk`` rows of such a batch in
transactions of at most ``chunk`` ticks each, beyond the analysis' committed tick count, under a marker
in an additive table (``CREATE TABLE IF NOT EXISTS``; no existing table or column changes)::

    pending_writes (analysis_id, token, first_seq, written)   one unfinished chunked write per analysis

Rows at or beyond ``analyses.n_ticks`` are **pending**: every reader of tick and audit rows reads below
``n_ticks`` only (:meth:`~deploysignal.store.SQLStore.stored_rows`, ``audit_rows``, resume), so the
integrity check, ``audit verify --store``, replay and ``GET .../audit`` never see them. The batch
becomes visible atomically in one last short transaction (:meth:`~deploysignal.store.LockedAnalysis.append`
with ``staged``): it checks that the marker is still this write's and covers exactly the staged rows,
inserts the last chunk, moves ``n_ticks`` and the chain head and deletes the marker. The client is
answered only after that commit.

Rows at or beyond ``n_ticks`` count as pending **only under a marker that covers exactly them**: its
``first_seq`` is ``n_ticks``, and there are exactly ``written`` tick rows and ``written`` audit rows
from ``n_ticks`` on, at ``n_ticks .. n_ticks + written - 1`` (:func:`pending_problem`). Any other row
past ``n_ticks`` (for instance after an old ``analyses`` row was restored over one that had moved on,
which would otherwise hide a rollback) is damage: it is reported by every read of the rows for the
integrity check (:attr:`~deploysignal.store.StoredRows.past_end`), so the load is refused and
``audit verify --store`` fails, and an append refuses to delete it (:class:`PendingDamage`).

Guarantee: no acknowledged tick is lost and nothing unacknowledged becomes visible. A crash (or an
error) mid-way leaves pending rows and the marker; they are never read, and the next append to the
analysis (a plain one, or the first chunk of a new chunked write) deletes those rows and the marker in
its own transaction (:func:`discard_pending`), after checking that the marker covers exactly them. A chunked write whose
marker was taken over or discarded meanwhile (another process appended to the analysis: only possible
with several processes on one store) fails with :class:`PendingLost` at its next chunk or at the
publishing transaction, which then commits nothing; the caller evaluates the batch again.

Between two chunks the writer lock is released. On SQLite a chunk's transaction asks for the file's
write turn as a *bulk* writer: it lets every ordinary writer that was already waiting go first
(:class:`~deploysignal.store._sql.WriterLock`), so another analysis' single tick waits for at most one
chunk, not the whole batch; ordinary writers arriving later do not starve it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._sql import Conflict

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._sql import SQLStore

__all__ = ["PENDING_SCHEMA", "PendingDamage", "PendingLost", "discard_pending", "pending_problem", "settle_pending", "stage_rows"]

PENDING_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS pending_writes (analysis_id TEXT PRIMARY KEY, token TEXT NOT NULL, first_seq BIGINT NOT NULL,"
    " written BIGINT NOT NULL)",
]


class PendingLost(Conflict):
    """A chunked write's staged rows were discarded or taken over (another writer appended to the
    analysis meanwhile); nothing of it is visible. The batch is evaluated again on the new state."""


class PendingDamage(Conflict):
    """Rows past an analysis' ``n_ticks`` that no pending-write marker covers exactly: the store is
    damaged (or an old ``analyses`` row was restored); nothing is deleted, the append is refused."""


def _past_end(store: SQLStore, conn: Any, table: str, aid: str, n_ticks: int) -> tuple[int, int | None, int | None]:
    r = store._q(conn, f"SELECT COUNT(*), MIN(seq), MAX(seq) FROM {table} WHERE analysis_id=? AND seq>=?", (aid, n_ticks)).fetchone()
    return int(r[0]), None if r[1] is None else int(r[1]), None if r[2] is None else int(r[2])


def pending_problem(store: SQLStore, conn: Any, aid: str, n_ticks: int) -> str | None:
    """Why the rows of ``aid`` at or beyond ``n_ticks`` are not an unfinished chunked write, or None
    when they are (or there are none and no marker). Pending means: a marker with ``first_seq ==
    n_ticks`` and exactly ``written`` tick rows and ``written`` audit rows, at ``n_ticks`` to ``n_ticks +
    written - 1``. Read inside the caller's transaction; cheap (index ranges)."""
    ticks, audit, m = _past_end(store, conn, "ticks", aid, n_ticks), _past_end(store, conn, "audit", aid, n_ticks), _marker(store, conn, aid)
    if m is None:
        if ticks[0] == 0 and audit[0] == 0:
            return None
        return (f"{ticks[0]} tick rows and {audit[0]} audit rows stored past n_ticks = {n_ticks} (seq up to {max(ticks[2] or -1, audit[2] or -1)})"
                " and no pending-write marker covers them")
    _, first, written = m
    span = (written, n_ticks, n_ticks + written - 1) if written else (0, None, None)
    if first != n_ticks or ticks != span or audit != span:
        return (f"the pending-write marker (first_seq {first}, written {written}) does not cover exactly the {ticks[0]} tick rows and"
                f" {audit[0]} audit rows stored past n_ticks = {n_ticks}")
    return None


def discard_pending(store: SQLStore, conn: Any, aid: str, n_ticks: int) -> None:
    """Delete the pending rows of ``aid`` (tick and audit rows at or beyond its committed ``n_ticks``)
    and its marker, inside the caller's write transaction. Cheap when there are none (index ranges).
    Raises :class:`PendingDamage` (deleting nothing) when those rows are not exactly what the marker
    covers (:func:`pending_problem`): they are evidence of damage, never discarded silently."""
    why = pending_problem(store, conn, aid, n_ticks)
    if why is not None:
        raise PendingDamage(f"analysis {aid!r} refused: its store does not match its audit chain: {why}")
    store._q(conn, "DELETE FROM ticks WHERE analysis_id=? AND seq>=?", (aid, n_ticks))
    store._q(conn, "DELETE FROM audit WHERE analysis_id=? AND seq>=?", (aid, n_ticks))
    store._q(conn, "DELETE FROM pending_writes WHERE analysis_id=?", (aid,))


def _marker(store: SQLStore, conn: Any, aid: str) -> tuple[str, int, int] | None:
    r = store._q(conn, "SELECT token, first_seq, written FROM pending_writes WHERE analysis_id=?", (aid,)).fetchone()
    return None if r is None else (str(r[0]), int(r[1]), int(r[2]))


def settle_pending(store: SQLStore, conn: Any, aid: str, n_ticks: int, staged: tuple[str, int] | None) -> int:
    """Inside an append's write transaction: with ``staged`` (token, rows staged) check that the marker
    is this write's, starts at ``n_ticks`` and covers exactly those rows, and delete it (the rows become
    visible with the new ``n_ticks``); else discard whatever is pending. Returns how many of the batch's
    rows are already stored. Raises :class:`PendingLost` when the staged rows are not there as written."""
    if staged is None:
        discard_pending(store, conn, aid, n_ticks)
        return 0
    token, written = staged
    if _marker(store, conn, aid) != (token, n_ticks, written):
        raise PendingLost(f"analysis {aid!r}: the staged rows of this batch were discarded by another writer; evaluated again")
    store._q(conn, "DELETE FROM pending_writes WHERE analysis_id=?", (aid,))
    return written


def stage_rows(store: SQLStore, aid: str, n_ticks: int, head: str, token: str, ticks: Sequence[str], audit: Sequence[str],
               chunk: int) -> int:
    """Write ``ticks[:k]`` and ``audit[:k]`` as pending rows of ``aid`` (from seq ``n_ticks`` on), at most
    ``chunk`` per transaction, each transaction taking the write turn as a bulk writer; ``k`` (returned)
    leaves the last 1 to ``chunk`` rows to the publishing transaction. Each transaction first checks that
    the analysis still stands at ``n_ticks`` and chain head ``head`` and that the marker is this write's
    (:class:`PendingLost` otherwise, nothing more written)."""
    k = ((len(ticks) - 1) // chunk) * chunk
    for start in range(0, k, chunk):
        with store.locked(aid, bulk=True) as la:
            if la.row.n_ticks != n_ticks or la.row.audit_head != head:
                raise PendingLost(f"analysis {aid!r} was appended to by another writer while this batch was written; evaluated again")
            c = la._c
            if start == 0:
                discard_pending(store, c, aid, n_ticks)
                store._q(c, "INSERT INTO pending_writes (analysis_id, token, first_seq, written) VALUES (?, ?, ?, 0)", (aid, token, n_ticks))
            elif _marker(store, c, aid) != (token, n_ticks, start):
                raise PendingLost(f"analysis {aid!r}: the staged rows of this batch were discarded by another writer; evaluated again")
            stop = start + chunk
            store._many(c, "INSERT INTO ticks (analysis_id, seq, payload) VALUES (?, ?, ?)",
                        [(aid, n_ticks + i, p) for i, p in enumerate(ticks[start:stop], start=start)])
            store._many(c, "INSERT INTO audit (analysis_id, seq, lines) VALUES (?, ?, ?)",
                        [(aid, n_ticks + i, a) for i, a in enumerate(audit[start:stop], start=start)])
            store._q(c, "UPDATE pending_writes SET written=? WHERE analysis_id=?", (min(stop, k), aid))
    return k
