"""Fleet endpoints and the gate -> fleet freeze (issue #26): a deploy created through the service freezes
exactly its shards in the fleet observation, and a rack fault is alarmed through the service."""

from __future__ import annotations

import json

import numpy as np

from deploysignal.fleet import FleetObservation, TopologySnapshot
from deploysignal.service import TokenEntry, hash_token

from .conftest import R, W, make_client


def _shards(topo: TopologySnapshot) -> list[dict]:
    return [{"shard_id": s.shard_id, "host": s.host, "rack": s.rack} for s in topo.shards]


def _ticks(rng: np.random.Generator, topo: TopologySnapshot, n: int, shift: dict[str, float]) -> list[dict]:
    out = []
    for _ in range(n):
        x = rng.standard_normal((len(topo), 2))
        out.append({sid: [float(x[i, 0] + shift.get(sid, 0.0)), float(x[i, 1])] for i, sid in enumerate(topo.ids)})
    return out


def test_deploy_created_through_the_service_freezes_exactly_its_shards(tmp_path, step_sim):
    _, cfg = step_sim
    topo = TopologySnapshot.synthetic(4, 2, 4)
    c = make_client(tmp_path)
    r = c.post("/v1/fleets", json={"id": "gpu", "shards": _shards(topo), "signals": ["err", "lat"]}, headers=W)  # directions: both
    assert r.status_code == 201, r.text
    assert r.json()["hierarchy_nodes"] == 8 + 4 and r.json()["directions"] == ["both", "both"]
    rng = np.random.default_rng(2610)
    assert c.post("/v1/fleets/gpu/ticks", json={"ticks": _ticks(rng, topo, 5, {})}, headers=W).status_code == 200
    # a scope the fleet lacks: 422 and no analysis created
    bad = {"id": "dep0", "config": json.loads(cfg.to_json()), "fleet": {"fleet": "gpu", "scope_level": "host", "scope": ["r009-h00"], "window": 50}}
    r = c.post("/v1/analyses", json=bad, headers=W)
    assert r.status_code == 422 and "r009-h00" in r.text
    assert c.get("/v1/analyses/dep0", headers=W).status_code == 404
    body = {"id": "dep1", "config": json.loads(cfg.to_json()),
            "fleet": {"fleet": "gpu", "scope_level": "host", "scope": ["r001-h00", "r002-h01"], "window": 200}}
    r = c.post("/v1/analyses", json=body, headers=W)
    assert r.status_code == 201, r.text
    ev = r.json()["fleet_freeze"]["event"]
    assert ev["kind"] == "deploy" and ev["start_tick"] == 5 and ev["source"] == "analysis:dep1"
    # said before the next tick arrives, with the token that registered it
    assert c.get("/v1/fleets/gpu", headers=W).json()["events"] == [{**ev, "event_id": 0, "principal": "w", "analysis": "dep1"}]
    # the deploying hosts move a lot, and so does one host outside the deploy
    moved = set(topo.members("host", "r001-h00")) | set(topo.members("host", "r002-h01"))
    outside = set(topo.members("host", "r003-h01"))
    shift = {s: 3.0 for s in moved | outside}
    r = c.post("/v1/fleets/gpu/ticks", json={"ticks": _ticks(rng, topo, 150, shift)}, headers=W)
    assert r.status_code == 200, r.text
    o = FleetObservation.model_validate(c.get("/v1/fleets/gpu", headers=W).json()["observation"])
    assert set(o.frozen) == moved  # exactly the deploy's shards
    assert o.active_events == ("deploy@host:r001-h00,r002-h01",)
    alarmed = {(a.level, a.node) for a in o.alarms}
    assert ("host", "r003-h01") in alarmed and set(o.flagged) >= outside  # the fault outside the deploy is seen
    assert not moved & set(o.flagged)
    assert not [a for a in o.alarms if a.level == "shard" and a.node in moved]
    assert ("host", "r001-h00") not in alarmed and ("host", "r002-h01") not in alarmed
    # the deploy (25% of the fleet, +3 sd) does not set the reference: nothing outside the faulty host is alarmed
    assert {(lv, n) for lv, n in alarmed if lv != "shard"} <= {("host", "r003-h01"), ("rack", "r003")}
    assert {n for lv, n in alarmed if lv == "shard"} <= outside
    # the record: one stored observation per tick; a restarted service rebuilds the same state
    lines = c.get("/v1/fleets/gpu/observations", headers=W).text.splitlines()
    assert len(lines) == 155 and json.loads(lines[-1]) == json.loads(o.model_dump_json())
    c2 = make_client(tmp_path, create_store=False)
    assert c2.get("/v1/fleets/gpu", headers=W).json()["observation"] == json.loads(o.model_dump_json())


def test_fleet_endpoints_reject_bad_input_naming_tick_and_shard(tmp_path):
    topo = TopologySnapshot.synthetic(1, 2, 2)
    c = make_client(tmp_path)
    assert c.post("/v1/fleets", json={"id": "f", "shards": _shards(topo), "signals": ["a", "b"]}, headers=W).status_code == 201
    assert c.post("/v1/fleets", json={"id": "f", "shards": _shards(topo), "signals": ["a", "b"]}, headers=W).status_code == 409
    ok = {sid: [0.0, 1.0] for sid in topo.ids}
    r = c.post("/v1/fleets/f/ticks", json={"ticks": [ok, {**ok, "nope": [0.0, 0.0]}]}, headers=W)
    assert r.status_code == 422 and "tick 1" in r.text and "nope" in r.text
    r = c.post("/v1/fleets/f/ticks", json={"ticks": [{**ok, topo.ids[0]: [0.0]}]}, headers=W)
    assert r.status_code == 422 and topo.ids[0] in r.text
    assert c.get("/v1/fleets/f", headers=W).json()["n_ticks"] == 0  # all or nothing
    assert c.post("/v1/fleets/f/ticks", json={"ticks": [ok]}, headers=W).status_code == 200
    r = c.post("/v1/fleets/f/events", json={"kind": "maintenance", "start_tick": 0, "window": 3, "scope_level": "fleet"}, headers=W)
    assert r.status_code == 422 and "back-dated" in r.text
    assert c.get("/v1/fleets/missing", headers=W).status_code == 404


def test_fleet_and_deploy_freezes_need_an_unscoped_token(tmp_path, step_sim):
    """A freeze silences the fleet's evidence in its scope: a project-scoped token can neither reach the fleet
    endpoints nor create an analysis that freezes fleet shards."""
    _, cfg = step_sim
    topo = TopologySnapshot.synthetic(1, 2, 2)
    make_client(tmp_path)  # imports the test client as conftest does (starlette's httpx deprecation silenced there)
    from fastapi.testclient import TestClient

    from deploysignal.service import ServiceSettings, create_app

    st = ServiceSettings(store_url=f"sqlite:///{tmp_path / 's.db'}", create_store=True, rate_limit_token=None, rate_limit_failures=None,
                         tokens=[TokenEntry(name="proj", sha256=hash_token("p-token-test"), role="write", project="shop")])
    c = TestClient(create_app(st), raise_server_exceptions=False)
    h = {"Authorization": "Bearer p-token-test"}
    r = c.post("/v1/fleets", json={"id": "f", "shards": _shards(topo), "signals": ["a"]}, headers=h)
    assert r.status_code == 403 and "unscoped" in r.text
    r = c.delete("/v1/fleets/f/events/0", headers=h)  # ending a freeze un-silences evidence: unscoped too
    assert r.status_code == 403 and "unscoped" in r.text
    body = {"id": "d", "config": json.loads(cfg.to_json()), "fleet": {"fleet": "f", "scope_level": "shard", "scope": [topo.ids[0]], "window": 5}}
    r = c.post("/v1/analyses", json=body, headers=h)
    assert r.status_code == 403 and "unscoped" in r.text


def _rack_ticks(rng: np.random.Generator, topo: TopologySnapshot, n: int, moved: set[str] = frozenset()) -> list[dict]:
    return [{sid: [float(rng.standard_normal() + (3.0 if sid in moved else 0.0))] for sid in topo.ids} for _ in range(n)]


def _fleet(c, fid: str, topo: TopologySnapshot, **kw) -> None:
    r = c.post("/v1/fleets", json={"id": fid, "shards": _shards(topo), "signals": ["a"], **kw}, headers=W)
    assert r.status_code == 201, r.text


def test_two_processes_on_one_store_keep_one_history(tmp_path):
    """Two apps on one SQLite store (as ``--workers 2``). A: the process that cached 5 ticks cannot back-date a freeze
    past the 85 ticks the other stored, and a restart shows the alarm the record holds. B: a freeze registered by one
    process is applied by the other one's next ingest (frozen shards, no alarm on them), and a restart agrees."""
    topo = TopologySnapshot.synthetic(4, 2, 4)
    rng = np.random.default_rng(2611)
    c1, c2 = make_client(tmp_path), make_client(tmp_path, create_store=False)
    _fleet(c1, "f", topo)
    r0 = set(topo.members("rack", "r000"))
    assert c1.post("/v1/fleets/f/ticks", json={"ticks": _rack_ticks(rng, topo, 5)}, headers=W).status_code == 200
    assert c2.get("/v1/fleets/f", headers=W).json()["n_ticks"] == 5  # c2 caches the fleet at 5 ticks
    r = c1.post("/v1/fleets/f/ticks", json={"ticks": _rack_ticks(rng, topo, 80, r0)}, headers=W).json()
    assert ("rack", "r000") in {(a["level"], a["node"]) for a in r["observation"]["alarms"]}
    # scenario A: a back-dated freeze through the stale process is refused against the stored tick count
    ev = {"kind": "maintenance", "start_tick": 5, "window": 1000, "scope_level": "rack", "scope": ["r000"]}
    r = c2.post("/v1/fleets/f/events", json=ev, headers=W)
    assert r.status_code == 422 and "the fleet has 85 ticks" in r.text
    r1_obs = c1.get("/v1/fleets/f", headers=W).json()["observation"]
    assert c2.get("/v1/fleets/f", headers=W).json()["observation"] == r1_obs  # reads catch up too
    r = c2.post("/v1/fleets/f/events", json={**ev, "start_tick": 85}, headers=W)
    assert r.status_code == 201 and r.json()["registered_at_tick"] == 85
    c3 = make_client(tmp_path, create_store=False)
    st = c3.get("/v1/fleets/f", headers=W).json()
    last = json.loads(c3.get("/v1/fleets/f/observations?start=84", headers=W).text.splitlines()[-1])
    assert st["observation"] == last == r1_obs and ("rack", "r000") in {(a["level"], a["node"]) for a in last["alarms"]}
    # scenario B: process 1 registers a deploy freeze; process 2, current on ticks, ingests next and applies it
    _fleet(c1, "g", topo)
    assert c2.post("/v1/fleets/g/ticks", json={"ticks": _rack_ticks(rng, topo, 5)}, headers=W).status_code == 200
    assert c1.get("/v1/fleets/g", headers=W).json()["n_ticks"] == 5
    r1 = set(topo.members("rack", "r001"))
    ev = {"kind": "deploy", "start_tick": 5, "window": 1000, "scope_level": "rack", "scope": ["r001"]}
    assert c1.post("/v1/fleets/g/events", json=ev, headers=W).status_code == 201
    r = c2.post("/v1/fleets/g/ticks", json={"ticks": _rack_ticks(rng, topo, 80, r1)}, headers=W).json()
    o = r["observation"]
    assert set(o["frozen"]) == r1 and not [a for a in o["alarms"] if a["node"] in r1 | {"r001", "r001-h00", "r001-h01"}]
    assert [e["scope"] for e in c2.get("/v1/fleets/g", headers=W).json()["events"]] == [["r001"]]
    assert make_client(tmp_path, create_store=False).get("/v1/fleets/g", headers=W).json()["observation"] == o


def test_a_failed_append_leaves_the_cached_observer_where_the_store_is(tmp_path, monkeypatch):
    """The batch runs on a copy of the observer: when storing it fails, a request waiting on the fleet's lock meanwhile
    continues from the stored state, as a fresh process would (before: on the observer the failed batch ran ahead)."""
    import threading
    import time

    from deploysignal.service._fleet import FleetCreate, FleetRegistry, FleetTicks
    from deploysignal.store import SQLiteStore

    topo = TopologySnapshot.synthetic(2, 2, 2)
    rng = np.random.default_rng(2612)
    store = SQLiteStore(str(tmp_path / "f.db"))
    reg = FleetRegistry(store)
    reg.create(FleetCreate(id="f", shards=_shards(topo), signals=["a"]), "now")
    first, lost, then = (FleetTicks(ticks=_rack_ticks(rng, topo, n)) for n in (3, 4, 2))
    reg.ingest("f", first)
    in_append, fail = threading.Event(), {"on": True}
    q, many = type(store)._q, type(store)._many

    def guard(sql: str) -> None:
        if fail["on"] and sql.startswith("INSERT INTO fleet_ticks"):
            fail["on"] = False
            in_append.set()
            time.sleep(0.5)  # the other request is now waiting on the fleet's lock
            raise OSError("disk full")

    monkeypatch.setattr(type(store), "_q", lambda self, c, sql, args=(): (guard(sql), q(self, c, sql, args))[1])
    monkeypatch.setattr(type(store), "_many", lambda self, c, sql, rows: (guard(sql), many(self, c, sql, rows))[1])
    errors, out = [], {}

    def failing() -> None:
        try:
            reg.ingest("f", lost)
        except OSError as exc:
            errors.append(exc)

    t = threading.Thread(target=failing)
    t.start()
    assert in_append.wait(10)
    out["r"] = reg.ingest("f", then)
    t.join()
    assert errors and out["r"]["first_tick"] == 3 and out["r"]["n_ticks"] == 5
    fresh = FleetRegistry(SQLiteStore(str(tmp_path / "f.db"))).state("f")["observation"]
    assert out["r"]["observation"] == fresh and fresh["tick"] == 4


def test_deploy_freeze_lifecycle_principal_cap_end_and_delete(tmp_path, step_sim):
    """A deploy freeze records the token that made it; one that would freeze more than max_freeze_fraction of the
    fleet is refused (422, no analysis); the freeze ends at the fleet's next tick once its analysis is deleted or
    final; DELETE /v1/fleets/{id}/events/{event_id} ends an event (write scope); ticks with fewer than 3 reporting
    shards for a signal are refused, naming the tick and the signal."""
    _, cfg = step_sim
    topo = TopologySnapshot.synthetic(4, 2, 4)
    rng = np.random.default_rng(2613)
    c = make_client(tmp_path)
    _fleet(c, "f", topo, max_freeze_fraction=0.3)
    assert c.post("/v1/fleets/f/ticks", json={"ticks": _rack_ticks(rng, topo, 3)}, headers=W).status_code == 200
    conf = json.loads(cfg.to_json())
    big = {"id": "big", "config": conf, "fleet": {"fleet": "f", "scope_level": "rack", "scope": ["r000", "r001"], "window": 50}}
    r = c.post("/v1/analyses", json=big, headers=W)
    assert r.status_code == 422 and "max_freeze_fraction = 0.3" in r.text and "16 of the fleet's 32" in r.text
    assert c.get("/v1/analyses/big", headers=W).status_code == 404
    dep = {"id": "dep", "config": conf, "fleet": {"fleet": "f", "scope_level": "rack", "scope": ["r000"], "window": 50}}
    r = c.post("/v1/analyses", json=dep, headers=W)
    assert r.status_code == 201, r.text
    assert r.json()["fleet_freeze"]["principal"] == "w" and r.json()["fleet_freeze"]["event_id"] == 0
    # a second deploy would bring the frozen share to 16/32 > 0.3 while the first runs
    r = c.post("/v1/fleets/f/events", json={"kind": "deploy", "start_tick": 3, "window": 5, "scope_level": "rack", "scope": ["r002"]}, headers=W)
    assert r.status_code == 422 and "with the freezes in force 16" in r.text
    o = c.post("/v1/fleets/f/ticks", json={"ticks": _rack_ticks(rng, topo, 2)}, headers=W).json()["observation"]
    assert len(o["frozen"]) == 8
    assert c.delete("/v1/analyses/dep?force=true", headers=W).status_code == 200
    o = c.post("/v1/fleets/f/ticks", json={"ticks": _rack_ticks(rng, topo, 1)}, headers=W).json()["observation"]
    assert o["frozen"] == [] and o["tick"] == 5  # ended before the first tick after the deletion
    assert c.get("/v1/fleets/f", headers=W).json()["events"] == []
    # a deploy whose analysis reaches a final verdict (here: voided) is unfrozen before the fleet's next tick
    r = c.post("/v1/analyses", json={**dep, "id": "dep2", "fleet": {**dep["fleet"], "scope": ["r001"]}}, headers=W)
    assert r.status_code == 201, r.text
    assert len(c.post("/v1/fleets/f/ticks", json={"ticks": _rack_ticks(rng, topo, 1)}, headers=W).json()["observation"]["frozen"]) == 8
    assert c.post("/v1/analyses/dep2/void", json={"reason": "test"}, headers=W).status_code == 200
    o = c.post("/v1/fleets/f/ticks", json={"ticks": _rack_ticks(rng, topo, 1)}, headers=W).json()["observation"]
    assert o["frozen"] == [] and o["tick"] == 7
    # an operator's freeze, ended through DELETE (a read token may not)
    r = c.post("/v1/fleets/f/events", json={"kind": "maintenance", "start_tick": 8, "window": 100, "scope_level": "host", "scope": ["r003-h01"]}, headers=W)
    assert r.status_code == 201 and r.json()["principal"] == "w"
    eid = r.json()["event_id"]
    assert c.delete(f"/v1/fleets/f/events/{eid}", headers=R).status_code == 403
    r = c.delete(f"/v1/fleets/f/events/{eid}", headers=W)
    assert r.status_code == 200 and r.json() == {"id": "f", "event_id": eid, "ended_before_tick": 8, "principal": "w"}
    assert c.delete(f"/v1/fleets/f/events/{eid}", headers=W).status_code == 404
    assert c.get("/v1/fleets/f", headers=W).json()["events"] == []
    # restart: the record replays the same (the ends are event rows)
    last = c.post("/v1/fleets/f/ticks", json={"ticks": _rack_ticks(rng, topo, 1)}, headers=W).json()["observation"]
    assert last["frozen"] == []
    assert make_client(tmp_path, create_store=False).get("/v1/fleets/f", headers=W).json()["observation"] == last
    # too few reporting shards
    few = {sid: [0.5] for sid in topo.ids[:2]}
    r = c.post("/v1/fleets/f/ticks", json={"ticks": [_rack_ticks(rng, topo, 1)[0], few]}, headers=W)
    assert r.status_code == 422 and "tick 1" in r.text and "reported by 2 shard(s)" in r.text
    r = c.post("/v1/fleets/f/ticks", json={"ticks": [{}]}, headers=W)
    assert r.status_code == 422 and "reported by 0 shard(s)" in r.text
    assert c.get("/v1/fleets/f", headers=W).json()["n_ticks"] == 9


def test_a_service_fleet_can_use_the_curated_baseline(tmp_path):
    """``baseline_ticks`` are curated as ``fleet observe --baseline`` does: under the shared sinusoidal load with AR(1)
    shard noise the fleet-level test uses the fitted load model and nothing alarms (the no-baseline fleet with
    ``baseline_loc`` fires its fleet-level alarm on the same data), and a restart rebuilds the same observation."""
    topo = TopologySnapshot.synthetic(2, 4, 2)
    rng = np.random.default_rng(2614)
    n, k = 500, 3
    e = rng.standard_normal((n, len(topo), k))
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = 0.3 * x[t - 1] + e[t]
    x += 2.0 * np.sin(np.arange(n) / 30.0)[:, None, None] + 0.3 * rng.standard_normal((n, 1, k))
    as_ticks = [{sid: [float(v) for v in x[t, i]] for i, sid in enumerate(topo.ids)} for t in range(n)]
    c = make_client(tmp_path)
    sig = ["a", "b", "c"]
    r = c.post("/v1/fleets", json={"id": "cur", "shards": _shards(topo), "signals": sig, "baseline_ticks": as_ticks[:300]}, headers=W)
    assert r.status_code == 201, r.text
    assert r.json()["baseline"] == "curated" and r.json()["fleet_level"] == "load model"
    o = c.post("/v1/fleets/cur/ticks", json={"ticks": as_ticks[300:]}, headers=W).json()["observation"]
    assert o["alarms"] == [] and not o["fleet_fired"]
    med = np.median(x[:300], axis=1)
    loc, scale = np.median(med, axis=0), 1.4826 * np.median(np.abs(med - np.median(med, axis=0)), axis=0)
    r = c.post("/v1/fleets", json={"id": "raw", "shards": _shards(topo), "signals": sig, "baseline_loc": loc.tolist(),
                                   "baseline_scale": scale.tolist()}, headers=W)
    assert r.json()["baseline"] == "none" and r.json()["fleet_level"] == "stationary median"
    assert c.post("/v1/fleets/raw/ticks", json={"ticks": as_ticks[300:]}, headers=W).json()["observation"]["fleet_fired"]
    assert make_client(tmp_path, create_store=False).get("/v1/fleets/cur", headers=W).json()["observation"] == o
    r = c.post("/v1/fleets", json={"id": "both", "shards": _shards(topo), "signals": sig, "baseline_ticks": as_ticks[:300],
                                   "baseline_loc": loc.tolist(), "baseline_scale": scale.tolist()}, headers=W)
    assert r.status_code == 422 and "not both" in r.text
    r = c.post("/v1/fleets", json={"id": "few", "shards": _shards(topo), "signals": sig, "baseline_ticks": [{topo.ids[0]: [0.0, 0.0, 0.0]}]}, headers=W)
    assert r.status_code == 422 and "baseline tick 0" in r.text


def test_a_stale_worker_catches_up_outside_the_write_lock(tmp_path, monkeypatch):
    """Review s6 item 2. Worker B cached the fleet at 0 ticks; worker A stored 200 since. B's 1-tick batch replays the
    gap in a read transaction first: while it does, A's next batch of 5 is stored (the store's write lock is free);
    A stores 3 more just before B takes the lock, and under it B replays only those 3 plus its own tick (before:
    all 208, the lock held meanwhile)."""
    import contextlib
    import threading

    from deploysignal.fleet import FleetObserver
    from deploysignal.service._fleet import LOCKED_REPLAY, FleetCreate, FleetRegistry, FleetTicks
    from deploysignal.store import SQLiteStore

    topo = TopologySnapshot.synthetic(2, 2, 2)
    rng = np.random.default_rng(2613)
    a, b = FleetRegistry(SQLiteStore(str(tmp_path / "f.db"))), FleetRegistry(SQLiteStore(str(tmp_path / "f.db")))
    a.create(FleetCreate(id="f", shards=_shards(topo), signals=["a"]), "now")
    assert b.state("f")["n_ticks"] == 0  # B caches the fleet
    a.ingest("f", FleetTicks(ticks=_rack_ticks(rng, topo, 200)))
    in_lock, counts = {"on": False}, {"locked": 0}
    update = FleetObserver.update

    def counting(self, values, **kw):
        counts["locked"] += in_lock["on"]
        return update(self, values, **kw)

    monkeypatch.setattr(FleetObserver, "update", counting)
    locked, late = b.tables.locked, []

    @contextlib.contextmanager
    def flagged(fid):
        if not late:  # A writes between B's last read catch-up and B's lock
            late.append(a.ingest("f", FleetTicks(ticks=_rack_ticks(rng, topo, 3))))
        with locked(fid) as lf:
            in_lock["on"] = True
            try:
                yield lf
            finally:
                in_lock["on"] = False

    monkeypatch.setattr(b.tables, "locked", flagged)
    read_up, a_done = b._read_up, threading.Event()

    def read_up_then_a_writes(fid, live):
        read_up(fid, live)
        if not a_done.is_set():  # A writes while B is between its read catch-up and the lock
            t = threading.Thread(target=lambda: (a.ingest("f", FleetTicks(ticks=_rack_ticks(rng, topo, 5))), a_done.set()))
            t.start()
            assert a_done.wait(10)  # not blocked by B

    monkeypatch.setattr(b, "_read_up", read_up_then_a_writes)
    r = b.ingest("f", FleetTicks(ticks=_rack_ticks(rng, topo, 1)))
    assert a_done.is_set() and late and r["first_tick"] == 208 and r["n_ticks"] == 209
    assert counts["locked"] == 3 + 1 <= LOCKED_REPLAY + 1
    fresh = FleetRegistry(SQLiteStore(str(tmp_path / "f.db"))).state("f")["observation"]
    assert r["observation"] == fresh


def test_a_freeze_refused_after_the_scope_check_leaves_no_analysis(tmp_path, step_sim, monkeypatch):
    """Review s6 item 3. Another request's deploy freeze of r001 lands between the scope check and the analysis' freeze,
    bringing the frozen share over max_freeze_fraction: the create is a 422 and the analysis is gone (before: 422, but
    GET answered 200 and a retry 422 again); once r001's freeze ends, the same id is created."""
    from deploysignal.fleet import ClusterEvent
    from deploysignal.service._fleet import FleetRegistry

    _, cfg = step_sim
    topo = TopologySnapshot.synthetic(4, 2, 4)
    c = make_client(tmp_path)
    _fleet(c, "f", topo, max_freeze_fraction=0.5)
    check, raced = FleetRegistry.check_scope, []

    def racing(self, scope):
        check(self, scope)
        if not raced:
            raced.append(1)
            self.add_event("f", lambda n: ClusterEvent(kind="deploy", start_tick=n, window=50, scope_level="rack", scope=("r001",)), "other")

    monkeypatch.setattr(FleetRegistry, "check_scope", racing)
    body = {"id": "depB", "config": json.loads(cfg.to_json()),
            "fleet": {"fleet": "f", "scope_level": "rack", "scope": ["r000", "r002"], "window": 50}}
    r = c.post("/v1/analyses", json=body, headers=W)
    assert r.status_code == 422 and "with the freezes in force 24" in r.text
    assert c.get("/v1/analyses/depB", headers=W).status_code == 404
    events = c.get("/v1/fleets/f", headers=W).json()["events"]
    assert [(e["scope"], e["principal"]) for e in events] == [(["r001"], "other")]
    assert c.delete(f"/v1/fleets/f/events/{events[0]['event_id']}", headers=W).status_code == 200
    r = c.post("/v1/analyses", json=body, headers=W)
    assert r.status_code == 201 and r.json()["fleet_freeze"]["principal"] == "w", r.text


def test_events_in_force_per_fleet_are_capped(tmp_path, monkeypatch):
    """Review s6 item 4: a fleet takes at most MAX_EVENTS events in force; one more is a 422 naming the limit, and an
    event that ended makes room again."""
    from deploysignal.service import _fleet as fleet_module

    monkeypatch.setattr(fleet_module, "MAX_EVENTS", 3)
    topo = TopologySnapshot.synthetic(2, 2, 2)
    c = make_client(tmp_path)
    _fleet(c, "f", topo)
    ev = {"kind": "maintenance", "start_tick": 10**6, "window": 5, "scope_level": "shard"}
    ids = [c.post("/v1/fleets/f/events", json={**ev, "scope": [sid]}, headers=W).json()["event_id"] for sid in topo.ids[:3]]
    r = c.post("/v1/fleets/f/events", json={**ev, "scope": [topo.ids[3]]}, headers=W)
    assert r.status_code == 422 and "has 3 events in force, at most 3" in r.text
    assert c.delete(f"/v1/fleets/f/events/{ids[0]}", headers=W).status_code == 200
    assert c.post("/v1/fleets/f/events", json={**ev, "scope": [topo.ids[3]]}, headers=W).status_code == 201


def test_a_freeze_from_a_template_records_the_token_and_the_template(tmp_path, step_sim):
    """Review s6 item 5: the deploy freeze of an analysis that Argo Rollouts or Flagger instantiate from a template names
    the token of the request and the template (before: principal "")."""
    _, cfg = step_sim
    topo = TopologySnapshot.synthetic(4, 2, 2)
    c = make_client(tmp_path)
    _fleet(c, "f", topo)
    tpl = {"config": json.loads(cfg.to_json()), "window": 20, "fleet": {"fleet": "f", "scope_level": "rack", "scope": ["r000"], "window": 50}}
    assert c.put("/v1/templates/t", json=tpl, headers=W).status_code == 200
    assert c.get("/v1/argo/templates/t/revisions/v1", params={"subject": "prod.api"}, headers=R).status_code == 200
    r = c.post("/v1/flagger/pre-rollout", json={"name": "api", "namespace": "prod", "checksum": "v2", "metadata": {"template": "t"}},
               headers=W)
    assert r.status_code in (200, 409), r.text
    events = c.get("/v1/fleets/f", headers=W).json()["events"]
    assert [(e["analysis"], e["principal"]) for e in events] == [("t@prod.api@v1", "r (template t)"), ("t@prod.api@v2", "w (template t)")]


def test_a_freeze_that_leaves_fewer_than_3_unfrozen_shards_is_refused(tmp_path):
    """Review s6 item 7: whatever its kind, an event that would leave 1 or 2 shards unfrozen (the reference needs 3) is a
    422; freezing the whole fleet (nothing bets) is allowed."""
    topo = TopologySnapshot.synthetic(1, 3, 2)  # 6 shards on 3 hosts
    c = make_client(tmp_path)
    _fleet(c, "f", topo, max_freeze_fraction=1.0)
    ev = {"kind": "maintenance", "start_tick": 0, "window": 10, "scope_level": "host"}
    assert c.post("/v1/fleets/f/events", json={**ev, "scope": ["r000-h00"]}, headers=W).status_code == 201
    r = c.post("/v1/fleets/f/events", json={**ev, "kind": "deploy", "scope": ["r000-h01"]}, headers=W)
    assert r.status_code == 422 and "only 2 shard(s) of the fleet stay unfrozen" in r.text
    assert c.post("/v1/fleets/f/events", json={**ev, "scope_level": "fleet", "scope": []}, headers=W).status_code == 201


def test_a_finished_deploy_registered_by_another_process_is_ended_at_this_write(tmp_path):
    """Review s6 item 6 (in part): process B has not seen the freeze process A registered for an analysis that is already
    final; B's next batch ends it before its first tick (before: the batch ran frozen, the end came one write late)."""
    from deploysignal.service._fleet import FleetCreate, FleetRegistry, FleetScope, FleetTicks
    from deploysignal.store import SQLiteStore

    topo = TopologySnapshot.synthetic(4, 2, 2)
    over = lambda aid: "final verdict" if aid == "a1" else None  # noqa: E731
    a = FleetRegistry(SQLiteStore(str(tmp_path / "f.db")), over)
    b = FleetRegistry(SQLiteStore(str(tmp_path / "f.db")), over)
    a.create(FleetCreate(id="f", shards=_shards(topo), signals=["a"]), "now")
    assert b.state("f")["n_ticks"] == 0
    a.freeze_for_deploy(FleetScope(fleet="f", scope_level="rack", scope=["r000"], window=50), "a1", "w")
    r = b.ingest("f", FleetTicks(ticks=_rack_ticks(np.random.default_rng(2634), topo, 1)))
    assert r["observation"]["frozen"] == [] and b.state("f")["events"] == []
