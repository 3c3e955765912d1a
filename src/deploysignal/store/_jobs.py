"""Replay jobs: their state and result, kept in the store so every process serving it can answer.

An additive table (``CREATE TABLE IF NOT EXISTS``; no existing table or column changes)::

    replay_jobs (id, analysis_id, state, result, owner, created, finished)

    replay_job_created (id, analysis_created)   the ``created`` stamp of the analysis a job replays

A job is served only for the analysis it was submitted for: the same id re-created (deleted, then
created again) has another ``created`` stamp, and the old job is not its job.
``state`` is ``running`` (``result`` holds ``{"deadline": ...}``), ``done`` (``result`` holds the replay's report) or ``failed``
(``result`` holds ``{"error": ...}``). ``owner`` is a random id of the serving process that runs the job: when a job left ``running`` is
reported ``lost`` is :mod:`deploysignal.service._replay_jobs`.
Finished jobs beyond the newest ``keep`` are deleted when a job is submitted. The rows of an analysis'
jobs are not part of its chain: they are re-derivable (run the replay again).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._sql import SQLStore

__all__ = ["JOBS_SCHEMA", "finish_job", "get_job", "put_job", "set_running_result"]

JOBS_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS replay_jobs (id TEXT PRIMARY KEY, analysis_id TEXT NOT NULL, state TEXT NOT NULL, result TEXT,"
    " owner TEXT NOT NULL, created TEXT NOT NULL, finished TEXT)",
    "CREATE TABLE IF NOT EXISTS replay_job_created (id TEXT PRIMARY KEY, analysis_created TEXT NOT NULL)",
]

_COLS = "j.id, j.analysis_id, j.state, j.result, j.owner, j.created, j.finished, k.analysis_created"


def put_job(store: SQLStore, job_id: str, analysis_id: str, owner: str, created: str, keep: int, analysis_created: str) -> None:
    """Record a new job (``running``: a job is recorded only once it has a replay slot) of the analysis
    created at ``analysis_created``; delete finished jobs beyond the newest ``keep``."""
    c = store.conn
    with store._tx(c, write=True):  # noqa: SLF001 - a store table module
        store._q(c, "INSERT INTO replay_jobs (id, analysis_id, state, result, owner, created, finished) VALUES (?, ?, 'running', NULL, ?, ?, NULL)",
                 (job_id, analysis_id, owner, created))
        store._q(c, "INSERT INTO replay_job_created (id, analysis_created) VALUES (?, ?)", (job_id, analysis_created))
        store._q(c, "DELETE FROM replay_jobs WHERE state IN ('done', 'failed') AND id NOT IN"
                    " (SELECT id FROM replay_jobs WHERE state IN ('done', 'failed') ORDER BY finished DESC, id DESC LIMIT ?)", (keep,))
        store._q(c, "DELETE FROM replay_job_created WHERE id NOT IN (SELECT id FROM replay_jobs)")


def set_running_result(store: SQLStore, job_id: str, result: dict[str, Any]) -> None:
    """The ``result`` of a job while it is ``running`` (its deadline)."""
    c = store.conn
    with store._tx(c, write=True):  # noqa: SLF001
        store._q(c, "UPDATE replay_jobs SET result=? WHERE id=? AND state='running'", (json.dumps(result), job_id))


def finish_job(store: SQLStore, job_id: str, state: str, result: dict[str, Any], finished: str) -> None:
    c = store.conn
    with store._tx(c, write=True):  # noqa: SLF001
        store._q(c, "UPDATE replay_jobs SET state=?, result=?, finished=? WHERE id=?", (state, json.dumps(result), finished, job_id))


def get_job(store: SQLStore, job_id: str) -> dict[str, Any] | None:
    """The job as stored: ``{"job", "analysis", "state", "result", "owner", "created", "finished",
    "analysis_created"}`` (None for a job recorded before that table), or None."""
    c = store.conn
    with store._tx(c):  # noqa: SLF001
        r = store._q(c, f"SELECT {_COLS} FROM replay_jobs j LEFT JOIN replay_job_created k ON k.id = j.id WHERE j.id=?", (job_id,)).fetchone()
    if r is None:
        return None
    return {"job": r[0], "analysis": r[1], "state": r[2], "result": None if r[3] is None else json.loads(r[3]), "owner": r[4], "created": r[5],
            "finished": r[6], "analysis_created": r[7]}
