"""Seeded fuzz over every operation of the app: 0 server errors, every 4xx is JSON with a message.

The operations are enumerated from the app itself (its OpenAPI document, built from the routes, plus
any route left out of the schema), so a new route is fuzzed without editing this file; a test fails if
an operation was never requested. Each operation gets a valid-looking body where one is known (create,
ticks in both formats, void, Flagger, templates, Kayenta) with one place replaced by a hostile value:
extreme finite numbers (+-1e308, subnormals, -0.0, integers far beyond the float range), NaN and
Infinity literals, lone surrogates, NUL and control characters, wrong types, deep nesting (also beyond
Python's recursion limit), a huge array and a long string within the body limit; or a hostile object
key. Path and query parameters get hostile values too. Seeded (numpy Generator): the same requests on every run.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from ._split import METRICS, split_ticks
from .conftest import KAYENTA, READ, W, make_client, ticks_of

SEED = 20231207
VARIANTS = 14  # random requests per operation (and one for each of REQUIRED_BODY)

#: leaf replacements: JSON text fragments, written into the body as they are (so NaN, Infinity and
#: lone surrogate escapes reach the server unchanged)
HOSTILE = [
    "1e308", "-1e308", "5e-324", "-5e-324", "2.2250738585072014e-308", "-0.0", "0", "1" + "0" * 400, "-" + "9" * 400,
    str(2**1024), str(-(2**63)), "NaN", "Infinity", "-Infinity", '"\\ud800"', '"a\\udfffb"', '"\\udc00\\ud800"', '"a\\u0000b"',
    '"\\u0007\\u001b[31m"', '"\\n"', '""', '"x"', "null", "true", "false", "[]", "{}", "[null]", '{"": null}',
    "[" * 300 + "]" * 300, '{"a":' * 300 + "1" + "}" * 300,
    "[" * 5000 + '"\\ud800"' + "]" * 5000,  # deeper than Python's recursion limit, a surrogate at the bottom
    "[" + ",".join(["1e308"] * 20000) + "]",  # a huge array (~140 KB)
    '"' + "y" * 300_000 + '"',  # a long string
]
#: sent to every operation, each in a request of its own with a valid path and token (the random
#: variants below may miss one): in the body when the operation takes one, in a query parameter (its
#: own, or an unknown one) and, for an operation with neither, in its last path parameter
REQUIRED_BODY = ["1e308", "-1e308", "5e-324", "-0.0", "1" + "0" * 400, '"\\ud800"', '"a\\u0000b"']
REQUIRED_URL = ["1e308", "-1e308", "5e-324", "-0.0", "1" + "0" * 400, "%ED%A0%80", "%00"]
HOSTILE_KEYS = ['"\\ud800"', '"\\u0000"', '"a\\u0001"', '""', '"__proto__"', '"' + "k" * 5000 + '"']
PATH_VALUES = ["f", "sp", "nope", "..", "%ED%A0%80", "%00", "a%0Ab", "a" * 300, "-1", "1e308", "%F0%9F%98%80", "t1", "r1"]
QUERY_VALUES = ["1e308", "-1e308", "5e-324", "-0.0", "1" + "0" * 400, "NaN", "-1", "%ED%A0%80", "%00", "a%0Ab", "", "true", "x" * 3000]


def _seed_bodies(cfg_json: dict, sim) -> dict[tuple[str, str], Any]:
    tick = ticks_of(sim.canary, 5, 6)[0]
    flagger = {"name": "web", "namespace": "prod", "phase": "Progressing", "checksum": "r1", "metadata": {"token": READ, "analysis": "f"}}
    return {
        ("POST", "/v1/analyses"): {"id": "new", "config": cfg_json, "window": 10},
        ("POST", "/v1/analyses/{aid}/ticks"): {"batch_id": "b", "ticks": [tick]},
        ("POST", "/v1/analyses/{aid}/void"): {"reason": "fuzz"},
        ("POST", "/v1/analyses/{aid}/cut"): {"to_tick": 3, "reason": "fuzz"},
        ("POST", "/v1/flagger/{hook}"): flagger,
        ("PUT", "/v1/templates/{tid}"): {"config_ref": cfg_json["version_id"] if "version_id" in cfg_json else "cc-000000", "window": 10},
        ("POST", "/v1/kayenta/canary"): {"analysisId": "f", "revision": "r1", "scopes": {"default": {"experimentScope": {"scope": "r1"}}}},
        ("POST", "/kayenta/{key}/canary/{id}"): {"scopes": {"default": {"experimentScope": {"scope": "r1"}}}, "thresholds": {"pass": 75, "marginal": 50}},
    }


def _split_seed() -> dict:
    return {"batch_id": "sb", "ticks": split_ticks(0, 1, start=5)}


def _places(obj: Any, at: tuple = ()) -> list[tuple]:
    """Every position in ``obj`` (the root, each key's value, each list item)."""
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _places(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            out += _places(v, (*at, i))
    return out


_MARK = "@@HOSTILE@@"


def _mutated(rng: np.random.Generator, seed: Any, value: str | None = None) -> str:
    """``seed`` as JSON text with one position replaced by a hostile value (``value``, or a random
    one), or (without ``value``) a hostile key added."""
    obj = json.loads(json.dumps(seed))
    places = _places(obj)
    at = places[int(rng.integers(len(places)))]
    if at and value is None and rng.random() < 0.2:  # a hostile key next to the chosen position
        parent = obj
        for k in at[:-1]:
            parent = parent[k]
        if isinstance(parent, dict):
            parent[_MARK + "K"] = 1
            return json.dumps(obj).replace(f'"{_MARK}K"', HOSTILE_KEYS[int(rng.integers(len(HOSTILE_KEYS)))])
    value = HOSTILE[int(rng.integers(len(HOSTILE)))] if value is None else value
    if not at:
        return value
    parent = obj
    for k in at[:-1]:
        parent = parent[k]
    parent[at[-1]] = _MARK
    return json.dumps(obj).replace(f'"{_MARK}"', value)


def _operations(app) -> list[tuple[str, str, list[str]]]:
    """(method, path, query parameter names) of every operation: the OpenAPI document (built from the
    app's routes, included routers too) and the routes it leaves out."""
    ops = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            ops.append((method.upper(), path, [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]))
    seen = {(m, p) for m, p, _ in ops}
    for r in app.routes:
        for m in sorted(getattr(r, "methods", None) or ()):
            if getattr(r, "path", None) and (m, r.path) not in seen and m != "HEAD":
                ops.append((m, r.path, []))
    return ops


@pytest.fixture(scope="module")
def fuzz_svc(tmp_path_factory, step_sim):
    sim, cfg = step_sim
    c = make_client(tmp_path_factory.mktemp("fuzzroutes"), max_body_bytes=2_000_000, max_batch_ticks=2000)
    c.__enter__()
    cfg_json = json.loads(cfg.to_json())
    assert c.post("/v1/analyses", json={"id": "f", "config": cfg_json, "window": 480}, headers=W).status_code == 201
    assert c.post("/v1/analyses/f/ticks", json={"ticks": ticks_of(sim.canary, 0, 5)}, headers=W).status_code == 200
    assert c.post("/v1/analyses", json={"id": "sp", "mode": "split", "metrics": METRICS, "window": 480}, headers=W).status_code == 201
    assert c.post("/v1/analyses/sp/ticks", json={"ticks": split_ticks(0, 5)}, headers=W).status_code == 200
    assert c.put("/v1/templates/t1", json={"config_ref": cfg.version_id, "window": 480}, headers=W).status_code == 200
    yield c, cfg_json, sim, cfg
    c.__exit__(None, None, None)


def _fill(path: str, rng: np.random.Generator, hostile: bool) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name == "key":
            return KAYENTA if not hostile else PATH_VALUES[int(rng.integers(len(PATH_VALUES)))]
        if name == "hook":
            return ["rollout", "confirm-promotion", "rollback", "event", "pre-rollout"][int(rng.integers(5))] if not hostile else "%ED%A0%80"
        pool = ["f", "sp", "t1", "r1"] if not hostile else PATH_VALUES
        return pool[int(rng.integers(len(pool)))]

    return re.sub(r"\{([^}]+)\}", one, path)


def test_every_operation_hostile_values_no_server_error(fuzz_svc):
    c, cfg_json, sim, cfg = fuzz_svc
    cfg_json = {**cfg_json}
    seeds = _seed_bodies(cfg_json, sim)
    seeds[("PUT", "/v1/templates/{tid}")] = {"config_ref": cfg.version_id, "window": 10}
    rng = np.random.default_rng(SEED)
    ops = _operations(c.app)
    assert len(ops) >= 20 and ("DELETE", "/v1/analyses/{aid}", ["force", "reason"]) in ops and ("POST", "/v1/analyses/{aid}/cut", []) in ops
    requested: dict[tuple[str, str], int] = {}
    failures = []

    def send(method: str, path: str, url: str, body: str | None, token: bool) -> None:
        headers = {**W, "content-type": "application/json"} if token else {"content-type": "application/json"}
        r = c.request(method, url, content=None if body is None else body.encode("utf-8"), headers=headers)
        requested[(method, path)] = requested.get((method, path), 0) + 1
        if r.status_code >= 500:
            failures.append((method, url[:120], (body or "")[:160], r.status_code, r.text[:200]))
        elif r.status_code >= 400:
            ct = r.headers.get("content-type", "")
            msg = r.json().get("detail") or r.json().get("reason") if ct.startswith("application/json") else None  # Flagger refusals: reason
            if not (isinstance(msg, str | list) and bool(msg)):
                failures.append((method, url[:120], (body or "")[:160], r.status_code, r.text[:200]))

    def seed_of(method: str, path: str, url: str) -> Any:
        if path == "/v1/analyses/{aid}/ticks" and "/sp/" in url:
            return _split_seed()
        return seeds.get((method, path), {"a": [1, {"b": "c"}]})

    for method, path, query in ops:
        has_body = method in ("POST", "PUT", "PATCH", "DELETE")
        for v in range(VARIANTS):
            hostile_path = v % 3 == 2
            url = _fill(path, rng, hostile_path)
            params = []
            for q in query:
                if rng.random() < 0.6:
                    params.append(f"{q}={QUERY_VALUES[int(rng.integers(len(QUERY_VALUES)))]}")
            if path.endswith("/events"):
                params = [p for p in params if not p.startswith(("timeout=", "max_events="))] + ["timeout=0.2", "max_events=1"]
            if params:
                url += "?" + "&".join(params)
            body = _mutated(rng, seed_of(method, path, url)) if has_body else None
            send(method, path, url, body, token=bool(v % 5))  # some without a token
        for body_value, url_value in zip(REQUIRED_BODY, REQUIRED_URL, strict=True):
            only_path = not has_body and not query
            url = _fill(re.sub(r"\{[^}]+\}(?!.*\{)", url_value, path) if only_path else path, rng, False)  # the last path parameter
            q = query[int(rng.integers(len(query)))] if query else "x"
            params = [f"{q}={url_value}"] + [p for p in ("timeout=0.2", "max_events=1") if path.endswith("/events") and not p.startswith(f"{q}=")]
            url += "?" + "&".join(params)
            send(method, path, url, _mutated(rng, seed_of(method, path, url), body_value) if has_body else None, token=True)
    assert not failures, failures[:5]
    assert set(requested) == {(m, p) for m, p, _ in ops}
    assert c.get("/healthz").status_code == 200
    for aid in ("f", "sp"):  # whatever was accepted replays byte for byte
        r = c.post(f"/v1/analyses/{aid}/replay", headers=W)
        assert r.status_code == 404 or r.json()["ok"] is True, r.text[:300]
    # one successful delete (the fuzzed ones had no write token, a bad reason or an unknown id), then its id is a 404
    r = c.delete("/v1/analyses/f?force=true&reason=fuzz%20done", headers=W)
    assert r.status_code == 200 and r.json()["analysis"] == "f", r.text[:300]
    assert [c.get("/v1/analyses/f", headers=W).status_code, c.post("/v1/analyses/f/replay", headers=W).status_code] == [404, 404]
    assert [t["reason"] for t in c.get("/v1/deleted?analysis=f", headers=W).json()] == ["operator: fuzz done"]
