"""Scheduled rollback drills: run the rollback path every ``every_s`` seconds and record each run.

:func:`next_slot` is pure (the clock's reading comes in as an argument); :func:`run_drill_schedule` is
the loop an adapter runs, with the clock and the sleep passed in (tests inject both, the CLI passes
``time.time`` and ``time.sleep``). Slots are anchored: ``start_at + k * every_s`` (without
``start_at``, the anchor is the slot of the pipeline's last drill in the store, else the first run's
time), so drills do not drift by their own duration. A slot that is due (its time has come and no
drill ran for it, per the store) runs at once, so a cron job with ``--runs 1`` started just after a
slot runs that slot now; slots missed before it are not run late in a burst: only the latest due slot
runs, and its record counts the slots skipped since the last drill in the store.
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
    """The slot to run next and how many slots between ``last`` (the slot last run) and it were missed.

    The latest slot at or before ``now`` when no drill ran for it (it is due: run it now), else the
    first slot after ``now`` (and after ``last``). ``anchor``: the slots' origin when the schedule has
    no ``start_at`` (None: ``last``, else ``now``).

    Examples
    --------
    >>> s = DrillSchedule(every_s=60)
    >>> next_slot(s, 1000.0, None), next_slot(s, 1000.5, 1000.0, 1000.0), next_slot(s, 1130.0, 1000.0, 1000.0)
    ((1000.0, 0), (1060.0, 0), (1120.0, 1))
    """
    a = schedule.start_at if schedule.start_at is not None else (anchor if anchor is not None else
                                                                  last if last is not None else now)
    every = schedule.every_s
    done = -1 if last is None else math.floor((last - a) / every + 1e-9)  # index of the slot last run
    due = math.floor((now - a) / every + 1e-9)  # index of the latest slot at or before now
    k = due if due >= 0 and due > done else max(done + 1, math.ceil((now - a) / every - 1e-9), 0)
    return a + k * every, (max(k - done - 1, 0) if last is not None else 0)


def run_drill_schedule(spec: PipelineSpec, base: str | Path, store: DeploymentStore, *, runs: int,
                       clock: Callable[[], float], sleep: Callable[[float], None],
                       verify: Callable[[], bool] | None = None, client: httpx.Client | None = None,
                       on_record: Callable[[DeploymentRecord], None] | None = None) -> list[DeploymentRecord]:
    """Run ``runs`` drills on the pipeline's schedule (``spec.drills``); each is saved as a record.

    The first slot comes from :func:`next_slot` with the slot of the pipeline's last scheduled drill in
    ``store`` (a due slot runs at once). Each record has ``scheduled_for`` (the slot),
    ``started_at``/``ended_at`` (from ``clock``), the rollback actuators' results and duration, and
    ``missed_slots`` in its rollback stage entry; ``on_record`` is called with each record as soon as it
    is saved (the CLI prints it then, not after the last run)."""
    from .._exceptions import ConfigError
    from ._runner import run_drill

    if spec.drills is None:
        raise ConfigError(f"pipeline {spec.name} has no 'drills' schedule (drills: {{every_s: SECONDS}})")
    out: list[DeploymentRecord] = []
    prev = store.last_drill(spec.name)
    last: float | None = prev.scheduled_for if prev is not None else None
    anchor: float | None = last
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
        if on_record is not None:
            on_record(rec)
        last = slot
    return out
