"""Fleet endpoints and the gate -> fleet freeze (issue #26): a deploy created through the service freezes
exactly its shards in the fleet observation, and a rack fault is alarmed through the service."""

from __future__ import annotations

import json

import numpy as np

from deploysignal.fleet import FleetObservation, TopologySnapshot
from deploysignal.service import TokenEntry, hash_token

from .conftest import W, make_client


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
    r = c.post("/v1/fleets", json={"id": "gpu", "shards": _shards(topo), "signals": ["err", "lat"], "directions": ["up", "up"]}, headers=W)
    assert r.status_code == 201, r.text
    assert r.json()["hierarchy_nodes"] == 8 + 4
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
    assert c.get("/v1/fleets/gpu", headers=W).json()["events"] == [ev]  # said before the next tick arrives
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
    from fastapi.testclient import TestClient

    from deploysignal.service import ServiceSettings, create_app

    st = ServiceSettings(store_url=f"sqlite:///{tmp_path / 's.db'}", create_store=True, rate_limit_token=None, rate_limit_failures=None,
                         tokens=[TokenEntry(name="proj", sha256=hash_token("p-token-test"), role="write", project="shop")])
    c = TestClient(create_app(st), raise_server_exceptions=False)
    h = {"Authorization": "Bearer p-token-test"}
    r = c.post("/v1/fleets", json={"id": "f", "shards": _shards(topo), "signals": ["a"]}, headers=h)
    assert r.status_code == 403 and "unscoped" in r.text
    body = {"id": "d", "config": json.loads(cfg.to_json()), "fleet": {"fleet": "f", "scope_level": "shard", "scope": [topo.ids[0]], "window": 5}}
    r = c.post("/v1/analyses", json=body, headers=h)
    assert r.status_code == 403 and "unscoped" in r.text
