"""The Prometheus source against a real Prometheus (Debian package): authentication and TLS through a
reverse proxy, query validation at creation, backfill after downtime, the poller's terminal state, and
per-arm counters and histograms with exact counts."""

from __future__ import annotations

import json
import logging
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from typer.testing import CliRunner

from deploysignal.calibration import compile_baseline
from deploysignal.cli import app as cli_app
from deploysignal.sources import Connection, PrometheusSource, PrometheusSplitSource, PromUnavailable, SecretPolicy
from deploysignal.telemetry import Frame

from ._external import Prometheus
from ._prom_stack import AuthProxy, RegistryExporter, make_ca
from ._proc import free_port
from .conftest import R, W, make_client

pytestmark = pytest.mark.integration

EDGES = [10.0, 50.0, 100.0, 250.0, 500.0]
ARMS = {"canary": "c1", "stable": "s1"}
PODS = {"c1": ["c-0"], "s1": ["s-0", "s-1"]}
Q = {"p99_latency_ms": 'ds_gauge{signal="p99_latency_ms"}', "error_rate": 'ds_gauge{signal="error_rate"}'}
TOKEN = "s3cret-token-value"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("promstack")
    reg = CollectorRegistry()
    g = Gauge("ds_gauge", "signal values", ["signal"], registry=reg)
    g.labels("p99_latency_ms").set(100.0)
    g.labels("error_rate").set(0.01)
    two = Gauge("ds_two", "two series", ["pod"], registry=reg)
    two.labels("a").set(1.0)
    two.labels("b").set(2.0)
    lab = ["rollouts_pod_template_hash", "pod"]
    metrics = {
        "requests": Counter("ds_requests", "requests", lab, registry=reg),
        "errors": Counter("ds_errors", "errors", lab, registry=reg),
        "latency": Histogram("ds_latency_ms", "latency", lab, buckets=EDGES, registry=reg),
    }
    for h, pods in PODS.items():
        for p in pods:
            for m in metrics.values():
                m.labels(h, p)
    exp = RegistryExporter(reg)
    prom = Prometheus(tmp, exp.port, free_port(), ready="ds_gauge")
    rng = np.random.default_rng(0)
    cfg = compile_baseline(Frame(np.arange(2880.0) * 60, rng.normal(size=(2880, 2)) * [5, 0.002] + [100, 0.01], tuple(Q)))
    yield SimpleNamespace(prom=prom, exp=exp, reg=reg, metrics=metrics, cfg=json.loads(cfg.to_json()), started=time.time())
    prom.stop()
    exp.stop()


def _wait(pred, timeout=30.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout} s")


# ---------------------------------------------------------------------- authentication and TLS
def test_bearer_basic_header_and_secret_ref_through_an_authenticating_proxy(stack, tmp_path, monkeypatch, caplog):
    sdir = tmp_path / "secrets"
    (sdir / "flagger").mkdir(parents=True)
    (sdir / "pw").write_text("hunter2\n")
    (sdir / "flagger" / "username").write_text("svc")
    (sdir / "flagger" / "password").write_text("hunter2")
    (sdir / "apikey").write_text("k-123")
    monkeypatch.setenv("DEPLOYSIGNAL_SECRET_PROM", TOKEN)
    monkeypatch.setenv("PLAIN_VAR", TOKEN)
    policy = SecretPolicy(secrets_dir=str(sdir), env_prefix="DEPLOYSIGNAL_SECRET_", restrict_files=True)
    now = time.time()
    cases = [
        (dict(bearer=TOKEN), {"bearer": {"env": "DEPLOYSIGNAL_SECRET_PROM"}}, []),
        (dict(basic=("svc", "hunter2")), {"basic": {"username": "svc", "password": {"file": str(sdir / "pw")}}}, []),
        (dict(basic=("svc", "hunter2")), {"secret_ref": {"path": str(sdir / "flagger")}}, []),
        (dict(header=("X-Api-Key", "k-123")), None, [{"key": "X-Api-Key", "value_from": {"file": str(sdir / "apikey")}}]),
    ]
    caplog.set_level(logging.DEBUG)
    for proxy_kw, auth, headers in cases:
        proxy = AuthProxy(stack.prom.url, **proxy_kw)
        try:
            conn = Connection.model_validate({"address": proxy.url, "authentication": auth, "headers": headers})
            src = PrometheusSource("", Q, connection=conn, policy=policy)
            assert src.validate(now) == []
            assert src.fetch([math.floor(now)])[0]["values"] == {"p99_latency_ms": 100.0, "error_rate": 0.01}
            src.close()
            bare = PrometheusSource(proxy.url, Q)
            with pytest.raises(Exception, match="HTTP 401.*check prometheus.authentication"):
                bare.validate(now)
            bare.close()
        finally:
            proxy.stop()
    # the service's policy: no files outside its directory, no environment variable without the prefix
    for auth, msg in (({"bearer": {"env": "PLAIN_VAR"}}, "must start with 'DEPLOYSIGNAL_SECRET_'"),
                      ({"bearer": {"file": str(tmp_path / "elsewhere")}}, "outside the service's secrets directory"),
                      ({"bearer": {"env": "DEPLOYSIGNAL_SECRET_UNSET"}}, "is not set")):
        with pytest.raises(Exception, match=msg):
            Connection.model_validate({"address": stack.prom.url, "authentication": auth}).client(policy)
    with pytest.raises(Exception, match="secret files are disabled"):
        Connection.model_validate({"address": stack.prom.url, "authentication": {"bearer": {"file": str(sdir / "pw")}}}).client(
            SecretPolicy(env_prefix="DEPLOYSIGNAL_SECRET_", restrict_files=True))
    for bad in ({"sigv4": {"region": "eu-west-1"}}, {"oauth2": {"tokenUrl": "https://x"}}):
        with pytest.raises(Exception, match="not supported"):
            Connection.model_validate({"address": stack.prom.url, "authentication": bad})
    assert TOKEN not in caplog.text and "hunter2" not in caplog.text and "k-123" not in caplog.text


def test_tls_with_a_test_ca_client_certificate_and_insecure(stack, tmp_path, caplog):
    pki = make_ca(tmp_path / "pki")
    proxy = AuthProxy(stack.prom.url, tls=(pki["server.crt"], pki["server.key"], pki["ca.crt"]))  # mutual TLS
    now = time.time()
    client_cert = {"cert_file": str(pki["client.crt"]), "key_file": str(pki["client.key"])}
    try:
        def src(**kw):
            return PrometheusSource("", Q, connection=Connection.model_validate({"address": proxy.url, **kw}), retries=0)

        ok = src(tls={"ca_file": str(pki["ca.crt"]), **client_cert})
        assert ok.fetch([math.floor(now)])[0]["values"]["p99_latency_ms"] == 100.0
        ok.close()
        tls = Connection.model_validate({"address": proxy.url, "tls": {"ca_file": str(pki["ca.crt"]), **client_cert}})
        tls.client(SecretPolicy(secrets_dir=str(pki["ca.crt"].parent), restrict_files=True)).close()  # the service's policy: files in its directory
        with pytest.raises(Exception, match=r"tls.ca_file: file .* is outside the service's secrets directory"):
            tls.client(SecretPolicy(secrets_dir=str(tmp_path / "elsewhere"), restrict_files=True))
        for kw in ({}, {"tls": {"ca_file": str(pki["ca.crt"])}}, {"tls": client_cert}):  # unknown CA, no client cert, unknown CA
            s = src(**kw)
            with pytest.raises(PromUnavailable):
                s.fetch([math.floor(now)])
            s.close()
        with caplog.at_level(logging.WARNING):
            s = src(insecure=True, tls=client_cert)
            assert s.fetch([math.floor(now)])[0]["values"]["error_rate"] == 0.01
            s.close()
        assert "TLS certificate verification is disabled" in caplog.text
    finally:
        proxy.stop()
    with pytest.raises(Exception, match="cert_file and key_file go together"):
        Connection.model_validate({"address": "https://x", "tls": {"cert_file": "a"}})


# ---------------------------------------------------------------------- creation, poller, terminal state
def test_queries_validated_at_creation(stack, tmp_path):
    base = {"config": stack.cfg, "window": 480}

    def prom(**kw):
        return {"address": stack.prom.url, "interval_seconds": 1, "settle_seconds": 1.5, "canary": dict(Q), **kw}

    with make_client(tmp_path) as c:
        r = c.post("/v1/analyses", json={**base, "id": "two", "prometheus": prom(canary={**Q, "p99_latency_ms": "ds_two"})}, headers=W)
        assert r.status_code == 422, r.text
        d = r.json()["detail"]
        assert "prometheus.canary.p99_latency_ms" in d and "'ds_two' returns 2 series" in d and "pod=['a', 'b']" in d
        r = c.post("/v1/analyses", json={**base, "id": "bad", "prometheus": prom(canary={**Q, "error_rate": "sum(ds_gauge"})}, headers=W)
        assert r.status_code == 422 and "refused by prometheus" in r.json()["detail"] and "bad_data" in r.json()["detail"], r.text
        r = c.post("/v1/analyses", json={**base, "id": "down", "prometheus": prom(address=f"http://127.0.0.1:{free_port()}")}, headers=W)
        assert r.status_code == 502 and "cannot be reached" in r.json()["detail"], r.text
        r = c.post("/v1/analyses", json={**base, "id": "sigv4", "prometheus": prom(authentication={"sigv4": {}})}, headers=W)
        assert r.status_code == 422 and "not supported" in r.text
        assert [a["id"] for a in c.get("/v1/analyses", headers=R).json()] == []  # nothing was stored
        r = c.post("/v1/analyses", json={**base, "id": "absent", "prometheus": prom(canary={**Q, "error_rate": "ds_gauge{signal='nope'}"}, max_ticks=1)}, headers=W)
        assert r.status_code == 201, r.text
        assert r.json()["warnings"] == ["prometheus.canary.error_rate: query \"ds_gauge{signal='nope'}\" returns no series now (absent); its ticks are missing until it does"]
    # the same checks from the command line
    for spec, code, text in ((prom(), 0, "ok:"), (prom(canary={"x": "ds_two"}), 2, "pod=['a', 'b']"),
                             (prom(address=f"http://127.0.0.1:{free_port()}"), 5, "cannot be reached")):
        (tmp_path / "p.yaml").write_text(json.dumps(spec))  # JSON is YAML
        res = CliRunner().invoke(cli_app, ["prometheus", "check", str(tmp_path / "p.yaml")])
        assert res.exit_code == code and text in res.output, res.output


def test_poller_through_bearer_proxy_then_server_goes_away(stack, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DEPLOYSIGNAL_SECRET_PROM", TOKEN)
    proxy = AuthProxy(stack.prom.url, bearer=TOKEN)
    spec = {"address": proxy.url, "interval_seconds": 1, "settle_seconds": 1.5, "canary": Q, "failing_after": 2, "stop_after_failures": 8}
    caplog.set_level(logging.INFO)
    try:
        with make_client(tmp_path, prometheus_allow=[proxy.url]) as c:
            r = c.post("/v1/analyses", json={"config": stack.cfg, "id": "noauth", "prometheus": spec}, headers=W)
            assert r.status_code == 422 and "HTTP 401" in r.json()["detail"] and "prometheus.authentication" in r.json()["detail"], r.text
            spec["authentication"] = {"bearer": {"env": "DEPLOYSIGNAL_SECRET_PROM"}}
            assert c.post("/v1/analyses", json={"config": stack.cfg, "id": "authd", "prometheus": spec}, headers=W).status_code == 201
            _wait(lambda: c.get("/v1/analyses/authd", headers=R).json()["n_ticks"] >= 3)
            body = c.get("/v1/analyses/authd", headers=R)
            assert body.json()["poller"]["state"] == "running" and body.json()["poller"]["consecutive_failures"] == 0
            texts = [body.text, c.get("/v1/analyses", headers=R).text, c.get("/v1/analyses/authd/audit", headers=R).text]
            # an outage: failing while it lasts, then the missed grid times are backfilled in order
            port = proxy.server.server_address[1]
            proxy.stop()
            n_out = c.get("/v1/analyses/authd", headers=R).json()["n_ticks"]
            _wait(lambda: c.get("/v1/analyses/authd", headers=R).json()["poller"]["state"] == "failing", every=0.1)
            time.sleep(1.0)
            assert c.get("/v1/analyses/authd", headers=R).json()["n_ticks"] <= n_out + 1  # (a poll may have been in flight)
            proxy = AuthProxy(stack.prom.url, bearer=TOKEN, port=port)
            p = _wait(lambda: (b := c.get("/v1/analyses/authd", headers=R).json()["poller"])["state"] == "running" and b["backfilled_ticks"] >= 2 and b)
            assert p["consecutive_failures"] == 0 and p["reason"] == "polling"
            gates = [json.loads(ln)["record"] for ln in c.get("/v1/analyses/authd/audit", headers=R).text.splitlines()[1:]]
            ts = [g["timestamp"] for g in gates if g["family"] == "gate"]
            assert all(b - a == 1.0 for a, b in zip(ts, ts[1:])), ts  # the outage left no gap and nothing twice
            proxy.stop()  # the server goes away for good
            seen = set()

            def stopped():
                p = c.get("/v1/analyses/authd", headers=R).json()["poller"]
                seen.add(p["state"])
                return p if p["state"] == "stopped" else None

            p = _wait(stopped, timeout=60, every=0.1)
            assert "failing" in seen  # reported while it kept trying
            assert p["reason"] == "prometheus failed 8 polls in a row; nothing more is ingested" and p["consecutive_failures"] == 8
            assert "PromUnavailable" in p["last_error"] and p["since"].endswith("Z")
            v1 = c.get("/v1/analyses/authd", headers=R).json()
            time.sleep(2.5)
            v2 = c.get("/v1/analyses/authd", headers=R).json()
            assert v2["n_ticks"] == v1["n_ticks"] and v2["verdict"] in ("pending", "extend")  # nothing ingested after it stopped
        assert all(TOKEN not in t for t in texts) and TOKEN not in caplog.text
    finally:
        proxy.stop()


def test_backfill_after_the_service_was_down(stack, tmp_path):
    store = f"sqlite:///{tmp_path / 'bf.db'}"
    spec = {"address": stack.prom.url, "interval_seconds": 1, "settle_seconds": 1.5, "canary": Q}
    with make_client(tmp_path, store_url=store) as c:
        assert c.post("/v1/analyses", json={"config": stack.cfg, "id": "bf", "prometheus": spec}, headers=W).status_code == 201
        _wait(lambda: c.get("/v1/analyses/bf", headers=R).json()["n_ticks"] >= 3)
    down_from = time.time()
    time.sleep(4.0)  # the poller is down for >= 4 grid steps
    with make_client(tmp_path, store_url=store) as c:
        back = time.time()
        k = int(back) - int(down_from)  # grid times that passed while no poller ran
        p = _wait(lambda: (b := c.get("/v1/analyses/bf", headers=R).json())["poller"]["backfilled_ticks"] >= k and b["poller"])
        assert k >= 4 and p["skipped_ticks"] == 0 and p["state"] == "running"
        lines = [json.loads(ln)["record"] for ln in c.get("/v1/analyses/bf/audit", headers=R).text.splitlines()[1:]]
    ts = [r["timestamp"] for r in lines if r["family"] == "gate"]
    assert len(ts) >= 3 + k
    assert all(b - a == 1.0 for a, b in zip(ts, ts[1:])), ts  # every grid time once, in order: none missed, none twice
    src = PrometheusSource(stack.prom.url, Q)  # a backfilled tick (query_range) equals an instant query at its time
    gap = [t for t in ts if down_from < t < back]
    assert gap and src.fetch([gap[0]])[0]["values"] == {"p99_latency_ms": 100.0, "error_rate": 0.01}
    src.close()


# ---------------------------------------------------------------------- per-arm counters and histograms
SPLIT = {"interval_seconds": 2, "settle_seconds": 1.5, "arm_label": "rollouts_pod_template_hash", "arms": ARMS, "units": "ds_requests_total",
         "events": {"errors": 'ds_errors_total{job="sim"}'}, "histograms": {"latency_ms": {"buckets": "ds_latency_ms_bucket", "edges": EDGES}}}


def _raw_first_seen(prom_url: str, selector: str, value: float) -> float:
    """Timestamp of the first scrape in which ``selector`` (one series) had ``value``."""
    import httpx

    def look():
        r = httpx.get(prom_url + "/api/v1/query", params={"query": f"{selector}[2m]"}, timeout=5).json()["data"]["result"]
        return next((float(t) for t, v in r[0]["values"] if float(v) == value), None) if r else None

    return _wait(look, timeout=30, every=0.2)


def test_split_source_exact_counts_per_arm(stack, tmp_path):
    m, dt = stack.metrics, 2.0
    time.sleep(max(0.0, stack.started + 2 * dt + 1 - time.time()))
    rng = np.random.default_rng(7)
    expected: dict[float, dict] = {}

    def add(t, arm, key, val):
        e = expected.setdefault(t, {a: {"units": 0, "errors": 0, "latency_ms": [0] * 6} for a in ARMS})
        if key == "latency_ms":
            e[arm][key] = [a + b for a, b in zip(e[arm][key], val)]
        elif e[arm][key] is not None:
            e[arm][key] += val

    total_c0 = m["requests"].labels("c1", "c-0")._value.get()
    phases = [{"c-0": 240, "s-0": 300, "s-1": 200}, {"c-0": 17, "s-0": 410, "s-1": 0}]
    first_t = math.ceil(time.time() / dt) * dt
    for ph in phases:
        lat = {}
        with stack.exp.lock:  # a scrape sees the whole phase or none of it
            for pod, n in ph.items():
                h = "c1" if pod.startswith("c") else "s1"
                m["requests"].labels(h, pod).inc(n)
                errs = int(rng.integers(0, 5))
                m["errors"].labels(h, pod).inc(errs)
                vals = np.concatenate([rng.choice([1.0, 10.0, 10.5, 50.0, 99.0, 100.0, 250.0, 499.0, 500.0, 800.0], size=n)])
                for v in vals:
                    m["latency"].labels(h, pod).observe(float(v))
                lat[pod] = (n, errs, np.bincount(np.searchsorted(EDGES, vals, side="left"), minlength=6).tolist())
        total_c0 += ph["c-0"]
        t = math.ceil(_raw_first_seen(stack.prom.url, 'ds_requests_total{pod="c-0"}', total_c0) / dt) * dt
        for pod, (n, errs, b) in lat.items():
            arm = "canary" if pod.startswith("c") else "stable"
            add(t, arm, "units", n)
            add(t, arm, "errors", errs)
            add(t, arm, "latency_ms", b)
        time.sleep(dt)
    # a restarted canary pod: its request counter starts again from 0
    with stack.exp.lock:
        m["requests"].remove("c1", "c-0")
        m["requests"].labels("c1", "c-0").inc(3)
    t_reset = math.ceil(_raw_first_seen(stack.prom.url, 'ds_requests_total{pod="c-0"}', 3.0) / dt) * dt
    last_t = t_reset + dt
    _wait(lambda: time.time() > last_t + 1.5)

    spec = {"address": stack.prom.url, **SPLIT, "events": {"errors": "ds_errors_total"}}
    src = PrometheusSplitSource(spec)
    assert src.validate(time.time()) == []
    got = src.read(src.grid(first_t, last_t))
    ticks = got.ticks
    src.close()

    def iso(t):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    # the restarted pod's tick is a gap (canary units unknown); every other grid time is a tick
    assert [g["timestamp"] for g in got.gaps] == [iso(t_reset)] and got.gaps[0]["reason"].startswith("units of canary unknown")
    grid = [t for t in src.grid(first_t, last_t) if t != t_reset]
    assert [t["timestamp"] for t in ticks] == [iso(t) for t in grid]
    zero = {"units": 0, "errors": 0, "latency_ms": [0] * 6}
    for t, tick in zip(grid, ticks):
        for arm in ARMS:
            want = expected.get(t, {}).get(arm, zero)
            have = tick["arms"][arm]
            assert have["units"] == want["units"], (t, arm, have, want)
            assert have["events"] == {"errors": want["errors"]}, (t, arm)
            assert have["buckets"] == {"latency_ms": want["latency_ms"]}, (t, arm)
        assert tick["tier"] is None
    assert sum(t["arms"]["stable"]["units"] for t in ticks) == 910  # the ticks add up to the counters' increase
    assert sum(sum(t["arms"]["canary"]["buckets"]["latency_ms"]) for t in ticks) == 257

    # the same through the CLI: a JSONL file of split ticks
    sp = tmp_path / "split.json"
    sp.write_text(json.dumps(spec))
    out = tmp_path / "ticks.jsonl"
    res = CliRunner().invoke(cli_app, ["prometheus", "split-ticks", str(sp), "--start", str(first_t), "--end", str(last_t), "-o", str(out)])
    assert res.exit_code == 0 and f"gap {iso(t_reset)}: units of canary unknown" in res.output, res.output
    assert [json.loads(ln) for ln in out.read_text().splitlines()] == ticks
    assert CliRunner().invoke(cli_app, ["prometheus", "check", str(sp)]).exit_code == 0


def test_split_validation_names_what_is_wrong(stack, tmp_path):
    now = time.time()
    bad_edges = {"address": stack.prom.url, **SPLIT, "histograms": {"latency_ms": {"buckets": "ds_latency_ms_bucket", "edges": [10, 50, 100]}}}
    src = PrometheusSplitSource(bad_edges)
    with pytest.raises(Exception, match=r"latency_ms.*canary arm: bucket bounds le=\['\+Inf', '10.0', '100.0', '250.0', '50.0', '500.0'\] are not the edges \[10, 50, 100\]"):
        src.validate(now)
    src.close()
    other = {"address": stack.prom.url, **SPLIT, "arms": {"canary": "zz9", "stable": "s1"}}
    src = PrometheusSplitSource(other)
    warnings = src.validate(now)
    src.close()
    assert len(warnings) == 3 and all("rollouts_pod_template_hash='zz9' (canary)" in w for w in warnings)
    with pytest.raises(Exception, match="not a series selector"):
        PrometheusSplitSource({**SPLIT, "address": stack.prom.url, "events": {"errors": "rate(ds_errors_total[1m])"}})
    sp = tmp_path / "bad.json"
    sp.write_text(json.dumps(bad_edges))
    res = CliRunner().invoke(cli_app, ["prometheus", "check", str(sp)])
    assert res.exit_code == 2 and "bucket bounds" in res.output
    sp.write_text(json.dumps({**SPLIT, "address": stack.prom.url, "units": 'ds_requests_total{pod=~"("}'}))  # a regex Prometheus refuses
    res = CliRunner().invoke(cli_app, ["prometheus", "split-ticks", str(sp), "--start", "2026-12-07T00:00:00Z", "--end", "2026-12-07T00:00:10Z"])
    assert res.exit_code == 2 and "refused" in res.output and "bad_data" in res.output, res.output


def test_rotated_secret_is_read_again_after_a_401(stack, tmp_path):
    sdir = tmp_path / "secrets"
    sdir.mkdir()
    (sdir / "token").write_text("first-token\n")
    proxy = AuthProxy(stack.prom.url, bearer="first-token")
    port = proxy.server.server_address[1]
    spec = {"address": proxy.url, "interval_seconds": 1, "settle_seconds": 1.5, "canary": Q, "authentication": {"bearer": {"file": str(sdir / "token")}}}
    try:
        with make_client(tmp_path, secrets_dir=str(sdir), prometheus_allow=[proxy.url]) as c:
            assert c.post("/v1/analyses", json={"config": stack.cfg, "id": "rot", "prometheus": spec}, headers=W).status_code == 201
            _wait(lambda: c.get("/v1/analyses/rot", headers=R).json()["n_ticks"] >= 2)
            proxy.stop()
            (sdir / "token").write_text("second-token\n")  # the Secret is rotated: server and file change together
            proxy = AuthProxy(stack.prom.url, bearer="second-token", port=port)
            _wait(lambda: c.get("/v1/analyses/rot", headers=R).json()["poller"]["consecutive_failures"] >= 1, every=0.1)
            n = c.get("/v1/analyses/rot", headers=R).json()["n_ticks"]
            p = _wait(lambda: (b := c.get("/v1/analyses/rot", headers=R).json())["n_ticks"] >= n + 2 and b["poller"])
            assert p["state"] == "running" and p["consecutive_failures"] == 0
            assert any(h.get("authorization") == "Bearer second-token" for h in proxy.seen)
    finally:
        proxy.stop()


def test_two_sample_pull_reads_canary_and_control(stack, tmp_path):
    ctl = {"p99_latency_ms": 'ds_gauge{signal="p99_latency_ms"} * 1.5', "error_rate": 'ds_gauge{signal="error_rate"}'}
    spec = {"address": stack.prom.url, "interval_seconds": 1, "settle_seconds": 1.5, "canary": Q, "control": ctl, "max_ticks": 3}
    with make_client(tmp_path) as c:
        r = c.post("/v1/analyses", json={"config": stack.cfg, "id": "ts", "mode": "two-sample", "prometheus": spec}, headers=W)
        assert r.status_code == 201 and r.json()["warnings"] == [], r.text
        p = _wait(lambda: (b := c.get("/v1/analyses/ts", headers=R).json())["poller"]["state"] == "stopped" and b["poller"])
        assert p["reason"] == "max_ticks reached (3)"
        ticks = c.app.state.manager.store.ticks("ts", 0, 3)
    assert [t["values"] for t in ticks] == [{"p99_latency_ms": 100.0, "error_rate": 0.01}] * 3
    assert [t["control"] for t in ticks] == [{"p99_latency_ms": 150.0, "error_rate": 0.01}] * 3


# ---------------------------------------------------------------------- review findings: lazily created series, settling, backfill
def test_lazily_created_error_series_are_reported_missing_never_counted_as_zero(stack, tmp_path):
    # the docs' old example: an error counter per code, created by the client library at its first
    # error. Canary errors only ever appear in such new series; the stable's series existed before.
    req = Counter("ds_lazy_req", "r", ["h", "pod"], registry=stack.reg)
    err = Counter("ds_lazy_err", "e", ["h", "pod", "code"], registry=stack.reg)
    with stack.exp.lock:
        req.labels("c1", "c-0"), req.labels("s1", "s-0"), err.labels("s1", "s-0", "500")
    spec = {"address": stack.prom.url, "interval_seconds": 2, "settle_seconds": 1.5, "arm_label": "h", "arms": ARMS,
            "units": "ds_lazy_req_total", "events": {"errors": "ds_lazy_err_total"}}
    _raw_first_seen(stack.prom.url, 'ds_lazy_err_total{h="s1"}', 0.0)
    sp = tmp_path / "lazy.yaml"
    sp.write_text(json.dumps(spec))
    res = CliRunner().invoke(cli_app, ["prometheus", "check", str(sp)])
    assert res.exit_code == 0 and "no series with h='c1' (canary)" in res.output and "initialise counters at 0" in res.output, res.output
    time.sleep(2.0)  # the initialised series exist a whole tick before the first grid time read
    t0 = time.time()
    for i in range(8):
        with stack.exp.lock:
            req.labels("c1", "c-0").inc(10), req.labels("s1", "s-0").inc(10)
            err.labels("s1", "s-0", "500").inc(1)
            if i in (2, 5):
                err.labels("c1", "c-0", f"50{i}").inc(3)
        time.sleep(1)
    appeared = [math.ceil(_raw_first_seen(stack.prom.url, f'ds_lazy_err_total{{code="50{i}"}}', 3.0) / 2) * 2 for i in (2, 5)]
    res = CliRunner().invoke(cli_app, ["prometheus", "check", str(sp)])
    assert "series with code='502' exist for canary but not for stable now" in res.output, res.output
    end = math.ceil((time.time() + 1) / 2) * 2  # after the last increment's scrape
    _wait(lambda: time.time() > end + 1.6)
    src = PrometheusSplitSource(spec)
    got = src.read(src.grid(t0, end))
    src.close()
    canary = {t["timestamp"]: t["arms"]["canary"]["events"].get("errors") for t in got.ticks}
    missing = {m["timestamp"]: m["reason"] for m in got.missing if m["arm"] == "canary"}
    iso = {t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in appeared}
    # the ticks where the canary's errors happened are missing with the reason, never a count of 0
    for t in appeared:
        assert canary[iso[t]] is None and "appears in the tick" in missing[iso[t]], (iso[t], canary, missing)
    assert all(v in (None, 0) for v in canary.values()) and set(missing) == {ts for ts, v in canary.items() if v is None}
    assert sum(t["arms"]["stable"]["events"]["errors"] for t in got.ticks) == 8 and not got.gaps, (got.gaps, [(t["timestamp"], t["arms"]) for t in got.ticks], t0, end)  # initialised: every error counted
    res = CliRunner().invoke(cli_app, ["prometheus", "split-ticks", str(sp), "--start", str(t0), "--end", str(end)])
    assert res.exit_code == 0 and f"missing {iso[appeared[0]]} canary errors: series" in res.output, res.output


def test_unsettled_times_are_refused_and_a_settled_read_does_not_change(stack, tmp_path):
    spec = {"address": stack.prom.url, **SPLIT}
    sp = tmp_path / "s.json"
    sp.write_text(json.dumps(spec))
    now = time.time()
    future = math.floor(now / 2) * 2 + 4  # two grid times ahead (the reviewer's repro)
    res = CliRunner().invoke(cli_app, ["prometheus", "split-ticks", str(sp), "--start", str(future - 8), "--end", str(future)])
    assert res.exit_code == 2 and "has not settled" in res.output and res.stdout.strip() == "", res.output
    stop = False

    def load():
        while not stop:
            with stack.exp.lock:
                stack.metrics["requests"].labels("c1", "c-0").inc(7)
                stack.metrics["requests"].labels("s1", "s-0").inc(5)
            time.sleep(0.05)

    import threading

    th = threading.Thread(target=load, daemon=True)
    th.start()
    try:
        t = math.ceil((time.time() + 2) / 2) * 2
        _wait(lambda: time.time() >= t + 1.5, every=0.02)  # read as soon as it has settled
        src = PrometheusSplitSource(spec)
        early = src.read([t - 2, t])
        time.sleep(3)
        later = src.read([t - 2, t])
        src.close()
    finally:
        stop = True
        th.join()
    assert early == later and early.ticks[-1]["arms"]["canary"]["units"] > 0, (early, later)


def test_stored_live_and_backfilled_ticks_equal_a_later_read_with_values_that_vary(stack, tmp_path):
    ramp = Gauge("ds_ramp", "a value that changes between scrapes", registry=stack.reg)
    t_start = time.time()
    stop = False

    def tick():
        while not stop:
            with stack.exp.lock:
                ramp.set(100.0 + round(time.time() - t_start, 2))
            time.sleep(0.05)

    import threading

    th = threading.Thread(target=tick, daemon=True)
    th.start()
    q = {"p99_latency_ms": "ds_ramp", "error_rate": Q["error_rate"]}
    check = PrometheusSource(stack.prom.url, q)
    _wait(lambda: check.validate(time.time()) == [])
    check.close()
    store = f"sqlite:///{tmp_path / 'vr.db'}"
    spec = {"address": stack.prom.url, "interval_seconds": 1, "settle_seconds": 1.5, "canary": q}
    try:
        with make_client(tmp_path, store_url=store) as c:
            assert c.post("/v1/analyses", json={"config": stack.cfg, "id": "vr", "prometheus": spec}, headers=W).status_code == 201
            _wait(lambda: c.get("/v1/analyses/vr", headers=R).json()["n_ticks"] >= 3)
        time.sleep(3.0)  # the service is down for >= 3 grid steps
        with make_client(tmp_path, store_url=store) as c:
            _wait(lambda: c.get("/v1/analyses/vr", headers=R).json()["poller"]["backfilled_ticks"] >= 3)
            row = c.app.state.manager.store.get("vr")
            ticks = c.app.state.manager.store.ticks("vr", 0, row.n_ticks)
    finally:
        stop = True
        th.join()
    times = [t["timestamp"] for t in ticks]
    stored = [t["values"]["p99_latency_ms"] for t in ticks]
    assert len(set(stored)) == len(stored) >= 6  # the values vary from tick to tick
    src = PrometheusSource(stack.prom.url, q)
    assert [src.fetch([t])[0]["values"]["p99_latency_ms"] for t in times] == stored  # instant queries now
    assert [v["values"]["p99_latency_ms"] for v in src.fetch(times)] == stored  # one query_range now
    src.close()


def test_a_pod_that_lived_inside_a_tick_leaves_its_errors_missing_never_zero(stack):
    req = Counter("ds_short_req", "r", ["h", "pod"], registry=stack.reg)
    err = Counter("ds_short_err", "e", ["h", "pod"], registry=stack.reg)
    with stack.exp.lock:
        for h, pod in (("c1", "c-0"), ("s1", "s-0")):
            req.labels(h, pod), err.labels(h, pod)
    spec = {"address": stack.prom.url, "interval_seconds": 4, "settle_seconds": 1.5, "arm_label": "h", "arms": ARMS,
            "units": "ds_short_req_total", "events": {"errors": "ds_short_err_total"}}
    _raw_first_seen(stack.prom.url, 'ds_short_err_total{h="c1"}', 0.0)
    t = math.ceil((time.time() + 0.2) / 4) * 4  # the series exist at t
    _wait(lambda: time.time() > t + 0.1, every=0.02)
    with stack.exp.lock:  # 20 requests per arm in the tick; a canary pod appears just after t with 5 errors ...
        req.labels("c1", "c-0").inc(20), req.labels("s1", "s-0").inc(20), err.labels("c1", "c-9").inc(5)
    seen = _raw_first_seen(stack.prom.url, 'ds_short_err_total{pod="c-9"}', 5.0)
    with stack.exp.lock:  # ... and is gone after its first scrape: stale at the next one, before t + 4
        err.remove("c1", "c-9")
    assert t < seen < t + 1.5
    _wait(lambda: time.time() > t + 4 + 1.6)
    src = PrometheusSplitSource(spec)
    got = src.read([t + 4])
    src.close()
    # the tick has both arms' units; the canary's errors are missing with the reason, not 0
    assert got.gaps == [] and [(tk["arms"]["canary"]["units"], tk["arms"]["stable"]["units"]) for tk in got.ticks] == [(20, 20)]
    assert got.ticks[0]["arms"]["canary"]["events"] == {} and got.ticks[0]["arms"]["stable"]["events"] == {"errors": 0}
    assert [(m["arm"], m["metric"]) for m in got.missing] == [("canary", "errors")] and "lived inside the tick" in got.missing[0]["reason"]
