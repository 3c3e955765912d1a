"""Scheduled rollback drills: run the rollback path every ``every_s`` seconds and record each run.

:func:`next_slot` is pure (the clock's reading comes in as an argument); :func:`run_drill_schedule` is
the loop an adapter runs, with the clock and the sleep passed in (tests inject both, the CLI passes
``time.time`` and ``time.sleep``). Slots are anchored: ``start_at + k * every_s`` (the anchor is the
first run's time when ``start_at`` is not given), so drills do not drift by their own duration; a slot
missed while the process was away is not run late in a burst: the next run is the next slot still to
come, and the record counts the slots skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import httpx

    from ._spec import PipelineSpec
    from ._store import DeploymentRecord, DeploymentStore

__all__ = ["DrillSchedule", "next_slot", "run_drill_schedule"]


class DrillSchedule(BaseModel):
    """``every_s``: seconds between drills (> 0); ``start_at``: epoch seconds of the first slot
    (default: the first run starts at once and anchors the slots)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_s: float = Field(gt=0, allow_inf_nan=False)
    start_at: float | None = Field(None, allow_inf_nan=False)


def next_slot(schedule: DrillSchedule, now: float, anchor: float | None, last: float | None = None) -> tuple[float, int]:
    """The next slot at or after ``now`` (strictly after ``last``, the slot last run) and how many slots
    between ``last`` and it were missed.

    Examples
    --------
    >>> s = DrillSchedule(every_s=60)
    >>> next_slot(s, 1000.0, None), next_slot(s, 1000.5, 1000.0, 1000.0), next_slot(s, 1130.0, 1000.0, 1000.0)
    ((1000.0, 0), (1060.0, 0), (1180.0, 2))
    """
    a = schedule.start_at if schedule.start_at is not None else (now if anchor is None else anchor)
    k = max(math.ceil((now - a) / schedule.every_s), 0)
    if last is not None:
        k = max(k, math.floor((last - a) / schedule.every_s + 1e-9) + 1)
    slot = a + k * schedule.every_s
    done = -1 if last is None else math.floor((last - a) / schedule.every_s + 1e-9)
    return slot, (k - done - 1 if last is not None else 0)


def run_drill_schedule(spec: PipelineSpec, base: str | Path, store: DeploymentStore, *, runs: int,
                       clock: Callable[[], float], sleep: Callable[[float], None],
                       verify: Callable[[], bool] | None = None,
                       client: httpx.Client | None = None) -> list[DeploymentRecord]:
    """Run ``runs`` drills on the pipeline's schedule (``spec.drills``); each is saved as a record.

    Each record has ``scheduled_for`` (the slot), ``started_at``/``ended_at`` (from ``clock``), the
    rollback actuators' results and duration, and ``missed_slots`` in its rollback stage entry."""
    from .._exceptions import ConfigError
    from ._runner import run_drill

    if spec.drills is None:
        raise ConfigError(f"pipeline {spec.name} has no 'drills' schedule (drills: {{every_s: SECONDS}})")
    out: list[DeploymentRecord] = []
    anchor: float | None = None
    last: float | None = None
    for _ in range(runs):
        now = clock()
        slot, missed = next_slot(spec.drills, now, anchor, last)
        if anchor is None:
            anchor = slot
        if slot > now:
            sleep(slot - now)
        rec = run_drill(spec, base, store, client=client, verify=verify, clock=clock, scheduled_for=slot,
                        missed_slots=missed)
        out.append(rec)
        last = slot
    return out
