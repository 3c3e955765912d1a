"""Deleting analyses, and which ones a retention period lets go; a tombstone keeps each one's final head.

An additive table (``CREATE TABLE IF NOT EXISTS``; no existing table or column changes)::

    deleted_analyses (analysis_id, deleted, n_ticks, audit_head, summary, reason)

:func:`delete_analysis` removes an analysis and everything stored for it (ticks, audit lines, snapshot,
batch keys and digests, Kayenta executions, its revision binding) in one transaction, holding the
analysis' write lock, and writes a tombstone: the id, when, why, the tick count, the **final head of
its audit chain** and the last verdict summary. The audit lines themselves are gone; an audit log
exported before the delete (``GET /v1/analyses/{id}/audit``) still verifies against the tombstone's
head (``deploysignal audit verify FILE --head <audit_head>``), so export first what must be kept.

:func:`expired` names the analyses a retention period lets go: decided (``final``) ones created more
than the period ago whose last tick is also older than that (by its telemetry timestamp), so a
long-running analysis is not deleted as soon as it decides. An undecided analysis is never expired.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._sql import Conflict

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._sql import SQLStore

__all__ = ["RETENTION_SCHEMA", "delete_analysis", "expired", "tombstones"]

RETENTION_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS deleted_analyses (analysis_id TEXT NOT NULL, deleted TEXT NOT NULL, n_ticks BIGINT NOT NULL,"
    " audit_head TEXT NOT NULL, summary TEXT, reason TEXT NOT NULL, PRIMARY KEY (analysis_id, deleted))",
]

#: what is deleted with an analysis: (table, column naming the analysis)
_OWNED = (("ticks", "analysis_id"), ("audit", "analysis_id"), ("snapshots", "analysis_id"), ("batches", "analysis_id"),
          ("batch_digests", "analysis_id"), ("executions", "analysis_id"), ("analysis_revisions", "analysis_id"),
          ("pending_writes", "analysis_id"), ("replay_jobs", "analysis_id"), ("analyses", "id"))  # store/_pending.py, store/_jobs.py


def delete_analysis(store: SQLStore, analysis_id: str, *, reason: str, deleted: str, undecided: bool = False) -> dict[str, Any]:
    """Delete ``analysis_id`` and write its tombstone (see the module); returns the tombstone.

    Parameters
    ----------
    reason : str
        Why (kept in the tombstone), e.g. ``"operator: <text>"`` or ``"retention: 30 days"``.
    deleted : str
        When (ISO-8601, the caller's clock: the store reads none).
    undecided : bool
        Also delete an analysis whose verdict is not final (it may be the live gate of a rollout);
        without it such an analysis raises :class:`~deploysignal.store.Conflict`.

    Raises
    ------
    NotFound
        No such analysis.
    Conflict
        The verdict is not final and ``undecided`` is false.
    """
    with store.locked(analysis_id) as la:
        row = la.row
        summary = row.summary or {}
        if not summary.get("final") and not undecided:
            raise Conflict(f"analysis {analysis_id!r} is undecided (verdict {summary.get('verdict', 'pending')}, not final): it may be"
                           " the live gate of a rollout; delete it with force=true (CLI --force), or void it first")
        s, c = la._s, la._c  # noqa: SLF001 - same package, the open transaction
        tomb = {"analysis": analysis_id, "deleted": deleted, "n_ticks": row.n_ticks, "audit_head": row.audit_head,
                "verdict": summary.get("verdict", "pending"), "final": bool(summary.get("final")), "reason": reason}
        s._q(c, "INSERT INTO deleted_analyses (analysis_id, deleted, n_ticks, audit_head, summary, reason) VALUES (?, ?, ?, ?, ?, ?)",
             (analysis_id, deleted, row.n_ticks, row.audit_head, None if row.summary is None else json.dumps(row.summary), reason))
        s._q(c, "DELETE FROM replay_job_created WHERE id IN (SELECT id FROM replay_jobs WHERE analysis_id=?)", (analysis_id,))
        for table, col in _OWNED:
            s._q(c, f"DELETE FROM {table} WHERE {col}=?", (analysis_id,))
    return tomb


def expired(store: SQLStore, cutoff_iso: str, cutoff_epoch: float) -> list[str]:
    """Ids of the decided analyses created before ``cutoff_iso`` whose last tick's timestamp is before
    ``cutoff_epoch`` (both the same instant, the caller's clock), oldest first."""
    c = store.conn
    with store._tx(c):  # noqa: SLF001
        rows = store._q(c, "SELECT id, summary, last_ts FROM analyses WHERE created < ? ORDER BY created, id", (cutoff_iso,)).fetchall()  # noqa: SLF001
    out = []
    for aid, summary, last_ts in rows:
        try:
            decided = json.loads(summary) if summary is not None else None
        except ValueError:  # a damaged summary is not a decision (and never stops the round)
            decided = None
        if not isinstance(decided, dict) or not decided.get("final"):  # 'null' after a cut-back to tick 0
            continue
        if last_ts is not None and float(last_ts) >= cutoff_epoch:
            continue
        out.append(str(aid))
    return out


def tombstones(store: SQLStore, analysis_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Tombstones of deleted analyses (of one id, or all), oldest first, at most ``limit``."""
    c = store.conn
    sql = "SELECT analysis_id, deleted, n_ticks, audit_head, summary, reason FROM deleted_analyses"
    args: list[Any] = []
    if analysis_id is not None:
        sql += " WHERE analysis_id=?"
        args.append(analysis_id)
    with store._tx(c):  # noqa: SLF001
        rows = store._q(c, sql + " ORDER BY deleted, analysis_id LIMIT ?", (*args, limit)).fetchall()  # noqa: SLF001
    out = []
    for aid, deleted, n, head, summary, reason in rows:
        s = {} if summary is None else json.loads(summary)
        out.append({"analysis": aid, "deleted": deleted, "n_ticks": int(n), "audit_head": head, "verdict": s.get("verdict", "pending"),
                    "final": bool(s.get("final")), "reason": reason})
    return out
