"""The agreed aggregated split-tick format (shared with the Prometheus source and the service).

One tick of one tier, as a JSON object (also one line of a JSONL "split ticks" file)::

    {"timestamp": "2026-12-07T10:00:00Z",
     "arms": {"canary": {"units": 240, "events": {"errors": 3},
                         "buckets": {"latency_ms": [10, 50, 120, 40, 15, 5]}},
              "stable": {"units": 4810, "events": {"errors": 41},
                         "buckets": {"latency_ms": [220, 1010, 2300, 890, 310, 80]}}},
     "tier": null}

``units``: randomised units of the arm that arrived in the tick; ``events[m]``: units with an event of
event metric ``m`` (at most ``units``: a unit with several events counts once, since the test needs
per-unit counts; per-request logs keep them); ``buckets[m]``: non-cumulative counts of continuous metric
``m`` on its ``B`` edges, ``B + 1`` buckets with Prometheus ``le`` semantics (a value equal to an edge
falls in the bucket it closes), summing to at most ``units``. A metric absent from an arm = not measured
in that tick (missing, not 0). Objects with the same timestamp and different tiers form one tick.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .._exceptions import InputError
from .._text import JSON_UNUSABLE, error_head, not_utf8_message
from ..sources._files import _parse_time
from ._data import BlockBuilder, SplitData
from ._spec import MetricSpec

__all__ = ["ArmCounts", "SplitTick", "read_split_ticks", "ticks_to_data"]

_ARMS = ("canary", "stable")


#: the largest count a tick may hold: sums over a million ticks stay inside int64 (the kernels' accumulators)
MAX_COUNT = 10**12


def _count(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and (not math.isfinite(v) or v != int(v))) or v < 0:
        shown = repr(v) if not isinstance(v, int) or abs(v) < 10**30 else "a huge negative integer"  # repr of a 5,000-digit int raises
        raise InputError(f"{where} must be a non-negative integer, got {shown[:80]}")
    if v > MAX_COUNT:
        raise InputError(f"{where} is more than {MAX_COUNT:.0e} units in one tick: not a count this format accepts")
    return int(v)


def _counts(v: list[Any], where: str) -> tuple[int, ...]:
    """A list of counts, checked as :func:`_count` checks each (the same errors, naming the first bad
    index); plain non-negative ints within the limit, the usual case, are accepted in one pass."""
    if set(map(type, v)) == {int} and min(v) >= 0 and max(v) <= MAX_COUNT:
        return tuple(v)
    return tuple(_count(x, f"{where}[{i}]") for i, x in enumerate(v))


def _keys(d: Any, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(d, dict):
        raise InputError(f"{where} must be a JSON object with keys {', '.join(allowed)}")
    unknown = set(d) - set(allowed)
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)} (allowed: {', '.join(allowed)})")


@dataclass(frozen=True)
class ArmCounts:
    """One arm's counts in one tick."""

    units: int
    events: dict[str, int]
    buckets: dict[str, tuple[int, ...]]

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ArmCounts:
        _keys(d, ("units", "events", "buckets"), where)
        if "units" not in d:
            raise InputError(f"{where}.units is missing")
        units = _count(d["units"], f"{where}.units")
        ev, bk = d.get("events") or {}, d.get("buckets") or {}
        if not isinstance(ev, dict) or not isinstance(bk, dict):
            raise InputError(f"{where}: events and buckets must be objects")
        events = {str(m): _count(v, f"{where}.events.{m}") for m, v in ev.items()}
        for m, v in events.items():
            if v > units:
                raise InputError(f"{where}.events.{m} = {v} exceeds units = {units} (count units with at least one event)")
        buckets = {}
        for m, v in bk.items():
            if not isinstance(v, list) or not v:
                raise InputError(f"{where}.buckets.{m} must be a non-empty list of counts")
            buckets[str(m)] = _counts(v, f"{where}.buckets.{m}")
            if sum(buckets[str(m)]) > units:
                raise InputError(f"{where}.buckets.{m} sums to {sum(buckets[str(m)])}, more than units = {units}")
        return cls(units, events, buckets)

    def to_dict(self) -> dict[str, Any]:
        return {"units": self.units, "events": dict(self.events), "buckets": {m: list(v) for m, v in self.buckets.items()}}


@dataclass(frozen=True)
class SplitTick:
    """One aggregated tick: :meth:`from_dict` parses (and checks) the agreed format, :meth:`to_dict` writes it.

    >>> t = SplitTick.from_dict({"timestamp": "2026-12-07T10:00:00Z", "arms": {
    ...     "canary": {"units": 240, "events": {"errors": 3}}, "stable": {"units": 4810, "events": {"errors": 41}}}})
    >>> t.canary.events["errors"], t.to_dict()["timestamp"]
    (3, '2026-12-07T10:00:00Z')
    """

    timestamp: float
    canary: ArmCounts
    stable: ArmCounts
    tier: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "tick") -> SplitTick:
        _keys(d, ("timestamp", "arms", "tier"), where)
        if "timestamp" not in d:
            raise InputError(f"{where}.timestamp is missing")
        try:
            ts = _parse_time(d["timestamp"], 1)
        except InputError as exc:
            raise InputError(f"{where}.timestamp: {exc.message}") from None
        arms = d.get("arms")
        if not isinstance(arms, dict) or set(arms) != set(_ARMS):
            raise InputError(f"{where}.arms must hold exactly 'canary' and 'stable'")
        tier = d.get("tier")
        if tier is not None and not isinstance(tier, str):
            raise InputError(f"{where}.tier must be a string or null")
        return cls(ts, ArmCounts.from_dict(arms["canary"], f"{where}.arms.canary"), ArmCounts.from_dict(arms["stable"], f"{where}.arms.stable"), tier)

    def to_dict(self) -> dict[str, Any]:
        dt = datetime.fromtimestamp(self.timestamp, tz=timezone.utc)
        iso = dt.isoformat().replace("+00:00", "Z")
        return {"timestamp": iso, "arms": {"canary": self.canary.to_dict(), "stable": self.stable.to_dict()}, "tier": self.tier}


def read_split_ticks(path: str | Path) -> list[SplitTick]:
    """Read a JSONL file of split ticks (one object per line; errors name the line and field)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    out = []
    try:
        with p.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{p} line {i}: not valid JSON ({exc.msg})", row=i) from None
                except JSON_UNUSABLE as exc:
                    raise InputError(f"{p} line {i}: not usable JSON ({error_head(exc)})", row=i) from None
                out.append(SplitTick.from_dict(obj, f"{p} line {i}"))
    except UnicodeDecodeError:
        raise InputError(not_utf8_message(p)) from None
    if not out:
        raise InputError(f"{p}: no ticks")
    return out


def ticks_to_data(ticks: Iterable[SplitTick], specs: list[MetricSpec], *, where: str = "tick",
                  gaps: dict[str, list[tuple[int, str]]] | None = None) -> SplitData:
    """Blocks of the metrics from aggregated ticks (consecutive ticks with one timestamp: one tick, a block per tier).

    Timestamps must increase; a metric measured in one arm only is missing for that tick (both arms are
    needed to condition on the totals); metrics not in ``specs`` and bucket lists of the wrong length
    are errors (nothing accepted is dropped). ``gaps``, when given, receives per metric every
    ``(input object number, arm present)`` where the metric was in one arm only: those counts are not
    tested, and a source that omits zero counters (Prometheus for a counter never incremented) hides
    exactly the ticks where one arm had no events.
    """
    by_name = {s.name: s for s in specs}
    builders = {s.name: BlockBuilder(s.n_events) for s in specs}
    stamps: list[float] = []
    cu: list[int] = []
    un: list[int] = []
    tiers: set[str | None] = set()
    for i, tk in enumerate(ticks, start=1):
        for arm in (tk.canary, tk.stable):
            for m in (*arm.events, *arm.buckets):
                s = by_name.get(m)
                if s is None:
                    raise InputError(f"{where} {i}: metric {m!r} is not in the signals ({', '.join(by_name)})")
                if (m in arm.events) != (s.kind == "event"):
                    raise InputError(f"{where} {i}: metric {m!r} is {s.kind}: give it under {'events' if s.kind == 'event' else 'buckets'}")
                if s.kind == "continuous" and len(arm.buckets[m]) != len(s.edges) + 1:
                    raise InputError(f"{where} {i}: buckets.{m} has {len(arm.buckets[m])} counts, the metric's {len(s.edges)} edges make {len(s.edges) + 1}")
        if stamps and tk.timestamp == stamps[-1]:
            if tk.tier in tiers:
                raise InputError(f"{where} {i}: timestamp repeats with the same tier {tk.tier!r}")
        else:
            if stamps and tk.timestamp < stamps[-1]:
                raise InputError(f"{where} {i}: timestamps must increase")
            if stamps:
                for b in builders.values():
                    b.end_tick()
            stamps.append(tk.timestamp)
            cu.append(0)
            un.append(0)
            tiers = set()
        tiers.add(tk.tier)
        cu[-1] += tk.canary.units
        un[-1] += tk.canary.units + tk.stable.units
        for s in specs:
            _add(builders[s.name], s, tk)
            if gaps is not None:
                has = [s.name in (arm.events if s.kind == "event" else arm.buckets) for arm in (tk.canary, tk.stable)]
                if has[0] != has[1]:
                    gaps.setdefault(s.name, []).append((i, "canary" if has[0] else "stable"))
    for b in builders.values():
        b.end_tick()
    return SplitData(np.array(stamps), np.array(cu, dtype=np.int64), np.array(un, dtype=np.int64), {m: b.build() for m, b in builders.items()})


def _add(b: BlockBuilder, s: MetricSpec, tk: SplitTick) -> None:
    c, st = tk.canary, tk.stable
    if s.kind == "event":
        if s.name in c.events and s.name in st.events:
            a = c.events[s.name]
            b._add_owned(c.units, c.units + st.units, [a], [a + st.events[s.name]])  # noqa: SLF001 - fresh lists, never touched again
        return
    if s.name in c.buckets and s.name in st.buckets:
        bc, bs = c.buckets[s.name], st.buckets[s.name]
        # units above edge k: buckets k+1 .. B (exact integer sums; a few numpy calls per block cost more)
        ec = list(accumulate(reversed(bc)))[-2::-1]
        es = list(accumulate(reversed(bs)))[-2::-1]
        nc = sum(bc)
        b._add_owned(nc, nc + sum(bs), ec, [x + y for x, y in zip(ec, es)])  # noqa: SLF001 - fresh lists, never touched again
