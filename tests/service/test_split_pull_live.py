"""Prometheus pull for split analyses against a real Prometheus: the create body's split spec starts a
poller that ingests each grid time's per-arm counts; the stored ticks are exactly what
PrometheusSplitSource reads for those times, the verdict comes from them, replay is byte for byte."""

from __future__ import annotations

import json
import threading
import time

import pytest

from deploysignal.sources import PrometheusSplitSource

from .conftest import R, W, make_client
from .test_prometheus_live import EDGES, SPLIT, _wait, stack  # noqa: F401 - the module's Prometheus stack

pytestmark = pytest.mark.integration

METRICS = {"errors": {"kind": "event"}, "latency_ms": {"kind": "continuous", "edges": EDGES}}


def test_split_pull_ingests_per_arm_counts(stack, tmp_path):  # noqa: F811
    m = stack.metrics
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            with stack.exp.lock:
                for h, pod in (("c1", "c-0"), ("s1", "s-0"), ("s1", "s-1")):
                    m["requests"].labels(h, pod).inc(20)
                    m["errors"].labels(h, pod).inc(1)
                    for v in (5.0, 60.0, 300.0):
                        m["latency"].labels(h, pod).observe(v)
            stop.wait(0.5)

    feeder = threading.Thread(target=traffic, daemon=True)
    feeder.start()
    spec = {"address": stack.prom.url, **SPLIT, "events": {"errors": "ds_errors_total"}}
    try:
        with make_client(tmp_path) as c:
            bad = c.post("/v1/analyses", json={"mode": "split", "metrics": METRICS, "prometheus": {**spec, "events": {}}}, headers=W)
            assert bad.status_code == 422 and "no query for metrics ['errors']" in bad.text
            bad = c.post("/v1/analyses", json={"mode": "split", "metrics": METRICS, "prometheus": {"address": stack.prom.url, "canary": {"errors": "up"}}}, headers=W)
            assert bad.status_code == 422 and "pull-mode shape" in bad.text
            r = c.post("/v1/analyses", json={"id": "pull", "mode": "split", "metrics": METRICS, "window": 4, "max_extensions": 0, "prometheus": spec}, headers=W)
            assert r.status_code == 201, r.text
            body = _wait(lambda: (b := c.get("/v1/analyses/pull", headers=R).json())["final"] and b, timeout=60)
            assert body["mode"] == "split" and body["n_ticks"] == 4 and body["verdict"] == "proceed", body
            assert body["poller"]["state"] == "stopped" and "final" in body["poller"]["reason"]
            lines = c.get("/v1/analyses/pull/audit", headers=R).text.splitlines()
            assert c.post("/v1/analyses/pull/replay", headers=R).json()["ok"] is True
            stored = c.app.state.manager.store.ticks("pull", 0, 4)
            # a template: {{revision}} in arms becomes the revision under analysis
            tpl = {"mode": "split", "metrics": METRICS, "window": 4, "max_extensions": 0,
                   "prometheus": {**spec, "arms": {"canary": "{{revision}}", "stable": "s1"}}}
            bad = c.put("/v1/templates/bad", json={**tpl, "prometheus": {**tpl["prometheus"], "events": {"nope": "ds_errors_total"}}}, headers=W)
            assert bad.status_code == 422 and "prometheus.events.nope" in bad.text
            assert c.put("/v1/templates/sp", json=tpl, headers=W).status_code == 200
            assert c.get("/v1/argo/templates/sp/revisions/c1?subject=prod.api", headers=R).json()["analysis"] == "sp@prod.api@c1"
            assert c.app.state.manager.store.get("sp@prod.api@c1").spec["prometheus"]["arms"] == {"canary": "c1", "stable": "s1"}
            _wait(lambda: c.get("/v1/analyses/sp@prod.api@c1", headers=R).json()["n_ticks"] >= 1, timeout=30)
    finally:
        stop.set()
        feeder.join()
    gate = [json.loads(ln)["record"] for ln in lines[1:]]
    stamps = [g["timestamp"] for g in gate if g["family"] == "gate"]
    assert len(stamps) == 4 and all(t % 2 == 0 for t in stamps)
    src = PrometheusSplitSource(spec)
    got = src.read(stamps)
    src.close()
    assert not got.gaps and len(got.ticks) == 4
    # the stored ticks are exactly what the source reads for those grid times (no zeros, nothing invented)
    assert [s["split"] for s in stored] == [[{"arms": t["arms"], "tier": None}] for t in got.ticks]
    assert [s["timestamp"] for s in stored] == stamps
    # traffic reached both arms; a single 2 s tick may hold no scrape that saw an increment when the
    # machine is loaded (the feeder or Prometheus' scrape late): 0 units is then a real count, not a gap
    assert all(t["arms"][a]["units"] >= 0 for t in got.ticks for a in ("canary", "stable"))
    assert all(sum(t["arms"][a]["units"] for t in got.ticks) > 0 for a in ("canary", "stable"))
