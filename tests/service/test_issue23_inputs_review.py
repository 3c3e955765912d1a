"""Review of issue 23 item 6 (delete, retention, pollers): regression tests for its findings.

1. the Prometheus poller of a deleted analysis kept running and fed an analysis created again under
   the id (same process: two pollers; another process: the stale entry blocked the new poller);
2. /metrics in another process served a deleted analysis' cached verdict;
3. a DELETE was a 500 on prometheus-client releases whose ``remove`` raises KeyError for absent labels,
   and one failing cleanup stopped the retention round for the other ids;
4. a split template with a control character in a metric name was stored;
5. a delete dropped the per-analysis lock another thread waited on.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from ._split import METRICS
from .conftest import R, W, make_client, ticks_of


@pytest.fixture
def fake_prom():
    """A Prometheus answering 0.9 to queries named ``OLD_*`` and 0.1 to the others (instant and range)."""

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            u = urlparse(self.path)
            q = parse_qs(u.query)
            v = "0.9" if q["query"][0].startswith("OLD") else "0.1"
            if u.path.endswith("query_range"):
                s, e, st = float(q["start"][0]), float(q["end"][0]), float(q["step"][0])
                res = {"resultType": "matrix", "result": [{"metric": {}, "values": [[s + i * st, v] for i in range(int((e - s) / st) + 1)]}]}
            else:
                res = {"resultType": "vector", "result": [{"metric": {}, "value": [float(q["time"][0]), v]}]}
            b = json.dumps({"status": "success", "data": res}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _body(cfg, url, tag):
    return {"id": "x", "config": json.loads(cfg.to_json()), "window": 480,
            "prometheus": {"url": url, "interval_seconds": 1, "settle_seconds": 0, "canary": {s: f"{tag}_{s}" for s in cfg.names}}}


def _values(c, n_min, timeout=8.0):
    """The values of x's stored ticks once it holds ``n_min`` of them."""
    store = c.app.state.manager.store
    deadline = time.monotonic() + timeout
    while store.n_ticks("x") < n_min and time.monotonic() < deadline:
        time.sleep(0.05)
    return [v for t in store.ticks("x", 0, 1000) for v in t["values"].values()]


def _pollers():
    return [t for t in threading.enumerate() if t.name == "prom-x" and t.is_alive()]


def _no_old_poller(timeout=3.0):
    deadline = time.monotonic() + timeout
    while len(_pollers()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(_pollers())


def test_poller_of_a_deleted_analysis_never_feeds_the_id_created_again(tmp_path, healthy_sim, fake_prom):
    """Same process: DELETE then create with another spec; only the new spec's values reach the new analysis."""
    _, cfg = healthy_sim
    with make_client(tmp_path, prometheus_allow=[fake_prom]) as c:
        assert c.post("/v1/analyses", json=_body(cfg, fake_prom, "OLD"), headers=W).status_code == 201
        assert set(_values(c, 1)) == {0.9}
        assert c.delete("/v1/analyses/x?force=true", headers=W).status_code == 200
        assert c.post("/v1/analyses", json=_body(cfg, fake_prom, "NEW"), headers=W).status_code == 201
        vals = _values(c, 3)
        assert len(vals) >= 3 and set(vals) == {0.1}, vals
        assert _no_old_poller() == 1
        assert c.get("/v1/analyses/x", headers=R).json()["poller"]["state"] == "running"


def test_poller_of_an_analysis_deleted_by_another_process(tmp_path, healthy_sim, fake_prom):
    """Another process (``service delete``, another worker) deletes the analysis: this process' poller
    stops by itself, and the id created again here gets its own poller, not the stale entry."""
    _, cfg = healthy_sim
    a, b = make_client(tmp_path, prometheus_allow=[fake_prom]), make_client(tmp_path)
    with a, b:
        assert a.post("/v1/analyses", json=_body(cfg, fake_prom, "OLD"), headers=W).status_code == 201
        assert set(_values(a, 1)) == {0.9}
        old = _pollers()
        assert b.delete("/v1/analyses/x?force=true", headers=W).status_code == 200
        old[0].join(timeout=3)
        assert not old[0].is_alive() and old[0].status()["reason"] == "analysis deleted"
        assert a.post("/v1/analyses", json=_body(cfg, fake_prom, "NEW"), headers=W).status_code == 201
        vals = _values(a, 3)
        assert len(vals) >= 3 and set(vals) == {0.1}, vals
        assert len(_pollers()) == 1 and a.get("/v1/analyses/x", headers=R).json()["poller"]["state"] == "running"


def test_recreated_id_replaces_a_stale_poller_entry(tmp_path, healthy_sim, fake_prom):
    """The stale entry of a poller for an analysis deleted elsewhere is replaced even while it still runs
    (it has not polled since): the new analysis is polled with its own spec."""
    _, cfg = healthy_sim
    a, b = make_client(tmp_path, prometheus_allow=[fake_prom]), make_client(tmp_path, prometheus_allow=[fake_prom])
    with a, b:
        assert a.post("/v1/analyses", json=_body(cfg, fake_prom, "OLD"), headers=W).status_code == 201
        assert set(_values(a, 1)) == {0.9}
        assert b.delete("/v1/analyses/x?force=true", headers=W).status_code == 200
        assert a.post("/v1/analyses", json=_body(cfg, fake_prom, "NEW"), headers=W).status_code == 201  # at once
        vals = _values(a, 3)
        assert len(vals) >= 3 and set(vals) == {0.1}, vals
        assert _no_old_poller() == 1


def test_metrics_of_another_process_drop_a_deleted_analysis(tmp_path, step_sim):
    sim, cfg = step_sim
    a, b = make_client(tmp_path), make_client(tmp_path)
    with a, b:
        body = {"id": "x", "config": json.loads(cfg.to_json()), "window": 10}
        assert a.post("/v1/analyses", json=body, headers=W).status_code == 201
        assert a.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 0, 12)}, headers=W).json()["final"] is True
        assert b.get("/v1/analyses/x", headers=R).json()["final"] is True  # b caches the engine
        assert 'deploysignal_verdict_final{analysis="x"} 1.0' in b.get("/metrics", headers=R).text
        assert a.delete("/v1/analyses/x", headers=W).status_code == 200
        assert 'analysis="x"' not in b.get("/metrics", headers=R).text
        assert b.get("/v1/analyses/x", headers=R).status_code == 404
        assert b.post("/v1/analyses", json=body, headers=W).status_code == 201  # b caches the new one (b creates it)
        assert b.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 0, 12)}, headers=W).json()["final"] is True
        assert a.delete("/v1/analyses/x", headers=W).status_code == 200
        assert a.post("/v1/analyses", json={**body, "window": 480}, headers=W).status_code == 201
        text = b.get("/metrics", headers=R).text
        assert 'deploysignal_verdict_final{analysis="x"} 1.0' not in text and 'deploysignal_analysis_ticks{analysis="x"} 12.0' not in text, text
        assert b.get("/v1/analyses/x", headers=R).json()["n_ticks"] == 0
        assert 'deploysignal_analysis_ticks{analysis="x"} 0.0' in b.get("/metrics", headers=R).text


def test_delete_without_series_on_a_client_whose_remove_raises(tmp_path, step_sim, monkeypatch):
    """prometheus-client releases before client_python PR #1077 raise KeyError removing absent labels."""
    from prometheus_client.metrics import MetricWrapperBase

    def old_remove(self, *labelvalues):
        with self._lock:
            del self._metrics[tuple(str(v) for v in labelvalues)]

    monkeypatch.setattr(MetricWrapperBase, "remove", old_remove)
    _, cfg = step_sim
    with make_client(tmp_path) as c:
        assert c.post("/v1/analyses", json={"id": "x", "config": json.loads(cfg.to_json())}, headers=W).status_code == 201
        r = c.delete("/v1/analyses/x?force=true", headers=W)
        assert r.status_code == 200, r.text


def test_retention_round_cleans_up_every_id_whatever_one_cleanup_does(tmp_path, step_sim):
    from deploysignal.service._retention import RetentionTask

    sim, cfg = step_sim
    with make_client(tmp_path) as c:
        for aid in ("a", "b"):
            c.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": 10}, headers=W)
            assert c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks_of(sim.canary, 0, 12)}, headers=W).json()["final"] is True
        seen, stop = [], threading.Event()

        def on_delete(aid):
            seen.append(aid)
            if len(seen) == 2:
                stop.set()
            raise RuntimeError("cleanup failed")

        task = RetentionTask(c.app.state.manager, 1, 0.05, stop, lambda: time.time() + 3 * 86400, on_delete)
        task.start()
        task.join(timeout=5)
        stop.set()
        assert seen == ["a", "b"]


def test_split_template_with_a_control_character_in_a_metric_name_is_refused(tmp_path):
    with make_client(tmp_path) as c:
        r = c.put("/v1/templates/st", json={"mode": "split", "metrics": {"bad\u0085name": METRICS["errors"]}}, headers=W)
        assert r.status_code == 422 and "control character" in r.text, r.text
        assert c.put("/v1/templates/st", json={"mode": "split", "metrics": METRICS}, headers=W).status_code == 200


def test_delete_keeps_the_lock_a_waiting_thread_holds(tmp_path, monkeypatch):
    """A thread waiting on an analysis' lock while it is deleted, and one arriving after, share one lock."""
    from deploysignal.service import _manager
    from deploysignal.store import open_existing

    mgr = _manager.AnalysisManager(open_existing(f"sqlite:///{tmp_path / 'ds.db'}", create=True))
    d_in, go, w_in, hold, c_in = (threading.Event() for _ in range(5))

    def slow_delete(*a, **k):
        d_in.set()
        go.wait(5)
        return {"n_ticks": 0, "audit_head": "h"}

    monkeypatch.setattr(_manager, "delete_analysis", slow_delete)

    def waiter():
        with mgr._lock("x"):
            w_in.set()
            hold.wait(5)

    def late():
        with mgr._lock("x"):
            c_in.set()

    d = threading.Thread(target=mgr.delete, args=("x",), kwargs={"reason": "t", "deleted": "now"})
    d.start()
    assert d_in.wait(5)
    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.2)  # w waits on the lock the delete holds
    go.set()
    d.join(5)
    assert w_in.wait(5)
    late_t = threading.Thread(target=late)
    late_t.start()
    assert not c_in.wait(0.3)  # the late thread waits for w: the same lock
    hold.set()
    assert c_in.wait(5)
    w.join(5)
    late_t.join(5)
    assert mgr._locks == {}  # nobody holds or waits: nothing kept per id


def test_library_settings_do_not_create_a_missing_store(tmp_path):
    """Note 7: ``create_app`` used as a library (no CLI) refuses a mistyped store path like ``serve``."""
    from deploysignal._exceptions import ConfigError
    from deploysignal.service import ServiceSettings, create_app

    with pytest.raises(ConfigError):
        create_app(ServiceSettings(store_url=f"sqlite:///{tmp_path / 'typo.db'}", insecure=True))
    assert not (tmp_path / "typo.db").exists()
    create_app(ServiceSettings(store_url=f"sqlite:///{tmp_path / 'new.db'}", insecure=True, create_store=True))
    assert (tmp_path / "new.db").exists()
