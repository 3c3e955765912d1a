"""The service's Prometheus policy: secrets go only to allowed addresses (a write-token holder cannot
capture them with a listener of its own), and a process without a poller does not claim "stopped"."""

from __future__ import annotations

import json
import os
import threading
from http.server import ThreadingHTTPServer

import numpy as np
import pytest

from deploysignal.calibration import compile_baseline
from deploysignal.sources import Connection, SecretPolicy
from deploysignal.telemetry import Frame

from ._external import QuietHandler
from .conftest import R, W, make_client

SECRET = "the-real-prometheus-token"


@pytest.fixture
def listener():
    """A Prometheus look-alike that records the Authorization header of every request."""
    seen: list[str | None] = []

    class H(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            body = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]}}
            self.reply(200, json.dumps(body).encode(), "application/json")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def cfg():
    rng = np.random.default_rng(0)
    return json.loads(compile_baseline(Frame(np.arange(600.0) * 60, rng.normal(size=(600, 1)) + 100, ("a",))).to_json())


def test_secrets_are_sent_only_to_allowed_addresses(listener, cfg, tmp_path, monkeypatch):
    url, seen = listener
    monkeypatch.setenv("DEPLOYSIGNAL_SECRET_PROM_TOKEN", SECRET)
    sdir = tmp_path / "secrets"
    sdir.mkdir()
    (sdir / "key").write_text(SECRET)
    host, port = url.rsplit(":", 1)
    with_secret = [{"authentication": {"bearer": {"env": "DEPLOYSIGNAL_SECRET_PROM_TOKEN"}}},
                   {"authentication": {"basic": {"username": "u", "password": {"file": str(sdir / "key")}}}},
                   {"authentication": {"secret_ref": {"path": str(sdir)}}},
                   {"headers": [{"key": "X-Key", "value_from": {"file": str(sdir / "key")}}]}]
    # the reviewer's repro: a write-token holder points the address at its own listener
    for allow in ([], ["http://prometheus.monitoring:9090"], [f"{url}/prom"], [f"{host}:{int(port) + 1}"], [url.replace("http:", "https:")]):
        with make_client(tmp_path, secrets_dir=str(sdir), prometheus_allow=allow) as c:
            for i, extra in enumerate(with_secret):
                spec = {"address": url, "canary": {"a": "q"}, "settle_seconds": 0, **extra}
                r = c.post("/v1/analyses", json={"config": cfg, "id": f"x{i}", "prometheus": spec}, headers=W)
                assert r.status_code == 422 and "is not one the service may send secrets to" in r.json()["detail"], (allow, r.text)
                assert "prometheus.url" in r.json()["detail"]
    assert seen == []  # nothing was sent at all
    # a spec without secrets may point anywhere; an allowed address gets the secret
    with make_client(tmp_path, secrets_dir=str(sdir), prometheus_allow=[url + "/"]) as c:
        r = c.post("/v1/analyses", json={"config": cfg, "id": "plain", "prometheus": {"address": url, "canary": {"a": "q"}, "max_ticks": 1}}, headers=W)
        assert r.status_code == 201, r.text
        r = c.post("/v1/analyses", json={"config": cfg, "id": "ok", "prometheus": {"address": url, "canary": {"a": "q"}, "max_ticks": 1, **with_secret[0]}}, headers=W)
        assert r.status_code == 201, r.text
    assert seen[0] is None and seen[-1] == f"Bearer {SECRET}"
    # the library and CLI (no allow-list) are unrestricted: the user owns the process
    Connection.model_validate({"address": url, **with_secret[0]}).client(SecretPolicy()).close()


def test_a_process_without_the_poller_says_unknown_not_stopped(listener, cfg, tmp_path):
    url, _ = listener
    store = f"sqlite:///{tmp_path / 'w.db'}"
    spec = {"address": url, "interval_seconds": 60, "settle_seconds": 0, "canary": {"a": "q"}}
    with make_client(tmp_path, store_url=store) as a, make_client(tmp_path, store_url=store) as b:  # two workers on one store
        assert a.post("/v1/analyses", json={"config": cfg, "id": "w", "prometheus": spec}, headers=W).status_code == 201
        assert a.get("/v1/analyses/w", headers=R).json()["poller"]["state"] == "running"
        other = b.get("/v1/analyses/w", headers=R).json()["poller"]
        assert other["state"] == "unknown" and "another one may poll it" in other["reason"], other


def test_serve_takes_the_allow_list_from_the_command_line(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from deploysignal.cli import app as cli_app
    from deploysignal.service import ServiceSettings

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: ran.append(kw))
    monkeypatch.setenv("DEPLOYSIGNAL_SERVICE_SETTINGS", "{}")  # serve sets it; restored after the test
    res = CliRunner().invoke(cli_app, ["serve", "--insecure", "--workers", "2", "--store", f"sqlite:///{tmp_path / 's.db'}", "--create",
                                       "--prometheus-allow", "https://prom-a:9090", "--prometheus-allow", "http://prom-b/prometheus"])
    assert res.exit_code == 0 and ran and ran[0]["workers"] == 2, res.output
    st = ServiceSettings.model_validate_json(os.environ["DEPLOYSIGNAL_SERVICE_SETTINGS"])  # what every worker builds its app from
    assert st.prometheus_allow == ["https://prom-a:9090", "http://prom-b/prometheus"]
