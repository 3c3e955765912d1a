"""Idempotency keys checked against content: a ``batch_id`` names one batch of ticks, for good.

An additive table (``CREATE TABLE IF NOT EXISTS``, like the integration tables; no existing table or
column changes)::

    batch_digests (analysis_id, batch_id, digest)    SHA-256 of the batch's ticks as received

A batch acknowledged under a ``batch_id`` records the digest of its ticks in the same transaction as
its rows (:func:`record_batch_digest`). A later batch with that id is a duplicate (the original
acknowledgement is returned, nothing is written) only when its digest is the same; otherwise it is
refused with :class:`BatchConflict` (HTTP 409), instead of being silently dropped as a duplicate
while its ticks were never ingested. Batches acknowledged by a version without this table (0.4.0)
have no digest: a repeated id is then still answered as a duplicate, as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import InputError
from ._sql import Conflict

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._sql import LockedAnalysis

__all__ = ["BATCH_SCHEMA", "BatchConflict", "batch_digest", "check_batch_digest", "record_batch_digest"]

BATCH_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS batch_digests (analysis_id TEXT NOT NULL, batch_id TEXT NOT NULL, digest TEXT NOT NULL,"
    " PRIMARY KEY (analysis_id, batch_id))",
]


class BatchConflict(Conflict, InputError):
    """A ``batch_id`` already acknowledged for a batch of other content (HTTP 409). Also an
    :class:`InputError`: a poller that meets it skips the tick, as for any refused input."""

    def __init__(self, message: str) -> None:
        InputError.__init__(self, message, column="batch_id")


def batch_digest(ticks: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of a batch's ticks as received (JSON, sorted keys; numbers in Python's notation, so
    ``1`` and ``1.0`` differ: a retry resends the same request).

    >>> batch_digest([{"timestamp": 1.0, "values": {"a": 2}}]) == batch_digest([{"values": {"a": 2}, "timestamp": 1.0}])
    True
    >>> batch_digest([{"timestamp": 1.0, "values": {"a": 2}}]) == batch_digest([{"timestamp": 1.0, "values": {"a": 3}}])
    False
    """
    text = json.dumps(list(ticks), sort_keys=True, separators=(",", ":"), allow_nan=True, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def check_batch_digest(la: LockedAnalysis, batch_id: str, digest: str, prev: Mapping[str, Any]) -> None:
    """Raise :class:`BatchConflict` when ``batch_id`` (acknowledged as ``prev``) was recorded with
    another digest; return when it is the same batch or was recorded without a digest."""
    s = la._s  # noqa: SLF001 - same package
    r = s._q(la._c, "SELECT digest FROM batch_digests WHERE analysis_id=? AND batch_id=?", (la.row.id, batch_id)).fetchone()  # noqa: SLF001
    if r is not None and r[0] != digest:
        raise BatchConflict(f"batch_id {batch_id!r} was already used: the earlier batch with that id ({prev.get('accepted')} ticks from tick"
                            f" {prev.get('first_tick')}) was ingested; this one, of different content, was not. A retry must resend the"
                            " same ticks; new ticks need a new batch_id")


def record_batch_digest(la: LockedAnalysis, batch_id: str, digest: str) -> None:
    """Record the digest of the batch acknowledged under ``batch_id`` (in the ingest's transaction)."""
    la._s._q(la._c, "INSERT INTO batch_digests (analysis_id, batch_id, digest) VALUES (?, ?, ?)", (la.row.id, batch_id, digest))  # noqa: SLF001
