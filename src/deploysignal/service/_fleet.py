"""Fleet endpoints: the gate <-> fleet contract, live (``/v1/fleets``).

* ``POST /v1/fleets`` creates a fleet observation (topology, signals, observer settings);
* ``POST /v1/fleets/{fid}/ticks`` feeds ticks (all or nothing: a bad tick rejects the batch, 422 naming
  the tick and the shard); every tick is stored with the :class:`~deploysignal.fleet.FleetObservation`
  it gave (the fleet's record: ``GET /v1/fleets/{fid}/observations``, NDJSON that ``deploysignal ui
  --fleet`` reads);
* ``POST /v1/fleets/{fid}/events`` registers a :class:`~deploysignal.fleet.ClusterEvent` (freeze hook);
* ``GET /v1/fleets/{fid}`` answers the last observation: shard flags, alarms across levels (shards,
  hosts, racks: FDR <= q together; docs/fleet.md), frozen shards and the events in force.

A deploy is linked to the fleet by ``fleet`` in ``POST /v1/analyses`` (:class:`FleetScope`): creating
the analysis registers a ``deploy`` event scoped to the deploy's shards / hosts / racks, starting at the
fleet's next tick, so its shards bet nothing (and are not alarmed as faults) while the deploy runs; the
fleet's observations name the event in ``active_events`` and the shards in ``frozen``. The scope is
checked against the fleet's topology before the analysis is created (a node the fleet does not have is
a 422, not a freeze of nothing).

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
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from .._exceptions import InputError
from ..fleet import LEVELS, ClusterEvent, FleetObserver, ObserverSettings, Shard, TopologySnapshot
from ..store import FleetTables, SQLStore
from ._scope import OutOfScope, Principal

__all__ = ["FleetCreate", "FleetRegistry", "FleetScope", "FleetTicks", "fleet_router"]

FLEET_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NODE = r"^[^\x00-\x1f]{1,256}$"
#: largest magnitude of a fleet value: residuals are differences of values, and beyond this they overflow
_MAX_ABS = 1e150
#: most (shard, signal) pairs of one fleet observation (its state is ~ 100 bytes a pair, per level)
_MAX_CELLS = 1_000_000


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


class FleetTicks(_Strict):
    """Ticks in order: per tick, values per shard id (one number or null per signal); a shard left out is missing."""

    ticks: list[dict[str, list[float | None]]] = Field(min_length=1, max_length=10_000)


class FleetScope(_Strict):
    """The fleet shards a deploy touches: frozen for ``window`` fleet ticks from the fleet's next tick."""

    fleet: str = Field(pattern=FLEET_ID)
    scope_level: Literal["shard", "host", "nvlink", "rack", "switch", "zone"]
    scope: list[Annotated[str, Field(pattern=_NODE)]] = Field(min_length=1, max_length=100_000)
    window: StrictInt = Field(ge=1, le=1_000_000, description="how many fleet ticks the deploy's freeze lasts")


def _settings(spec: dict[str, Any]) -> ObserverSettings:
    return ObserverSettings(q=spec["q"], max_faulty_fraction=spec["max_faulty_fraction"], alarm_levels=tuple(spec["alarm_levels"]))


def _build(spec: dict[str, Any]) -> FleetObserver:
    topo = TopologySnapshot(tuple(Shard(**s) for s in spec["shards"]))
    kw: dict[str, Any] = {}
    if spec.get("baseline_loc") is not None:
        kw = {"baseline_loc": np.asarray(spec["baseline_loc"], float), "baseline_scale": np.asarray(spec["baseline_scale"], float)}
    return FleetObserver(topo, len(spec["signals"]), directions=spec["directions"], settings=_settings(spec), **kw)


class _Live:
    """One fleet's observer in memory, with the lock its writes take."""

    def __init__(self, spec: dict[str, Any], observer: FleetObserver, n_ticks: int, last: str | None) -> None:
        self.spec, self.observer, self.n_ticks, self.last = spec, observer, n_ticks, last
        self.lock = threading.Lock()


class FleetRegistry:
    """The service's fleet observers: stored in :class:`~deploysignal.store.FleetTables`, cached in memory."""

    def __init__(self, store: SQLStore) -> None:
        self.tables = FleetTables(store)
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()

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
        if len(spec["shards"]) * k > _MAX_CELLS:
            raise InputError(f"{len(spec['shards'])} shards x {k} signals: at most {_MAX_CELLS:,} (shard, signal) pairs per fleet observation "
                             "(the observer keeps a bet state per pair)", column="shards")
        obs = _build(spec)  # validates the topology (duplicate shard ids) and the settings
        self.tables.create(fid, spec, created)
        with self._lock:
            self._live[fid] = _Live(spec, obs, 0, None)
        return {"id": fid, "shards": len(spec["shards"]), "signals": spec["signals"], "directions": spec["directions"],
                "hierarchy_nodes": len(obs._nodes.nodes)}

    def _get(self, fid: str) -> _Live:
        with self._lock:
            live = self._live.get(fid)
        if live is not None:
            return live
        spec, _, _ = self.tables.get(fid)  # NotFound: 404
        ticks, events = self.tables.history(fid)
        obs = _build(spec)
        pending = list(events)
        last = None
        for t, payload in enumerate(ticks):
            while pending and pending[0][0] <= t:
                obs.add_event(pending.pop(0)[1])
            last = obs.update(np.asarray(json.loads(payload), dtype=float)).model_dump_json()
        for _, ev in pending:
            obs.add_event(ev)
        live = _Live(spec, obs, len(ticks), last)
        with self._lock:
            self._live.setdefault(fid, live)
            return self._live[fid]

    def _evict(self, fid: str) -> None:
        with self._lock:
            self._live.pop(fid, None)

    # ------------------------------------------------------------------ ticks
    def ingest(self, fid: str, body: FleetTicks) -> dict[str, Any]:
        """Apply a batch, all or nothing; returns the last observation and the ticks' new alarms."""
        live = self._get(fid)
        with live.lock:
            index = live.observer.topology.index
            k = len(live.spec["signals"])
            arrays = []
            for n, tick in enumerate(body.ticks):
                x = np.full((len(index), k), np.nan)
                for sid, vals in tick.items():
                    if sid not in index:
                        raise InputError(f"tick {n}: unknown shard {sid!r}", row=n, column=sid)
                    if len(vals) != k:
                        raise InputError(f"tick {n}: shard {sid!r} has {len(vals)} values for {k} signals", row=n, column=sid)
                    for j, v in enumerate(vals):
                        if v is not None and not (math.isfinite(v) and abs(v) <= _MAX_ABS):
                            raise InputError(f"tick {n}: shard {sid!r}, signal {live.spec['signals'][j]!r}: not a finite number within "
                                             f"+-{_MAX_ABS:g} (differences of larger values overflow)", row=n, column=sid)
                    x[index[sid]] = [math.nan if v is None else v for v in vals]
                arrays.append(x)
            first = live.n_ticks
            rows, new_alarms, new_flags, obs = [], [], [], None
            try:
                for x in arrays:
                    obs = live.observer.update(x)
                    rows.append((json.dumps([[None if math.isnan(v) else v for v in r] for r in x.tolist()]), obs.model_dump_json()))
                    new_alarms += list(obs.newly_alarmed)
                    new_flags += list(obs.newly_flagged)
                self.tables.append(fid, first, rows)
            except Exception:
                self._evict(fid)  # the observer ran ahead of the store: rebuilt from the store on next use
                raise
            live.n_ticks = first + len(rows)
            live.last = rows[-1][1]
        assert obs is not None
        return {"id": fid, "accepted": len(rows), "first_tick": first, "n_ticks": live.n_ticks, "newly_alarmed": new_alarms,
                "newly_flagged": new_flags, "observation": json.loads(live.last)}

    # ------------------------------------------------------------------ events
    def check_scope(self, scope: FleetScope) -> None:
        """422 when the fleet lacks a node of the scope; 404 when there is no such fleet."""
        live = self._get(scope.fleet)
        topo = live.observer.topology
        known = set(topo.ids) if scope.scope_level == "shard" else set(topo.nodes(scope.scope_level))
        missing = [n for n in scope.scope if n not in known]
        if missing:
            raise InputError(f"fleet {scope.fleet!r} has no {scope.scope_level} {missing[0]!r}", column="fleet.scope")

    def add_event(self, fid: str, event: ClusterEvent | Callable[[int], ClusterEvent]) -> dict[str, Any]:
        """Register ``event`` (or ``event(n_ticks)``, built under the fleet's lock, so that it can start at the
        fleet's next tick whatever ticks arrive meanwhile)."""
        live = self._get(fid)
        with live.lock:
            if not isinstance(event, ClusterEvent):
                event = event(live.n_ticks)
            if event.scope_level in LEVELS or event.scope_level == "shard":
                self.check_scope(FleetScope(fleet=fid, scope_level=event.scope_level, scope=list(event.scope), window=event.window))
            if event.start_tick < live.n_ticks:
                raise InputError(f"start_tick {event.start_tick} is in the past: the fleet has {live.n_ticks} ticks (a freeze cannot be back-dated)",
                                 column="start_tick")
            self.tables.add_event(fid, live.n_ticks, event.model_dump(mode="json"))
            live.observer.add_event(event)
        return {"id": fid, "event": event.model_dump(mode="json"), "registered_at_tick": live.n_ticks}

    def freeze_for_deploy(self, scope: FleetScope, analysis_id: str) -> dict[str, Any]:
        """Register the ``deploy`` event of an analysis: its scope frozen from the fleet's next tick."""
        return self.add_event(scope.fleet, lambda n: ClusterEvent(
            kind="deploy", start_tick=n, window=scope.window, scope_level=scope.scope_level, scope=tuple(scope.scope),
            source=f"analysis:{analysis_id}", note="deploy gate: analysis created through the service"))

    def state(self, fid: str) -> dict[str, Any]:
        live = self._get(fid)
        with live.lock:
            last = None if live.last is None else json.loads(live.last)
            return {"id": fid, "n_ticks": live.n_ticks, "shards": len(live.spec["shards"]), "signals": live.spec["signals"],
                    "q": live.spec["q"], "alarm_levels": live.spec["alarm_levels"], "observation": last,
                    # events registered and not yet over (a freeze starting at the next tick shows here first)
                    "events": [e.model_dump(mode="json") for e in live.observer._events if e.start_tick + e.window > live.n_ticks]}


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
        return registry.ingest(fid, body)

    @router.post("/v1/fleets/{fid}/events", status_code=201, dependencies=write)
    def post_event(fid: str, body: ClusterEvent, request: Request) -> dict[str, Any]:
        """Register a cluster event (freeze hook); ``start_tick`` >= the fleet's tick count."""
        _unscoped(request.state.principal)
        return registry.add_event(fid, body)

    @router.get("/v1/fleets/{fid}/observations", dependencies=read)
    def observations(fid: str, request: Request, start: Annotated[int, Query(ge=0, le=2**62)] = 0,
                     limit: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> Response:
        """The stored observations from tick ``start`` (NDJSON; ``deploysignal ui --fleet`` reads them)."""
        _unscoped(request.state.principal)
        registry.tables.get(fid)
        lines = registry.tables.observations(fid, start, limit)
        return Response("".join(ln + "\n" for ln in lines), media_type="application/x-ndjson")

    return router
