"""Issue 23 item 4: tokens scoped per project / analysis on every route family, /metrics behind a token,
rate limits (429 + Retry-After), stalled request bodies (408)."""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest

from deploysignal.service import ServiceSettings, TokenEntry, create_app, hash_token

from .conftest import ticks_of

W, R, K, M = "w-all", "r-all", "k-all", "m-all"
WX, RX, KX, MX, WG, WY = "w-x", "r-x", "k-x", "m-x", "w-glob", "w-y"


def _client(tmp_path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    tokens = [
        TokenEntry(name="all-w", sha256=hash_token(W), role="write"),
        TokenEntry(name="all-r", sha256=hash_token(R), role="read"),
        TokenEntry(name="all-k", sha256=hash_token(K), role="kayenta"),
        TokenEntry(name="all-m", sha256=hash_token(M), role="metrics"),
        TokenEntry(name="x-w", sha256=hash_token(WX), role="write", project="x"),
        TokenEntry(name="x-r", sha256=hash_token(RX), role="read", project="x"),
        TokenEntry(name="x-k", sha256=hash_token(KX), role="kayenta", project="x"),
        TokenEntry(name="x-m", sha256=hash_token(MX), role="metrics", project="x"),
        TokenEntry(name="glob-w", sha256=hash_token(WG), role="write", analyses=["x-*", "tx*"]),
        TokenEntry(name="y-w", sha256=hash_token(WY), role="write", project="y"),
    ]
    kw.setdefault("rate_limit_failures", None)  # the scope tests answer many 403s from one address
    st = ServiceSettings(store_url=f"sqlite:///{tmp_path / 'scope.db'}", tokens=tokens, create_store=True, **kw)
    return TestClient(create_app(st), raise_server_exceptions=False)


def _h(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def _kayenta_body(rev: str) -> dict:
    side = {"region": "default", "scope": f"app=a,rollouts-pod-template-hash={rev}", "step": 60, "start": "2026-12-07T03:00:00Z", "end": "2027-06-02T00:00:00Z"}
    return {"scopes": {"default": {"controlScope": {**side, "scope": "app=a,rollouts-pod-template-hash=stable"}, "experimentScope": side}},
            "thresholds": {"pass": 95, "marginal": 50}}


@pytest.fixture(scope="module")
def world(tmp_path_factory, step_sim):
    """Analyses and templates of projects x and y (created by the unscoped writer), executions of each."""
    sim, cfg = step_sim
    tmp = tmp_path_factory.mktemp("scope")
    c = _client(tmp)
    c.__enter__()
    cfgd = json.loads(cfg.to_json())
    ticks = ticks_of(sim.canary, 0, 30)
    for p in ("x", "y"):
        assert c.post("/v1/analyses", json={"id": f"{p}-a", "config": cfgd, "project": p}, headers=_h(W)).status_code == 201
        assert c.post(f"/v1/analyses/{p}-a/ticks", json={"ticks": ticks[:20]}, headers=_h(W)).status_code == 200
        assert c.put(f"/v1/templates/t{p}", json={"config": cfgd, "project": p, "window": 50}, headers=_h(W)).status_code == 200
    ex = {p: c.post("/v1/kayenta/canary", json={"analysisId": f"{p}-a", "revision": "r0", "thresholds": {"pass": 95, "marginal": 50}},
                    headers=_h(W)).json()["canaryExecutionId"] for p in ("x", "y")}
    yield c, cfgd, ticks, ex
    c.__exit__(None, None, None)


def _requests(p: str, tok: str, kay: str, cfgd: dict, ticks: list, ex: dict) -> dict[tuple[str, str], tuple[str, dict]]:
    """One request per (OpenAPI path, method) aimed at project ``p``'s resources: (url, httpx kwargs)."""
    h = _h(tok)
    return {
        ("/v1/analyses/{aid}", "get"): (f"/v1/analyses/{p}-a", {"headers": h}),
        ("/v1/analyses/{aid}/ticks", "post"): (f"/v1/analyses/{p}-a/ticks", {"headers": h, "json": {"ticks": ticks[20:21]}}),
        ("/v1/analyses/{aid}/audit", "get"): (f"/v1/analyses/{p}-a/audit", {"headers": h}),
        ("/v1/analyses/{aid}/view", "get"): (f"/v1/analyses/{p}-a/view", {"headers": h}),  # the dashboard (dashboard/_routes.py)
        ("/v1/analyses/{aid}/report", "get"): (f"/v1/analyses/{p}-a/report", {"headers": h}),
        ("/v1/analyses/{aid}/replay", "post"): (f"/v1/analyses/{p}-a/replay", {"headers": h}),
        ("/v1/analyses/{aid}/replays/{job}", "get"): (f"/v1/analyses/{p}-a/replays/rj-0000000000000000", {"headers": h}),
        ("/v1/analyses/{aid}/events", "get"): (f"/v1/analyses/{p}-a/events?max_events=1&timeout=1", {"headers": h}),
        ("/v1/analyses/{aid}/void", "post"): (f"/v1/analyses/{p}-a/void", {"headers": h, "json": {"reason": "scope test"}}),
        ("/v1/analyses/{aid}/cut", "post"): (f"/v1/analyses/{p}-a/cut", {"headers": h, "json": {"to_tick": 10, "reason": "scope test"}}),
        ("/v1/analyses", "post"): ("/v1/analyses", {"headers": h, "json": {"id": f"{p}-new", "config": cfgd, "project": p}}),
        ("/v1/templates/{tid}", "put"): (f"/v1/templates/t{p}", {"headers": h, "json": {"config": cfgd, "project": p, "window": 50}}),
        ("/v1/templates/{tid}", "get"): (f"/v1/templates/t{p}", {"headers": h}),
        ("/v1/argo/analyses/{aid}", "get"): (f"/v1/argo/analyses/{p}-a", {"headers": h}),
        ("/v1/argo/templates/{tid}/revisions/{revision}", "get"): (f"/v1/argo/templates/t{p}/revisions/r1?subject=ns.app", {"headers": h}),
        ("/v1/flagger/{hook}", "post"): ("/v1/flagger/rollout", {"json": {"name": "app", "namespace": "ns", "checksum": "c1",
                                                                          "metadata": {"token": tok, "template": f"t{p}"}}}),
        ("/v1/kayenta/canary", "post"): ("/v1/kayenta/canary", {"headers": h, "json": {"analysisId": f"t{p}", "revision": "r2", "thresholds": {"pass": 95, "marginal": 50}}}),
        ("/v1/kayenta/canary/{executionId}", "get"): (f"/v1/kayenta/canary/{ex[p]}", {"headers": h}),
        ("/kayenta/{key}/canary/{id}", "post"): (f"/kayenta/{kay}/canary/t{p}", {"json": _kayenta_body("r3")}),
        ("/kayenta/{key}/canary/{id}", "get"): (f"/kayenta/{kay}/canary/{ex[p]}", {}),
        ("/v1/analyses/{aid}", "delete"): (f"/v1/analyses/{p}-a?force=true&reason=scope%20test", {"headers": h}),
    }


#: routes that name no single analysis: how a scoped token is answered there
UNSCOPED_ROUTES = {
    ("/v1/analyses", "get"): "filtered",
    ("/v1/templates", "get"): "filtered",
    ("/kayenta/{key}/canaryConfig", "get"): "filtered",
    ("/metrics", "get"): "filtered",
    ("/v1/flagger/events", "get"): "refused",
    ("/v1/deleted", "get"): "refused",
    ("/kayenta/{key}/credentials", "get"): "no analysis data",
    ("/healthz", "get"): "no token",
    ("/v1/dashboard/sources", "get"): "no analysis data",
}


def test_scope_on_every_route(world):
    """Every operation of the OpenAPI document is either aimed at an analysis/template (then a project-x
    token is refused 403 on project y's, and not refused on project x's) or listed in UNSCOPED_ROUTES."""
    c, cfgd, ticks, ex = world
    ops = {(path, m) for path, item in c.app.openapi()["paths"].items() for m in item}
    theirs = _requests("y", WX, KX, cfgd, ticks, ex)
    assert ops == set(theirs) | set(UNSCOPED_ROUTES), "a route without a scope decision in this test"
    for op, (url, kw) in theirs.items():
        r = c.request(op[1].upper(), url, **kw)
        assert r.status_code == 403, (op, r.status_code, r.text)
        assert "scoped to project 'x'" in r.json()["detail"], (op, r.text)
        if op[0] != "/v1/analyses":  # only a create request names the project (the caller's own words)
            assert "project 'y'" not in r.json()["detail"], (op, r.text)  # y's project is not disclosed
    reader = _requests("y", RX, KX, cfgd, ticks, ex)
    for op, (url, kw) in reader.items():
        if op[1] == "get" or op[0].startswith("/v1/flagger"):
            assert c.request(op[1].upper(), url, **kw).status_code == 403, op
    # the same requests on project x's own resources pass the scope check
    mine = _requests("x", WX, KX, cfgd, ticks, ex)
    for op, (url, kw) in mine.items():
        if op in (("/v1/analyses/{aid}/void", "post"), ("/v1/analyses/{aid}", "delete")):
            continue  # checked last: they end an analysis
        r = c.request(op[1].upper(), url, **kw)
        assert r.status_code < 500 and r.status_code not in (401, 403), (op, r.status_code, r.text)
    assert c.get("/v1/analyses/x-new", headers=_h(RX)).json()["n_ticks"] == 0
    url, kw = mine[("/v1/analyses/{aid}/void", "post")]
    assert c.post(url, **kw).status_code == 200
    _, kw = mine[("/v1/analyses/{aid}", "delete")]
    assert c.delete("/v1/analyses/x-new?force=true&reason=scope%20test", **kw).status_code == 200  # x-a stays (the module's other tests use it)
    # nothing of project y was changed by the refused requests
    ya = c.get("/v1/analyses/y-a", headers=_h(R)).json()
    assert ya["n_ticks"] == 20 and ya["final"] is False
    assert c.get("/v1/analyses/y-new", headers=_h(R)).status_code == 404
    assert [a["analysis"] for a in c.get("/v1/templates/ty", headers=_h(R)).json()["revisions"]] == []


def test_lists_show_only_the_scope(world):
    c, *_ = world
    ids = {a["id"] for a in c.get("/v1/analyses", headers=_h(RX)).json()}
    assert ids and all(i.startswith("x-") or i.startswith("tx@") for i in ids), ids
    assert {a["id"] for a in c.get("/v1/analyses", headers=_h(R)).json()} >= {"x-a", "y-a"}  # unscoped: everything, as before scopes
    assert [t["id"] for t in c.get("/v1/templates", headers=_h(RX)).json()] == ["tx"]
    assert {e["id"] for e in c.get(f"/kayenta/{KX}/canaryConfig").json()} == {"tx"} | ids
    assert "y-a" in {e["id"] for e in c.get(f"/kayenta/{K}/canaryConfig").json()}
    r = c.get("/v1/flagger/events", headers=_h(RX))
    assert r.status_code == 403 and "unscoped token" in r.json()["detail"]
    assert c.get("/v1/flagger/events", headers=_h(R)).status_code == 200
    r = c.get("/v1/deleted", headers=_h(RX))  # tombstones keep no project
    assert r.status_code == 403 and "unscoped token" in r.json()["detail"]
    assert c.get("/v1/deleted", headers=_h(R)).status_code == 200


def test_metrics_needs_a_token_and_shows_the_scope(world):
    c, *_ = world
    r = c.get("/metrics")
    assert r.status_code == 401
    assert c.get("/metrics", headers=_h(K)).status_code == 403
    full = c.get("/metrics", headers=_h(M)).text
    assert 'deploysignal_analysis_ticks{analysis="y-a"}' in full and 'deploysignal_analysis_ticks{analysis="x-a"}' in full
    for tok in (MX, RX, WX):
        part = c.get("/metrics", headers=_h(tok)).text
        assert 'analysis="x-a"' in part and 'analysis="y-a"' not in part, tok
        assert "deploysignal_request_seconds_bucket" in part  # the service's own series (no analysis label)
    # a metrics token scrapes, nothing else
    for url in ("/v1/analyses", "/v1/analyses/x-a", "/v1/templates"):
        r = c.get(url, headers=_h(M))
        assert r.status_code == 403 and "only scrape /metrics" in r.json()["detail"]


def test_project_filled_in_and_glob_scope(world):
    c, cfgd, ticks, _ = world
    r = c.post("/v1/analyses", json={"id": "x-filled", "config": cfgd}, headers=_h(WX))
    assert r.status_code == 201
    assert c.get("/v1/analyses/x-filled", headers=_h(RX)).status_code == 200  # created in project x
    assert c.get("/v1/analyses/x-filled", headers=_h(WY)).status_code == 403
    r = c.post("/v1/analyses", json={"id": "y-other", "config": cfgd, "project": "y"}, headers=_h(WX))
    assert r.status_code == 403 and "project 'y'" in r.json()["detail"]
    # glob-scoped token: ids matching x-* (any project), nothing else
    assert c.post("/v1/analyses/x-a/ticks", json={"ticks": ticks[20:21]}, headers=_h(WG)).status_code in (200, 422)  # 422: x-a is void / tick already there
    r = c.post("/v1/analyses/y-a/ticks", json={"ticks": ticks[20:21]}, headers=_h(WG))
    assert r.status_code == 403 and "'x-*'" in r.json()["detail"]
    assert c.post("/v1/analyses", json={"id": "z-1", "config": cfgd}, headers=_h(WG)).status_code == 403
    assert c.post("/v1/analyses", json={"config": cfgd}, headers=_h(WG)).status_code == 403  # a generated id is outside x-*
    assert c.post("/v1/analyses", json={"id": "x-glob", "config": cfgd}, headers=_h(WG)).status_code == 201


def test_token_file_entries_keep_their_meaning(tmp_path):
    """An entry without project/analyses (0.4.0's format) is unscoped; scope fields are validated."""
    p = tmp_path / "t.yaml"
    p.write_text(f"tokens:\n  - {{name: old, role: write, sha256: {hash_token('a')}}}\n"
                 f"  - {{name: new, role: read, sha256: {hash_token('b')}, project: shop, analyses: ['shop-*'], rate_limit: 5/second}}\n"
                 f"  - {{name: m, role: metrics, sha256: {hash_token('c')}}}\n")
    st = ServiceSettings(tokens=ServiceSettings.read_tokens_file(p), store_url="sqlite:///:memory:")
    old, new = st.principal_of("a"), st.principal_of("b")
    assert not old.scoped and old.role == "write" and old.may("anything", "any")
    assert new.scoped and new.may("shop-1", "shop") and not new.may("shop-1", None) and not new.may("bank-1", "shop")
    assert st.principal_of("c").role == "metrics" and st.principal_of("d") is None
    from deploysignal._exceptions import ConfigError

    for bad in ("project: 'a b'", "analyses: []", "rate_limit: fast"):
        p.write_text(f"- {{name: x, role: read, sha256: {hash_token('a')}, {bad}}}\n")
        with pytest.raises(ConfigError):
            ServiceSettings.read_tokens_file(p)


def test_rate_limits_answer_429_with_retry_after(tmp_path, step_sim):
    sim, cfg = step_sim
    with _client(tmp_path, rate_limit_analysis="3/minute", rate_limit_token="1000/minute") as c:
        cfgd = json.loads(cfg.to_json())
        for aid in ("x-1", "x-2"):
            assert c.post("/v1/analyses", json={"id": aid, "config": cfgd}, headers=_h(WX)).status_code == 201
        ticks = ticks_of(sim.canary, 0, 10)
        codes = [c.post("/v1/analyses/x-1/ticks", json={"ticks": ticks[i : i + 1]}, headers=_h(WX)).status_code for i in range(3)]
        assert codes == [200, 200, 200]
        assert [c.get("/v1/analyses/x-1", headers=_h(RX)).status_code for _ in range(3)] == [200, 200, 200]  # reads: their own budget
        r = c.get("/v1/analyses/x-1", headers=_h(RX))
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60 and "analysis 'x-1'" in r.json()["detail"]
        assert c.post("/v1/analyses/x-1/ticks", json={"ticks": ticks[3:4]}, headers=_h(WX)).status_code == 200  # writes are not behind readers
        assert c.get("/v1/analyses/x-1", headers=_h(R)).status_code == 429  # per analysis, whoever asks
        assert c.post("/v1/analyses/x-2/ticks", json={"ticks": ticks[:1]}, headers=_h(WX)).status_code == 200  # another analysis is not limited
        assert c.get("/v1/analyses/x-1/audit", headers=_h(R)).status_code == 429
        assert c.get("/v1/analyses", headers=_h(R)).status_code == 200
        assert "deploysignal_requests_rate_limited_total 3.0" in c.get("/metrics", headers=_h(M)).text
        assert c.get("/v1/analyses/x-1", headers=_h(R)).status_code == 429
        assert c.app.state.manager.store.n_ticks("x-1") == 4
    # per token, with a token entry's own limit replacing the default
    tokens = [TokenEntry(name="slow", sha256=hash_token("s"), role="read", rate_limit="2/minute"), TokenEntry(name="w", sha256=hash_token("w"), role="write")]
    st = ServiceSettings(store_url=f"sqlite:///{tmp_path / 'rl.db'}", tokens=tokens, rate_limit_token="3/minute", rate_limit_analysis=None, create_store=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    with TestClient(create_app(st), raise_server_exceptions=False) as c:
        assert [c.get("/v1/analyses", headers=_h("s")).status_code for _ in range(3)] == [200, 200, 429]
        assert [c.get("/v1/analyses", headers=_h("w")).status_code for _ in range(4)] == [200, 200, 200, 429]
        r = c.post("/v1/flagger/rollout", json={"name": "a", "namespace": "n", "metadata": {"token": "s", "analysis": "none"}})
        assert r.status_code == 429 and "token 'slow'" in r.json()["detail"]


def test_stalled_body_gets_408():
    """A client that sends headers and then stops (or trickles) is answered 408 after body_timeout."""
    from deploysignal.service._app import BodyLimit

    sent: list = []

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app ran on a body that never arrived")

    async def receive():
        await asyncio.sleep(3600)

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/analyses/a/ticks", "headers": [(b"content-length", b"100")]}
    asyncio.run(asyncio.wait_for(BodyLimit(app, 1 << 20, timeout=0.2)(scope, receive, send), 5))
    assert sent[0]["status"] == 408 and b"not received within 0.2 s" in sent[1]["body"]


def test_stalled_request_head_is_closed(monkeypatch):
    """uvicorn keeps a connection that never completes its request head open for ever; serve's protocol
    closes it after the head timeout, and serves a complete request on another connection."""
    import socket
    import threading
    import time

    import uvicorn

    from deploysignal.service._timeouts import HEADER_TIMEOUT_ENV, PROTOCOL

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "0.5")
    server = uvicorn.Server(uvicorn.Config(app, http=PROTOCOL, lifespan="off", log_level="error", timeout_keep_alive=30))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    conns: list[socket.socket] = []
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        stalled = socket.create_connection(("127.0.0.1", port))
        conns.append(stalled)
        stalled.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # head never finished
        stalled.settimeout(5)
        t0 = time.monotonic()
        assert stalled.recv(100) == b""  # closed by the server
        assert 0.4 < time.monotonic() - t0 < 4
        ok = socket.create_connection(("127.0.0.1", port))
        conns.append(ok)
        ok.settimeout(5)
        ok.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.recv(1000).startswith(b"HTTP/1.1 200")
        time.sleep(0.8)  # idle after a response: the head timer (0.5 s) closes it before keep-alive's 30 s
        assert ok.recv(100) == b""
    finally:
        for cn in conns:
            cn.close()
        server.should_exit = True
        th.join(10)
        sock.close()
