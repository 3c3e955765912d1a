"""Prometheus pull for split analyses: per-arm counters and histograms polled into split ticks.

:class:`SplitPullSpec` is the create body's ``prometheus`` object of a ``mode: split`` analysis: the
:class:`~deploysignal.sources.SplitSpec` of ``docs/integrations.md`` (connection, ``arm_label``, ``arms``,
``units``, ``events``, ``histograms``) plus the poller's schedule as in pull mode (``max_ticks``,
``max_backfill_seconds``, ``failing_after``, ``stop_after_failures``). :class:`SplitPuller` is the pull-mode
poller (:class:`~deploysignal.sources.PrometheusPuller`: grid times in order, idempotent batch ids,
backfill, failure states) reading each grid time with
:meth:`PrometheusSplitSource.read <deploysignal.sources.PrometheusSplitSource.read>`. A grid time the
source reports as a gap (an arm's units unknown) is not ingested: a missing tick, never zeros; a metric
the source leaves out of an arm is missing in that tick.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import Field, StrictInt

from .._exceptions import InputError
from ..sources import PrometheusPuller, PrometheusSplitSource, SplitSpec
from ..split import MetricSpec

__all__ = ["SplitPullSpec", "SplitPuller", "check_split_pull"]

log = logging.getLogger(__name__)


class SplitPullSpec(SplitSpec):
    """Pull mode of a split analysis: :class:`~deploysignal.sources.SplitSpec` and the poller's schedule
    (the fields of :class:`~deploysignal.sources.PullSpec` with the same names and defaults)."""

    max_ticks: StrictInt | None = Field(None, ge=1)
    max_backfill_seconds: float = Field(3600, ge=0, le=7 * 86_400)
    failing_after: StrictInt = Field(3, ge=1, le=1_000_000)
    stop_after_failures: StrictInt | None = Field(60, ge=1, le=1_000_000)


def check_split_pull(spec: SplitPullSpec, specs: list[MetricSpec]) -> None:
    """The queries must be the analysis' metrics: events for event metrics, histograms (with the
    metric's edges) for continuous ones. :class:`InputError` naming the field otherwise."""
    by = {s.name: s for s in specs}
    for name in spec.events:
        if name not in by or by[name].kind != "event":
            raise InputError(f"prometheus.events.{name}: not an event metric of the analysis ({', '.join(by)})", column="prometheus.events")
    for name, h in spec.histograms.items():
        if name not in by or by[name].kind != "continuous":
            raise InputError(f"prometheus.histograms.{name}: not a continuous metric of the analysis ({', '.join(by)})", column="prometheus.histograms")
        if [float(x) for x in h.edges] != [float(x) for x in by[name].edges]:
            raise InputError(f"prometheus.histograms.{name}.edges {h.edges} differ from the metric's edges {list(by[name].edges)}",
                             column="prometheus.histograms")
    unread = sorted(set(by) - set(spec.events) - set(spec.histograms))
    if unread:
        raise InputError(f"prometheus: no query for metrics {unread} (each metric needs its events counter or histogram)", column="prometheus")


class SplitPuller(PrometheusPuller):
    """:class:`~deploysignal.sources.PrometheusPuller` for a split analysis (see the module docstring);
    the status counts the grid times that were gaps (``gaps``, with the last reason)."""

    @staticmethod
    def _parse(spec: Mapping[str, Any]) -> SplitPullSpec:
        return SplitPullSpec.model_validate(dict(spec))

    def _source(self, client: httpx.Client | None) -> PrometheusSplitSource:
        return PrometheusSplitSource(self.spec, client=client, policy=self.policy)

    def _fetch(self, times: list[float]) -> list[dict[str, Any]]:
        self._read_to = times[-1]
        got = self.source.read(times)
        if got.gaps:
            self._counts["gaps"] = self._counts.get("gaps", 0) + len(got.gaps)
            self._counts["last_gap"] = got.gaps[-1]
            log.info("analysis %s: %d grid times without a tick (gaps), last: %s", self.aid, len(got.gaps), got.gaps[-1])
        return [{**t, "timestamp": _epoch(t["timestamp"])} for t in got.ticks]

    def _ingest(self, ticks: Any, *, backfill: bool) -> tuple[bool, int | None]:
        """As the pull-mode poller's, but the next grid time to read is after the last one *read*: a
        gap at the end is not read again at once (that would poll Prometheus in a busy loop)."""
        done, next_k = super()._ingest(ticks, backfill=backfill)
        retry = bool(ticks) and next_k is not None and next_k <= int(round(ticks[-1]["timestamp"] / self.interval))
        if done or retry:  # stopped, or the store failed at a tick: read from that tick again
            return done, next_k
        past = int(round(self._read_to / self.interval)) + 1
        return False, past if next_k is None else max(next_k, past)


def _epoch(ts: Any) -> float:
    if isinstance(ts, (int, float)):
        return float(ts)
    return _dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
