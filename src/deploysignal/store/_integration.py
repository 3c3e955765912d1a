"""Integration state next to the analyses: analysis templates, revision bindings, controller events.

Three additive tables (created with ``CREATE TABLE IF NOT EXISTS`` by every store at start-up, so an
existing database gains them without a migration step; no existing table or column changes)::

    analysis_templates (id, body, created)                  settings + config ref for new revisions
    analysis_revisions (analysis_id, template_id, revision, created)   the one revision an analysis judges
    integration_events (id, source, subject, revision, body, received)  events a controller sent (Flagger)

An analysis is bound to at most one revision, for good: :meth:`IntegrationTables.bind_revision` is an
``INSERT ... ON CONFLICT DO NOTHING`` followed by a read in the same transaction, so two processes
binding the same analysis concurrently agree on the first binding, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._sql import SQLStore

__all__ = ["INTEGRATION_SCHEMA", "IntegrationTables", "RevisionBinding"]

INTEGRATION_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS analysis_templates (id TEXT PRIMARY KEY, body TEXT NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS analysis_revisions (analysis_id TEXT PRIMARY KEY, template_id TEXT, revision TEXT NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS integration_events (id TEXT PRIMARY KEY, source TEXT NOT NULL, subject TEXT NOT NULL,"
    " revision TEXT, body TEXT NOT NULL, received TEXT NOT NULL)",
]


@dataclass(frozen=True)
class RevisionBinding:
    """The revision an analysis judges (``template_id`` when it was created from a template)."""

    analysis_id: str
    template_id: str | None
    revision: str
    created: str


class IntegrationTables:
    """Templates, revision bindings and events in the tables of one :class:`~deploysignal.store.SQLStore`."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    # -------------------------------------------------------------- templates
    def put_template(self, template_id: str, body: dict[str, Any], created: str) -> None:
        """Create or replace a template. Analyses already created from it keep their own settings."""
        s, c = self.store, self.store.conn
        with s._tx(c, write=True):
            s._q(c, "DELETE FROM analysis_templates WHERE id=?", (template_id,))
            s._q(c, "INSERT INTO analysis_templates (id, body, created) VALUES (?, ?, ?)", (template_id, json.dumps(body, sort_keys=True), created))

    def get_template(self, template_id: str) -> tuple[dict[str, Any], str] | None:
        s, c = self.store, self.store.conn
        with s._tx(c):
            r = s._q(c, "SELECT body, created FROM analysis_templates WHERE id=?", (template_id,)).fetchone()
        return None if r is None else (json.loads(r[0]), r[1])

    def list_templates(self) -> list[tuple[str, dict[str, Any], str]]:
        s, c = self.store, self.store.conn
        with s._tx(c):
            rows = s._q(c, "SELECT id, body, created FROM analysis_templates ORDER BY id").fetchall()
        return [(r[0], json.loads(r[1]), r[2]) for r in rows]

    # -------------------------------------------------------------- revisions
    def bind_revision(self, analysis_id: str, template_id: str | None, revision: str, created: str) -> RevisionBinding:
        """Bind ``analysis_id`` to ``revision`` unless it is bound already; returns the binding in force
        (which names another revision when the analysis was bound before: the caller must refuse)."""
        s, c = self.store, self.store.conn
        with s._tx(c, write=True):
            s._q(c, "INSERT INTO analysis_revisions (analysis_id, template_id, revision, created) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (analysis_id) DO NOTHING", (analysis_id, template_id, revision, created))
            r = s._q(c, "SELECT analysis_id, template_id, revision, created FROM analysis_revisions WHERE analysis_id=?", (analysis_id,)).fetchone()
        return RevisionBinding(r[0], r[1], r[2], r[3])

    def get_revision(self, analysis_id: str) -> RevisionBinding | None:
        s, c = self.store, self.store.conn
        with s._tx(c):
            r = s._q(c, "SELECT analysis_id, template_id, revision, created FROM analysis_revisions WHERE analysis_id=?", (analysis_id,)).fetchone()
        return None if r is None else RevisionBinding(r[0], r[1], r[2], r[3])

    def revisions_of(self, template_id: str) -> list[RevisionBinding]:
        """Every analysis created from ``template_id``, oldest first (the template's history)."""
        s, c = self.store, self.store.conn
        with s._tx(c):
            rows = s._q(c, "SELECT analysis_id, template_id, revision, created FROM analysis_revisions WHERE template_id=? ORDER BY created, analysis_id", (template_id,)).fetchall()
        return [RevisionBinding(*r) for r in rows]

    # -------------------------------------------------------------- events
    def add_event(self, event_id: str, source: str, subject: str, revision: str | None, body: dict[str, Any], received: str, keep: int | None = None) -> None:
        """Record an event; with ``keep``, only the newest ``keep`` events of ``source`` stay (older ones,
        by id, i.e. arrival time, are deleted in the same transaction)."""
        s, c = self.store, self.store.conn
        with s._tx(c, write=True):
            s._q(c, "INSERT INTO integration_events (id, source, subject, revision, body, received) VALUES (?, ?, ?, ?, ?, ?)",
                 (event_id, source, subject, revision, json.dumps(body, sort_keys=True), received))
            if keep is not None:
                s._q(c, "DELETE FROM integration_events WHERE source=? AND id < (SELECT id FROM integration_events WHERE source=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                     (source, source, keep - 1))

    def events(self, source: str, subject: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Recorded events of ``source`` (optionally of one subject), in id order (ids start with the arrival time in ns), at most ``limit``."""
        s, c = self.store, self.store.conn
        sql = "SELECT id, subject, revision, body, received FROM integration_events WHERE source=?"
        args: list[Any] = [source]
        if subject is not None:
            sql += " AND subject=?"
            args.append(subject)
        with s._tx(c):
            rows = s._q(c, sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [{"id": r[0], "subject": r[1], "revision": r[2], "body": json.loads(r[3]), "received": r[4]} for r in rows]
