"""DeploymentRecord history in SQLite (stdlib ``sqlite3``)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import InputError

__all__ = ["DeploymentRecord", "DeploymentStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    incumbent_version TEXT NOT NULL,
    candidate_version TEXT NOT NULL,
    strategy TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    baseline_metrics TEXT NOT NULL,
    deployed_metrics TEXT NOT NULL,
    rollback_reason TEXT,
    rollback_duration_s REAL,
    stages TEXT NOT NULL
)
"""
# added in 0.5.0 (issue 26); ALTER TABLE for stores written before, one statement per column
_ADDED_COLUMNS = (("error_messages", "TEXT NOT NULL DEFAULT '[]'"), ("rules_fired", "TEXT NOT NULL DEFAULT '[]'"),
                  ("scheduled_for", "REAL"))
_JSON_COLUMNS = ("baseline_metrics", "deployed_metrics", "stages", "error_messages", "rules_fired")
STATUSES = ("running", "promoted", "blocked", "rolled_back", "failed", "drill")


@dataclass
class DeploymentRecord:
    """One deployment attempt (or drill) and how it ended.

    ``strategy``: the strategy executed (direct, canary, shadow); ``baseline_metrics``: the
    incumbent's values the decision compared against (the baseline means of a watch's telemetry, the
    incumbent's mean grader score of an output comparison); ``deployed_metrics``: the candidate's
    (gate-check values, telemetry means, mean grader score); ``error_messages``: why a stage failed or
    could not be evaluated (an actuator's error, an unmeasured gate check, unreadable telemetry, a
    threshold rule whose column is absent, a grader error), prefixed with the stage; ``rules_fired``: every threshold rule that fired (name,
    action, observed value, reference, limit, tick, stage, traffic step); ``scheduled_for``: a scheduled
    drill's slot (epoch seconds)."""

    id: str
    pipeline: str
    incumbent_version: str
    candidate_version: str
    strategy: str
    started_at: float
    status: str = "running"
    ended_at: float | None = None
    baseline_metrics: dict[str, Any] = field(default_factory=dict)
    deployed_metrics: dict[str, Any] = field(default_factory=dict)
    rollback_reason: str | None = None
    rollback_duration_s: float | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)
    rules_fired: list[dict[str, Any]] = field(default_factory=list)
    scheduled_for: float | None = None


class DeploymentStore:
    """Append/update/list deployment records in one SQLite file (``":memory:"`` for tests)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(deployments)")}
            for col, decl in _ADDED_COLUMNS:
                if col not in have:
                    self._db.execute(f"ALTER TABLE deployments ADD COLUMN {col} {decl}")
            self._db.commit()
        except sqlite3.Error as e:
            raise InputError(f"cannot open deployment store {self.path}: {e}") from None

    def close(self) -> None:
        self._db.close()

    def save(self, rec: DeploymentRecord) -> None:
        """Insert or replace ``rec`` (by id)."""
        if rec.status not in STATUSES:
            raise InputError(f"status must be one of {', '.join(STATUSES)}; got {rec.status!r}", column="status")
        d = asdict(rec)
        for k in _JSON_COLUMNS:
            d[k] = json.dumps(d[k], sort_keys=True, allow_nan=False)
        cols = ", ".join(d)
        self._db.execute(f"INSERT OR REPLACE INTO deployments ({cols}) VALUES ({', '.join('?' * len(d))})",
                         tuple(d.values()))
        self._db.commit()

    def get(self, rec_id: str) -> DeploymentRecord:
        rows = self._query("WHERE id = ?", (rec_id,))
        if not rows:
            raise InputError(f"no deployment record {rec_id!r}", column="id")
        return rows[0]

    def history(self, limit: int = 100) -> list[DeploymentRecord]:
        """Most recent first."""
        return self._query("ORDER BY started_at DESC, id DESC LIMIT ?", (int(limit),))

    def last_drill(self, pipeline: str) -> DeploymentRecord | None:
        """The pipeline's scheduled drill with the latest slot (``scheduled_for``), or None."""
        rows = self._query("WHERE pipeline = ? AND scheduled_for IS NOT NULL ORDER BY scheduled_for DESC, id DESC "
                           "LIMIT 1", (pipeline,))
        return rows[0] if rows else None

    def _query(self, tail: str, args: tuple[Any, ...]) -> list[DeploymentRecord]:
        cur = self._db.execute(f"SELECT * FROM deployments {tail}", args)
        names = [c[0] for c in cur.description]
        out = []
        for row in cur.fetchall():
            d = dict(zip(names, row))
            for k in _JSON_COLUMNS:
                d[k] = json.loads(d[k])
            out.append(DeploymentRecord(**d))
        return out
