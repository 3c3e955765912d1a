"""Fleet endpoints: the gate <-> fleet contract, live (``/v1/fleets``).

* ``POST /v1/fleets`` creates a fleet observation (topology, signals, observer settings);
* ``POST /v1/fleets/{fid}/ticks`` feeds ticks (all or nothing: a bad tick rejects the batch, 422 naming
  the tick and the shard); every tick is stored with the :class:`~deploysignal.fleet.FleetObservation`
  it gave (the fleet's record: ``GET /v1/fleets/{fid}/observations``, NDJSON that ``deploysignal ui
  --fleet`` reads);
* ``POST /v1/fleets/{fid}/events`` registers a :class:`~deploysignal.fleet.ClusterEvent` (freeze hook), recorded
  with the name of the token that sent it; ``DELETE /v1/fleets/{fid}/events/{event_id}`` ends one before the
  fleet's next tick;
* ``GET /v1/fleets/{fid}`` answers the last observation: shard flags, alarms across levels (shards,
  hosts, racks: FDR <= q together; docs/fleet.md), frozen shards and the events in force.

A deploy is linked to the fleet by ``fleet`` in ``POST /v1/analyses`` (:class:`FleetScope`): creating
the analysis registers a ``deploy`` event scoped to the deploy's shards / hosts / racks, starting at the
fleet's next tick, so its shards bet nothing (and are not alarmed as faults) while the deploy runs; the
fleet's observations name the event in ``active_events`` and the shards in ``frozen``. The scope is
checked against the fleet's topology before the analysis is created (a node the fleet does not have is
a 422, not a freeze of nothing; so is a freeze that would cover more than the fleet's
``max_freeze_fraction``). The freeze ends before the fleet's next tick once the analysis has a final
verdict or is deleted (checked at every write to the fleet), at the latest after ``window`` ticks.

A freeze silences evidence in its scope, so fleet endpoints and the ``fleet`` field need an unscoped
token (as records not tied to one analysis do). Events cannot be back-dated (``start_tick`` >= the
fleet's tick count): bets are frozen before the tick's values are seen, which is what keeps the shard
processes valid. The observer is rebuilt from the stored ticks and events when it is not in memory
(deterministic: the same observations).
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from .._exceptions import InputError
from ..fleet import ClusterEvent, FleetObserver, ObserverSettings, Shard, TopologySnapshot, curate_baseline
from ..store import FleetTables, LockedFleet, NotFound, SQLStore
from ._admission import Busy
from ._scope import OutOfScope, Principal

__all__ = ["FleetCreate", "FleetRegistry", "FleetScope", "FleetTicks", "fleet_router"]

FLEET_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NODE = r"^[^\x00-\x1f]{1,256}$"
#: largest magnitude of a fleet value: residuals are differences of values, and beyond this they overflow
_MAX_ABS = 1e150
#: most (shard, signal) pairs of one fleet observation (its state is ~ 100 bytes a pair, per level)
_MAX_CELLS = 1_000_000
#: fewest shards reporting a signal in a tick (the reference is their median and MAD)
_MIN_REPORTING = 3
#: most events in force (registered and not over) per fleet: a further one is a 422
MAX_EVENTS = 1_000
#: most ticks a write replays inside the fleet's write lock (the rest is replayed before, in a read transaction)
LOCKED_REPLAY = 16
_CATCH_UP_ROUNDS = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardIn(_Strict):
    """One shard and its topology nodes (missing levels: unknown)."""

    shard_id: str = Field(pattern=_NODE)
    host: str | None = Field(None, pattern=_NODE)
    nvlink: str | None = Field(None, pattern=_NODE)
    rack: str | None = Field(None, pattern=_NODE)
    switch: str | None = Field(None, pattern=_NODE)
    zone: str | None = Field(None, pattern=_NODE)


class FleetCreate(_Strict):
    """A fleet observation: its shards (rows of every tick, in this order), signals and observer settings."""

    id: str | None = Field(None, pattern=FLEET_ID)
    shards: list[ShardIn] = Field(min_length=3, max_length=100_000)
    signals: list[Annotated[str, Field(pattern=_NODE)]] = Field(min_length=1, max_length=256)
    directions: list[Literal["up", "down", "both"]] | None = Field(None, description="per signal (default: both)")
    q: float = Field(0.05, gt=0, lt=1, description="FDR level of shard flags and of the alarms across levels")
    max_faulty_fraction: float = Field(0.10, ge=0, lt=0.5)
    alarm_levels: list[Literal["host", "nvlink", "rack", "switch", "zone"]] = Field(["host", "rack"])
    baseline_loc: list[float] | None = Field(None, description="fleet-level alarm: baseline location of the fleet median per signal")
    baseline_scale: list[float] | None = Field(None, description="fleet-level alarm: its robust scale per signal (> 0)")
    max_freeze_fraction: float = Field(0.5, gt=0, le=1, description="largest share of the fleet's shards deploy freezes may cover at "
                                       "once (a deploy freeze beyond it is refused with a 422)")
    baseline_ticks: list[dict[str, list[float | None]]] | None = Field(
        None, max_length=10_000, description="healthy baseline ticks (the format of POST .../ticks): curated as `fleet observe --baseline` "
        "does (AR(1) prewhitening, per-shard centre/scale and their tolerance, the fleet-level load model); without them the "
        "observer is the no-baseline variant (docs/fleet.md)")


class FleetTicks(_Strict):
    """Ticks in order: per tick, values per shard id (one number or null per signal); a shard left out is missing."""

    ticks: list[dict[str, list[float | None]]] = Field(min_length=1, max_length=10_000)


class FleetScope(_Strict):
    """The fleet shards a deploy touches: frozen for ``window`` fleet ticks from the fleet's next tick."""

    fleet: str = Field(pattern=FLEET_ID)
    scope_level: Literal["shard", "host", "nvlink", "rack", "switch", "zone"]
    scope: list[Annotated[str, Field(pattern=_NODE)]] = Field(min_length=1, max_length=100_000)
    window: StrictInt = Field(ge=1, le=1_000_000, description="how many fleet ticks the deploy's freeze lasts")


def _parse_ticks(ticks: list[dict[str, list[float | None]]], topo: TopologySnapshot, signals: list[str], what: str = "tick") -> list[np.ndarray]:
    """Ticks as (n_shards, n_signals) arrays (NaN = missing); 422 naming the tick and the shard or signal."""
    index, k = topo.index, len(signals)
    arrays = []
    for n, tick in enumerate(ticks):
        x = np.full((len(index), k), np.nan)
        for sid, vals in tick.items():
            if sid not in index:
                raise InputError(f"{what} {n}: unknown shard {sid!r}", row=n, column=sid)
            if len(vals) != k:
                raise InputError(f"{what} {n}: shard {sid!r} has {len(vals)} values for {k} signals", row=n, column=sid)
            for j, v in enumerate(vals):
                if v is not None and not (math.isfinite(v) and abs(v) <= _MAX_ABS):
                    raise InputError(f"{what} {n}: shard {sid!r}, signal {signals[j]!r}: not a finite number within "
                                     f"+-{_MAX_ABS:g} (differences of larger values overflow)", row=n, column=sid)
            x[index[sid]] = [math.nan if v is None else v for v in vals]
        reporting = (~np.isnan(x)).sum(axis=0)
        if reporting.min() < _MIN_REPORTING:
            j = int(np.argmin(reporting))
            raise InputError(f"{what} {n}: signal {signals[j]!r} reported by {int(reporting[j])} shard(s); a tick needs at least "
                             f"{_MIN_REPORTING} per signal (the fleet reference is their median)", row=n, column=signals[j])
        arrays.append(x)
    return arrays


def _settings(spec: dict[str, Any]) -> ObserverSettings:
    return ObserverSettings(q=spec["q"], max_faulty_fraction=spec["max_faulty_fraction"], alarm_levels=tuple(spec["alarm_levels"]))


def _build(spec: dict[str, Any]) -> FleetObserver:
    topo = TopologySnapshot(tuple(Shard(**s) for s in spec["shards"]))
    kw: dict[str, Any] = {}
    if spec.get("baseline_loc") is not None:
        kw = {"baseline_loc": np.asarray(spec["baseline_loc"], float), "baseline_scale": np.asarray(spec["baseline_scale"], float)}
    if spec.get("baseline_ticks"):
        rep = curate_baseline(np.stack(_parse_ticks(spec["baseline_ticks"], topo, spec["signals"], "baseline tick")))
        if rep.status == "halt":
            raise InputError(f"baseline_ticks: {rep.drop_rate:.1%} of them would be dropped by the curation (>= 15%): review them with "
                             "`deploysignal fleet curate-baseline` and send the kept ticks", column="baseline_ticks")
        kw = {"baseline_loc": rep.baseline_loc, "baseline_scale": rep.baseline_scale, "phi": rep.phi, "center": rep.center,
              "scale": rep.scale, "center_se": rep.center_se, "common_mode": rep.common_mode}
    return FleetObserver(topo, len(spec["signals"]), directions=spec["directions"], settings=_settings(spec), **kw)


class _Live:
    """One fleet's observer in memory, the store rows it has seen, and the lock its writes take."""

    def __init__(self, spec: dict[str, Any], observer: FleetObserver) -> None:
        self.spec, self.observer = spec, observer
        self.n_ticks = self.n_events = 0
        self.last: str | None = None
        self.principals: dict[int, str] = {}  # event seq -> token that registered it
        self.analyses: dict[int, str] = {}  # event seq -> analysis whose deploy it freezes
        self.lock = threading.Lock()

    def catch_up(self, ticks: list[str], events: list[tuple[int, int, dict[str, Any]]]) -> None:
        """Replay stored rows after the ones seen (ticks from ``n_ticks``, event rows from ``n_events``, each
        event before the tick it was registered at), on a copy: a failure leaves this state as it was."""
        if not ticks and not events:
            return
        obs, last = self.observer.copy(), self.last
        principals, analyses = dict(self.principals), dict(self.analyses)
        pending = list(events)
        for t, payload in enumerate(ticks, start=self.n_ticks):
            while pending and pending[0][1] <= t:
                _apply_event_row(obs, pending.pop(0), principals, analyses)
            last = obs.update(np.asarray(json.loads(payload), dtype=float)).model_dump_json()
        for row in pending:
            _apply_event_row(obs, row, principals, analyses)
        self.observer, self.last, self.principals, self.analyses = obs, last, principals, analyses
        self.n_ticks += len(ticks)
        self.n_events += len(events)


def _apply_event_row(obs: FleetObserver, row: tuple[int, int, dict[str, Any]], principals: dict[int, str], analyses: dict[int, str]) -> None:
    """Apply one stored event row (store/_fleet.py: an added event, or the end of one) to ``obs``."""
    seq, at_tick, body = row
    if body.get("op") == "end":
        obs.end_event(int(body["seq"]), at_tick)
        return
    obs.add_event(body.get("event", body), key=seq)
    principals[seq] = str(body.get("principal", ""))
    if body.get("analysis"):
        analyses[seq] = str(body["analysis"])


class FleetRegistry:
    """The service's fleet observers: stored in :class:`~deploysignal.store.FleetTables`, cached in memory.

    Every write (ticks, an event, the end of one) takes the fleet's in-process lock, replays the ticks and event
    rows other processes stored since the cache was built in a read transaction, then takes the fleet's row lock
    in the store (:meth:`FleetTables.locked`) and replays only what arrived meanwhile (at most
    :data:`LOCKED_REPLAY` ticks), checks against the *stored* counts, and evaluates a batch on a copy of the observer that
    replaces the cached one only once the batch is committed. Reads catch up the same way, in one read
    transaction. So several processes (``--workers N``, or several services on one store) keep one history.
    """

    def __init__(self, store: SQLStore, is_over: Callable[[str], str | None] | None = None) -> None:
        self.tables = FleetTables(store)
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        # analysis id -> why its deploy freeze is over (final verdict, deleted), None while it runs
        self._is_over = is_over or (lambda aid: None)

    # ------------------------------------------------------------------ create / load
    def create(self, body: FleetCreate, created: str) -> dict[str, Any]:
        fid = body.id or "fleet-" + secrets.token_hex(6)
        spec = body.model_dump(exclude={"id"})
        k = len(spec["signals"])
        if len(set(spec["signals"])) != k:
            raise InputError("signal names must be distinct", column="signals")
        spec["directions"] = spec["directions"] or ["both"] * k
        if len(spec["directions"]) != k:
            raise InputError(f"directions: {len(spec['directions'])} given for {k} signals", column="directions")
        if (spec["baseline_loc"] is None) != (spec["baseline_scale"] is None):
            raise InputError("give both baseline_loc and baseline_scale, or neither", column="baseline_scale")
        for name in ("baseline_loc", "baseline_scale"):
            v = spec[name]
            lo = 1.0 / _MAX_ABS if name == "baseline_scale" else -_MAX_ABS
            if v is not None and (len(v) != k or not all(math.isfinite(x) and lo <= x <= _MAX_ABS for x in v)):
                raise InputError(f"{name} needs {k} finite numbers (one per signal) in [{lo:g}, {_MAX_ABS:g}]", column=name)
        if spec["baseline_ticks"] is not None and spec["baseline_loc"] is not None:
            raise InputError("give baseline_ticks (the curated baseline gives the fleet reference) or baseline_loc/baseline_scale, not both",
                             column="baseline_ticks")
        if spec["baseline_ticks"] is not None and len(spec["baseline_ticks"]) * len(spec["shards"]) * k > 20 * _MAX_CELLS:
            raise InputError(f"baseline_ticks: at most {20 * _MAX_CELLS:,} values (ticks x shards x signals)", column="baseline_ticks")
        if len(spec["shards"]) * k > _MAX_CELLS:
            raise InputError(f"{len(spec['shards'])} shards x {k} signals: at most {_MAX_CELLS:,} (shard, signal) pairs per fleet observation "
                             "(the observer keeps a bet state per pair)", column="shards")
        obs = _build(spec)  # validates the topology (duplicate shard ids) and the settings
        self.tables.create(fid, spec, created)
        with self._lock:
            self._live[fid] = _Live(spec, obs)
        fleet_level = "load model" if obs._common is not None else "stationary median" if obs._fleet_on else "off"
        return {"id": fid, "shards": len(spec["shards"]), "signals": spec["signals"], "directions": spec["directions"],
                "hierarchy_nodes": len(obs._nodes.nodes), "baseline": "curated" if spec["baseline_ticks"] else "none",
                "fleet_level": fleet_level}

    def _get(self, fid: str) -> _Live:
        with self._lock:
            live = self._live.get(fid)
        if live is not None:
            return live
        spec, _, _ = self.tables.get(fid)  # NotFound: 404
        live = _Live(spec, _build(spec))
        with live.lock:
            self._read_up(fid, live)
        with self._lock:
            self._live.setdefault(fid, live)
            return self._live[fid]

    def _read_up(self, fid: str, live: _Live) -> None:
        """Catch ``live`` up with the store in one read transaction (``live.lock`` held)."""
        ticks, events = self.tables.since(fid, live.n_ticks, live.n_events)
        live.catch_up(ticks, events)

    @contextmanager
    def _locked_caught_up(self, fid: str, live: _Live) -> Iterator[LockedFleet]:
        """The fleet's write lock, with ``live`` caught up (``live.lock`` held).

        The ticks other processes stored since ``live`` was built are replayed first in a read transaction, outside
        the write lock, which is then taken; only what arrived meanwhile is replayed under it, at most
        :data:`LOCKED_REPLAY` ticks (another read round otherwise, :data:`_CATCH_UP_ROUNDS` at most, then 503).
        A stale worker (its cache built thousands of ticks ago) so never stalls the store's other writers."""
        for _ in range(_CATCH_UP_ROUNDS):
            self._read_up(fid, live)
            with self.tables.locked(fid) as lf:
                if lf.n_ticks - live.n_ticks <= LOCKED_REPLAY:
                    live.catch_up(lf.ticks(live.n_ticks), lf.events(live.n_events))
                    yield lf
                    return
        raise Busy(f"fleet {fid!r} receives ticks faster than this worker catches up with them; retry", retry_after=1)

    def _end_finished(self, fid: str, live: _Live, principal: str) -> None:
        """End the freezes of deploys whose analysis has a final verdict or is deleted (at the fleet's next tick)."""
        over = {}
        for seq, ev in live.observer.events:
            aid = live.analyses.get(seq)  # type: ignore[arg-type]
            if aid is not None and ev.start_tick + ev.window > live.n_ticks:
                why = self._is_over(aid)
                if why is not None:
                    over[seq] = why
        for seq, why in over.items():
            self._end(fid, live, seq, f"{principal} ({why})", quiet=True)

    # ------------------------------------------------------------------ ticks
    def ingest(self, fid: str, body: FleetTicks, principal: str = "") -> dict[str, Any]:
        """Apply a batch, all or nothing; returns the last observation and the ticks' new alarms."""
        live = self._get(fid)
        arrays = _parse_ticks(body.ticks, live.observer.topology, live.spec["signals"])
        with live.lock:
            self._read_up(fid, live)  # freezes other processes registered are seen (and ended) at this write, not the next
            self._end_finished(fid, live, "deploysignal")
            with self._locked_caught_up(fid, live) as lf:
                work = live.observer.copy()  # the batch runs on a copy: the cache moves only once the batch is stored
                rows, new_alarms, new_flags = [], [], []
                for x in arrays:
                    obs = work.update(x)
                    rows.append((json.dumps([[None if math.isnan(v) else v for v in r] for r in x.tolist()]), obs.model_dump_json()))
                    new_alarms += list(obs.newly_alarmed)
                    new_flags += list(obs.newly_flagged)
                first = live.n_ticks
                lf.append(first, live.n_events, rows)
            live.observer, live.n_ticks, live.last = work, first + len(rows), rows[-1][1]
            last = live.last
        return {"id": fid, "accepted": len(rows), "first_tick": first, "n_ticks": first + len(rows), "newly_alarmed": new_alarms,
                "newly_flagged": new_flags, "observation": json.loads(last)}

    # ------------------------------------------------------------------ events
    def check_scope(self, scope: FleetScope) -> None:
        """422 when the fleet lacks a node of the scope or the deploy would freeze too much of it; 404 when there is
        no such fleet."""
        live = self._get(scope.fleet)
        with live.lock:
            self._read_up(scope.fleet, live)
            self._check_freeze_share(live, scope.fleet, ClusterEvent(kind="deploy", start_tick=live.n_ticks, window=scope.window,
                                                                     scope_level=scope.scope_level, scope=tuple(scope.scope)))

    @staticmethod
    def _scope_mask(live: _Live, fid: str, level: str, scope: Sequence[str]) -> np.ndarray:
        topo = live.observer.topology
        if level == "fleet":
            return np.ones(len(topo), dtype=bool)
        known = set(topo.ids) if level == "shard" else set(topo.nodes(level))
        missing = [n for n in scope if n not in known]
        if missing:
            raise InputError(f"fleet {fid!r} has no {level} {missing[0]!r}", column="fleet.scope")
        want = set(scope) if level == "shard" else {s for n in scope for s in topo.members(level, n)}
        return np.fromiter((sid in want for sid in topo.ids), bool, len(topo))

    def _check_freeze_share(self, live: _Live, fid: str, event: ClusterEvent) -> None:
        """422 when a deploy's freeze, with the shards other events in force freeze, would cover more than
        ``max_freeze_fraction`` of the fleet."""
        cap = live.spec.get("max_freeze_fraction", 0.5)
        own = self._scope_mask(live, fid, event.scope_level, event.scope)
        mask = own | live.observer.frozen_over(event.start_tick, event.start_tick + event.window)
        n = len(mask)
        if mask.sum() > cap * n:
            raise InputError(f"this deploy would freeze {int(own.sum())} of the fleet's {n} "
                             f"shards; with the freezes in force {int(mask.sum())}, more than max_freeze_fraction = {cap:g} of the fleet "
                             "(a deploy that large is not a canary of this fleet: split it, or raise max_freeze_fraction when creating "
                             "the fleet; docs/fleet.md)", column="fleet.scope")

    def add_event(self, fid: str, event: ClusterEvent | Callable[[int], ClusterEvent], principal: str = "",
                  analysis: str | None = None) -> dict[str, Any]:
        """Register ``event`` (or ``event(n_ticks)``, built under the fleet's lock from the *stored* tick count, so
        that it starts at the fleet's next tick whatever ticks other requests or processes stored meanwhile)."""
        live = self._get(fid)
        with live.lock:
            self._read_up(fid, live)  # freezes other processes registered are seen (and ended) at this write, not the next
            self._end_finished(fid, live, "deploysignal")
            with self._locked_caught_up(fid, live) as lf:
                if not isinstance(event, ClusterEvent):
                    event = event(lf.n_ticks)
                self._scope_mask(live, fid, event.scope_level, event.scope)  # 422 for a node the fleet lacks
                if event.start_tick < lf.n_ticks:
                    raise InputError(f"start_tick {event.start_tick} is in the past: the fleet has {lf.n_ticks} ticks (a freeze cannot be back-dated)",
                                     column="start_tick")
                if event.kind == "deploy":
                    self._check_freeze_share(live, fid, event)
                left = int((~(self._scope_mask(live, fid, event.scope_level, event.scope)
                              | live.observer.frozen_over(event.start_tick, event.start_tick + event.window))).sum())
                if 0 < left < _MIN_REPORTING:
                    raise InputError(f"with this event and the freezes in force only {left} shard(s) of the fleet stay unfrozen; the "
                                     f"reference needs at least {_MIN_REPORTING} (or freeze the whole fleet)", column="scope")
                in_force = sum(ev.start_tick + ev.window > lf.n_ticks for _, ev in live.observer.events)
                if in_force >= MAX_EVENTS:
                    raise InputError(f"fleet {fid!r} has {in_force} events in force, at most {MAX_EVENTS} (end some: DELETE "
                                     "/v1/fleets/{fid}/events/{event_id}, or wait for their windows to run out)", column="start_tick")
                body = {"op": "add", "event": event.model_dump(mode="json"), "principal": principal, **({"analysis": analysis} if analysis else {})}
                at, seq = lf.n_ticks, lf.add_event(body)
            live.catch_up([], [(seq, at, body)])
        return {"id": fid, "event_id": seq, "event": event.model_dump(mode="json"), "principal": principal, "registered_at_tick": at}

    def end_event(self, fid: str, seq: int, principal: str) -> dict[str, Any]:
        """End event ``seq`` before the fleet's next tick (404: no such event in force)."""
        live = self._get(fid)
        with live.lock:
            return self._end(fid, live, seq, principal)

    def _end(self, fid: str, live: _Live, seq: int, principal: str, quiet: bool = False) -> dict[str, Any]:
        with self._locked_caught_up(fid, live) as lf:
            ev = dict(live.observer.events).get(seq)
            if ev is None or ev.start_tick + ev.window <= lf.n_ticks:
                if quiet:
                    return {}
                raise NotFound(f"fleet {fid!r} has no event {seq} in force (over, ended, or never registered)")
            body = {"op": "end", "seq": seq, "principal": principal}
            at, row = lf.n_ticks, lf.add_event(body)
        live.catch_up([], [(row, at, body)])
        return {"id": fid, "event_id": seq, "ended_before_tick": at, "principal": principal}

    def freeze_for_deploy(self, scope: FleetScope, analysis_id: str, principal: str = "") -> dict[str, Any]:
        """Register the ``deploy`` event of an analysis: its scope frozen from the fleet's next tick, until its
        window runs out, the analysis reaches a final verdict or is deleted (whichever comes first)."""
        return self.add_event(scope.fleet, lambda n: ClusterEvent(
            kind="deploy", start_tick=n, window=scope.window, scope_level=scope.scope_level, scope=tuple(scope.scope),
            source=f"analysis:{analysis_id}", note="deploy gate: analysis created through the service"), principal, analysis_id)

    def state(self, fid: str) -> dict[str, Any]:
        live = self._get(fid)
        with live.lock:
            self._read_up(fid, live)
            last = None if live.last is None else json.loads(live.last)
            return {"id": fid, "n_ticks": live.n_ticks, "shards": len(live.spec["shards"]), "signals": live.spec["signals"],
                    "q": live.spec["q"], "alarm_levels": live.spec["alarm_levels"], "observation": last,
                    # events registered and not yet over (a freeze starting at the next tick shows here first)
                    "events": [{**e.model_dump(mode="json"), "event_id": k, "principal": live.principals.get(k, ""),  # type: ignore[call-overload]
                                **({"analysis": live.analyses[k]} if k in live.analyses else {})}  # type: ignore[index]
                               for k, e in live.observer.events if e.start_tick + e.window > live.n_ticks]}


def _unscoped(p: Principal) -> None:
    if p.scoped:
        raise OutOfScope(f"token {p.name!r} is scoped to {p.describe()}: fleet observations (and freezes) need an unscoped token")


def fleet_router(registry: FleetRegistry, read: list[Any], write: list[Any], now: Callable[[], str]) -> APIRouter:
    """Routes under ``/v1/fleets`` (module docstring)."""
    router = APIRouter(tags=["fleet"])

    @router.post("/v1/fleets", status_code=201, dependencies=write)
    def create_fleet(body: FleetCreate, request: Request) -> dict[str, Any]:
        """Create a fleet observation (409 if the id is taken)."""
        _unscoped(request.state.principal)
        return registry.create(body, now())

    @router.get("/v1/fleets", dependencies=read)
    def list_fleets(request: Request) -> list[dict[str, Any]]:
        """The fleet observations (id, created)."""
        _unscoped(request.state.principal)
        return [{"id": i, "created": c} for i, c in registry.tables.list()]

    @router.get("/v1/fleets/{fid}", dependencies=read)
    def get_fleet(fid: str, request: Request) -> dict[str, Any]:
        """The last observation: flags, alarms across levels, frozen shards, events in force."""
        _unscoped(request.state.principal)
        return registry.state(fid)

    @router.post("/v1/fleets/{fid}/ticks", dependencies=write)
    def post_ticks(fid: str, body: FleetTicks, request: Request) -> dict[str, Any]:
        """Feed ticks (all or nothing; 422 naming the tick and the shard)."""
        _unscoped(request.state.principal)
        return registry.ingest(fid, body, request.state.principal.name)

    @router.post("/v1/fleets/{fid}/events", status_code=201, dependencies=write)
    def post_event(fid: str, body: ClusterEvent, request: Request) -> dict[str, Any]:
        """Register a cluster event (freeze hook); ``start_tick`` >= the fleet's tick count. The token's name is
        recorded with it; a ``deploy`` event is refused beyond ``max_freeze_fraction``."""
        _unscoped(request.state.principal)
        return registry.add_event(fid, body, request.state.principal.name)

    @router.delete("/v1/fleets/{fid}/events/{event_id}", dependencies=write)
    def delete_event(fid: str, event_id: Annotated[int, Path(ge=0, le=2**62)], request: Request) -> dict[str, Any]:
        """End an event in force before the fleet's next tick (the event and its end stay in the fleet's record,
        with the tokens that registered and ended it); 404 when no such event is in force."""
        _unscoped(request.state.principal)
        return registry.end_event(fid, event_id, request.state.principal.name)

    @router.get("/v1/fleets/{fid}/observations", dependencies=read)
    def observations(fid: str, request: Request, start: Annotated[int, Query(ge=0, le=2**62)] = 0,
                     limit: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> Response:
        """The stored observations from tick ``start`` (NDJSON; ``deploysignal ui --fleet`` reads them)."""
        _unscoped(request.state.principal)
        registry.tables.get(fid)
        lines = registry.tables.observations(fid, start, limit)
        return Response("".join(ln + "\n" for ln in lines), media_type="application/x-ndjson")

    return router
