"""Property test over the OpenAPI spec: malformed bodies, NaN/inf, huge numbers, wrong types,
out-of-order and duplicate ticks never produce a 5xx; every 4xx carries a ``detail`` message."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._split import METRICS, split_ticks
from .conftest import READ, W, make_client, ticks_of

SPECIAL_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, -0.0, 5e-324])
#: integers beyond the float range too (10**400): converting them raises OverflowError, which once gave a 500
HUGE_INTS = st.sampled_from([10**400, -(10**400), 2**1024, 2**1024 - 1])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | HUGE_INTS | st.floats() | SPECIAL_FLOATS
           | st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


def _dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # NaN / Infinity literals on purpose


@pytest.fixture(scope="module")
def svc(tmp_path_factory, step_sim):
    sim, cfg = step_sim
    c = make_client(tmp_path_factory.mktemp("fuzz"), max_body_bytes=2_000_000, max_batch_ticks=2000)
    c.__enter__()
    assert c.post("/v1/analyses", json={"id": "f", "config": json.loads(cfg.to_json()), "window": 480}, headers=W).status_code == 201
    assert c.post("/v1/analyses/f/ticks", json={"ticks": ticks_of(sim.canary, 0, 5)}, headers=W).status_code == 200
    sp = {"id": "sp", "mode": "split", "metrics": METRICS, "canary_share": 0.5, "window": 480}
    assert c.post("/v1/analyses", json=sp, headers=W).status_code == 201
    assert c.post("/v1/analyses/sp/ticks", json={"ticks": split_ticks(0, 5)}, headers=W).status_code == 200
    ops = []
    for path, item in c.get("/openapi.json").json()["paths"].items():
        for method in item:
            ops.append((method.upper(), path))
    yield c, ops, sim, cfg
    c.__exit__(None, None, None)


def _check(r):
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert r.json()["detail"], r.text


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path.replace("{key}", READ))  # the Kayenta routes' key: a valid token


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), body=JSON, param=st.sampled_from(["f", "sp", "nope", "..", "%00", "a" * 300, "ex-1", "rollback", "confirm-promotion"]))
def test_any_operation_any_body_no_5xx(svc, data, body, param):
    c, ops, _, _ = svc
    method, path = data.draw(st.sampled_from([o for o in ops if o[1] not in ("/v1/analyses/{aid}/events",)]))
    r = c.request(method, _fill(path, param), content=_dumps(body), headers={**W, "content-type": "application/json"})
    _check(r)


def _mutated_tick(draw, base: dict, names) -> dict:
    t = json.loads(json.dumps(base))
    kind = draw(st.sampled_from(["ts", "value", "drop", "extra", "type", "control", "ok"]))
    if kind == "ts":
        t["timestamp"] = draw(SCALARS)
    elif kind == "value":
        t["values"][draw(st.sampled_from(names))] = draw(SCALARS)
    elif kind == "drop":
        t.pop(draw(st.sampled_from(["timestamp", "values"])))
    elif kind == "extra":
        t[draw(st.text(min_size=1, max_size=8))] = draw(SCALARS)
    elif kind == "type":
        t["values"] = draw(SCALARS)
    elif kind == "control":
        t["control"] = draw(JSON)
    return t


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_ingest_mutations_and_ordering(svc, data):
    c, _, sim, cfg = svc
    before = c.get("/v1/analyses/f", headers=W).json()["n_ticks"]
    pool = ticks_of(sim.canary, max(0, before - 3), min(len(sim.canary), before + 6))
    idx = data.draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=6))  # duplicates, out of order
    batch = [_mutated_tick(data.draw, pool[i], list(cfg.names)) if data.draw(st.booleans()) else pool[i] for i in idx]
    if data.draw(st.booleans()):
        c.app.state.manager._engines.clear()  # as after a restart: the write path rebuilds the engine
    r = c.post("/v1/analyses/f/ticks", content=_dumps({"ticks": batch}), headers={**W, "content-type": "application/json"})
    _check(r)
    after = c.get("/v1/analyses/f", headers=W).json()["n_ticks"]
    if r.status_code == 200:
        assert after == before + len(batch)
    else:
        assert after == before  # a rejected batch changes nothing


def _mutated_split(draw, base: dict) -> dict:
    """One field of a split tick set to any value (counts of any type and size, unknown metrics and
    keys, bucket lists of any shape), or a required key dropped."""
    t = json.loads(json.dumps(base))
    arm = t["arms"][draw(st.sampled_from(["canary", "stable"]))]
    targets = [(t, "timestamp", SCALARS), (arm, "units", SCALARS), (arm["events"], draw(st.sampled_from(["errors", "latency_ms", "x"])), SCALARS),
               (arm["buckets"]["latency_ms"], draw(st.integers(0, 3)), SCALARS), (arm, "buckets", JSON), (t, "arms", JSON),
               (t, "tier", SCALARS), (arm, draw(st.text(min_size=1, max_size=8)), SCALARS)]
    where, key, values = draw(st.sampled_from(targets))
    where[key] = draw(values)
    if draw(st.integers(0, 7)) == 0:
        t.pop(draw(st.sampled_from(["timestamp", "arms"])))
    return t


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_split_ingest_mutations_and_ordering(svc, data):
    """Split ticks: counts of any type and size, missing or extra keys, duplicates and disorder."""
    c = svc[0]
    before = c.get("/v1/analyses/sp", headers=W).json()["n_ticks"]
    pool = split_ticks(0, 8, start=max(0, before - 3))
    idx = data.draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=6))
    batch = [_mutated_split(data.draw, pool[i]) if data.draw(st.booleans()) else pool[i] for i in idx]
    if data.draw(st.booleans()):
        c.app.state.manager._engines.clear()
    r = c.post("/v1/analyses/sp/ticks", content=_dumps({"ticks": batch}), headers={**W, "content-type": "application/json"})
    _check(r)
    after = c.get("/v1/analyses/sp", headers=W).json()["n_ticks"]
    assert after == before if r.status_code != 200 else after > before
    assert c.post("/v1/analyses/sp/replay", headers=W).json()["ok"] is True


def test_huge_and_deep_payloads(svc):
    c, _, _, _ = svc
    deep = "[" * 5000 + "]" * 5000
    _check(c.post("/v1/analyses/f/ticks", content=deep.encode(), headers={**W, "content-type": "application/json"}))
    big = _dumps({"ticks": [{"timestamp": 1e9 + i, "values": {"p99_latency_ms": 1.0}} for i in range(60_000)]})
    r = c.post("/v1/analyses/f/ticks", content=big, headers={**W, "content-type": "application/json"})
    assert r.status_code == 413
    many = _dumps({"ticks": [{"timestamp": 2e9 + i, "values": {"p99_latency_ms": 1.0}} for i in range(2500)]})
    r = c.post("/v1/analyses/f/ticks", content=many, headers={**W, "content-type": "application/json"})
    assert r.status_code == 422 and "limit" in r.json()["detail"]
