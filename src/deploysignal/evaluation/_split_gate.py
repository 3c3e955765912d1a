"""The split gate as an evaluated method: the path of ``deploysignal gate --split REQUESTS``.

The per-request log becomes the gate's blocks (:meth:`SplitGateMethod.data`) and goes through
:meth:`deploysignal.split.SplitGate.run_batch`, with the planned window equal to the log's length and
no extension, so every method of the evaluation has the same window. The gate counts ticks from the
first request; the first alarm is mapped back onto the log's own ticks (a log whose first ticks carry no
request starts later for the gate, exactly as it would for a user).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..simulate._split import SplitRequests
from ..split import RequestLog, SplitData, SplitGate, SplitSettings, SplitTick, requests_to_data, ticks_to_data
from ._split_peers import PeerResult, split_ticks

__all__ = ["SplitGateMethod", "make_split_method"]


@dataclass
class SplitGateMethod:
    """Run :class:`~deploysignal.split.SplitGate` (defaults except ``alpha``, ``window``, no extension) on a
    split log; ``unit_timeout`` (seconds) closes sessions when the log has a ``unit`` column."""

    alpha: float = 0.05
    window: int = 60
    unit_timeout: float = 60.0
    name: str = "split"

    def data(self, req: SplitRequests) -> tuple[SplitData, int]:
        """The gate's input and the log tick of the gate's first tick.

        Request-randomised logs go through the aggregated path (:func:`split_ticks`, one split tick per
        tier and tick, parsed by :meth:`SplitTick.from_dict` and :func:`ticks_to_data`): the same blocks
        as the request path (blocks by tick and tier), computed without per-request Python objects, and
        ticks on the log's own boundaries. Session-randomised logs take the request path
        (:func:`requests_to_data`: per-session counts, sessions closing after ``unit_timeout``)."""
        specs = list(req.metrics)
        if req.unit is None:
            ticks = [SplitTick.from_dict(d) for d in split_ticks(req)]
            return ticks_to_data(ticks, specs), 0
        tiers = req.tier if req.tier is not None else np.full(len(req), "", dtype=object)
        log = RequestLog(req.timestamps, req.canary, req.unit.astype(str).astype(object), tiers, req.values)
        offset = int(math.floor((float(req.timestamps.min()) - req.start) / req.tick_seconds))
        return requests_to_data(log, specs, req.tick_seconds, self.unit_timeout), offset

    def run(self, req: SplitRequests) -> PeerResult:
        if len(req) == 0:
            return PeerResult(None, "extend")
        settings = SplitSettings(alpha=self.alpha, window=self.window, max_extensions=0, tick_seconds=req.tick_seconds, unit_timeout=self.unit_timeout)
        data, offset = self.data(req)
        verdicts = SplitGate(list(req.metrics), settings).run_batch(data).verdicts
        for t, v in enumerate(verdicts):
            if v == "rollback":
                return PeerResult(t + offset, "rollback")
        last = verdicts[-1] if verdicts else "pending"
        return PeerResult(None, "proceed" if last == "proceed" else "extend")


def make_split_method(alpha: float, window: int, unit_timeout: float = 60.0) -> Callable[[SplitRequests], PeerResult]:
    """The split gate's ``run`` for the evaluation runner."""
    return SplitGateMethod(alpha=alpha, window=window, unit_timeout=unit_timeout).run
