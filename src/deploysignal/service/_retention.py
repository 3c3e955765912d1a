"""Deleting analyses through the service: ``DELETE /v1/analyses/{id}``, ``GET /v1/deleted`` and the
retention task of ``deploysignal serve --retain-days N``.

A delete removes the analysis and everything stored for it and keeps a tombstone with its final audit
head (``store/_retention.py``): export the audit log first (``GET /v1/analyses/{id}/audit``) when it must
be kept; the export still verifies against the tombstone's head. An undecided analysis (verdict not
final) may be the live gate of a rollout: deleting it needs ``force=true``. Retention deletes only
decided analyses, never an undecided one, once they are older than the period (created, and last tick
stamped, more than ``retain_days`` ago), checking every ``retention_interval`` seconds.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from ..store import Conflict, NotFound, expired, tombstones
from ._manager import AnalysisManager
from ._scope import OutOfScope

__all__ = ["RetentionTask", "add_retention_routes", "retain_once"]

log = logging.getLogger(__name__)


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")


def retain_once(manager: AnalysisManager, retain_days: float, now: float) -> list[str]:
    """Delete the decided analyses older than ``retain_days`` at time ``now`` (epoch seconds); the
    ids deleted. One that another process deleted first, or that is no longer final, is skipped."""
    cutoff = now - retain_days * 86400.0
    done = []
    for aid in expired(manager.store, _iso(cutoff), cutoff):
        try:
            manager.delete(aid, reason=f"retention: decided, older than {retain_days:g} days", deleted=_iso(now))
        except (NotFound, Conflict):
            continue
        except Exception:  # noqa: BLE001 - this one is retried next round; the others are deleted now
            log.exception("retention: deleting analysis %s failed", aid)
            continue
        done.append(aid)
    return done


class RetentionTask(threading.Thread):
    """Runs :func:`retain_once` every ``interval`` seconds until ``stop`` is set (a failing round is
    logged and retried at the next one)."""

    def __init__(self, manager: AnalysisManager, retain_days: float, interval: float, stop: threading.Event,
                 clock: Callable[[], float], on_delete: Callable[[str], None]) -> None:
        super().__init__(name="deploysignal-retention", daemon=True)
        self.manager, self.retain_days, self.interval, self.stop, self.clock, self.on_delete = manager, retain_days, interval, stop, clock, on_delete

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                deleted = retain_once(self.manager, self.retain_days, self.clock())
            except Exception:  # noqa: BLE001 - e.g. the store is busy: the next round retries
                log.exception("retention round failed")
                deleted = []
            for aid in deleted:  # each one's cleanup (poller, series) whatever another one's does
                try:
                    self.on_delete(aid)
                except Exception:  # noqa: BLE001
                    log.exception("retention: cleanup after deleting analysis %s failed", aid)
            self.stop.wait(self.interval)


def add_retention_routes(app: FastAPI, manager: AnalysisManager, read: list[Any], write: list[Any], now: Callable[[], str],
                         on_delete: Callable[[str], None]) -> None:
    """Register ``DELETE /v1/analyses/{aid}`` (``write``) and ``GET /v1/deleted`` (``read``) on ``app``."""

    @app.delete("/v1/analyses/{aid}", dependencies=write, tags=["analyses"])
    async def delete_analysis(
        aid: str,
        force: Annotated[bool, Query(description="Also delete an undecided analysis (it may be the live gate of a rollout).")] = False,
        reason: Annotated[str, Query(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f-\x9f]*\S[^\x00-\x1f\x7f-\x9f]*$")] = "operator",
    ) -> dict[str, Any]:
        """Delete an analysis and its ticks, audit lines and snapshot; a tombstone keeps its final audit
        head (``GET /v1/deleted``). 409 for an undecided analysis without ``force=true``. Export the
        audit log first if it must be kept: the export verifies against the tombstone's head."""
        tomb = await run_in_threadpool(manager.delete, aid, reason=f"operator: {reason}", deleted=now(), undecided=force)
        await run_in_threadpool(on_delete, aid)  # reads the store (is the id created again meanwhile?)
        return {**tomb, "note": "ticks, audit lines and snapshot deleted; an exported audit log verifies against audit_head"
                                 " (deploysignal audit verify FILE --head <audit_head>)"}

    @app.get("/v1/deleted", dependencies=read, tags=["analyses"])
    def deleted(request: Request, analysis: Annotated[str | None, Query(max_length=128)] = None,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> list[dict[str, Any]]:
        """Tombstones of deleted analyses (id, when, why, ticks, final audit head, last verdict), oldest
        first. A tombstone keeps no project: listing them needs an unscoped token."""
        p = getattr(request.state, "principal", None)
        if p is not None and p.scoped:
            raise OutOfScope(f"token {p.name!r} is scoped to {p.describe()}: tombstones keep no project; listing them needs an unscoped token")
        return tombstones(manager.store, analysis, limit)
