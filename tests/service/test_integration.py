"""Integration: several service processes sharing one real PostgreSQL; a real Prometheus scraping an
exporter of simulated telemetry feeding the pull source and a pull-mode analysis."""

from __future__ import annotations

import json
import math
import threading
import time

import httpx
import pytest

from deploysignal.sources._prometheus import PrometheusSource

from ._external import Exporter, Prometheus
from ._proc import READ, WRITE, Server, free_port
from .conftest import ticks_of
from .test_sigkill import _spec_sha, _uninterrupted

pytestmark = pytest.mark.integration
W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}


def test_two_processes_share_one_postgres(tmp_path, step_sim, postgres):
    sim, cfg = step_sim
    url = postgres.fresh_db("ds_shared")
    ticks = ticks_of(sim.canary)
    with Server(tmp_path, url) as a, Server(tmp_path, url) as b, httpx.Client(timeout=60) as c:
        # both create the same id at once: exactly one wins
        body = {"id": "shared", "config": json.loads(cfg.to_json()), "window": 480}
        codes: list[int] = []
        th = [threading.Thread(target=lambda s=s: codes.append(c.post(s.url + "/v1/analyses", json=body, headers=W).status_code)) for s in (a, b)]
        [t.start() for t in th]
        [t.join() for t in th]
        assert sorted(codes) == [201, 409]
        # alternate batches between the processes: each catches up on the other's ticks under the row lock
        for k, i in enumerate(range(0, len(ticks), 16)):
            srv = (a, b)[k % 2]
            r = c.post(srv.url + "/v1/analyses/shared/ticks", json={"batch_id": f"x{i}", "ticks": ticks[i : i + 16]}, headers=W)
            assert r.status_code == 200, r.text
        # a racing duplicate on both at once: one applies it, the other answers from the batch table
        last = ticks_of(sim.canary, len(ticks) - 1, len(ticks))
        la = c.get(a.url + "/v1/analyses/shared", headers=R).json()
        lb = c.get(b.url + "/v1/analyses/shared", headers=R).json()
        assert la["n_ticks"] == lb["n_ticks"] == len(ticks)
        assert la["verdict"] == lb["verdict"] == "rollback"
        assert c.post(b.url + "/v1/analyses/shared/ticks", json={"ticks": last}, headers=W).status_code == 422  # duplicate tick
        lines = c.get(b.url + "/v1/analyses/shared/audit", headers=R).text.splitlines()
    ref_lines, _, _ = _uninterrupted(cfg, ticks, {"window": 480}, _spec_sha(lines), batch=16, every=256)  # the batches above, serve's default snapshots
    assert lines == ref_lines


def _rows(sim, n):
    rows = []
    for i in range(n):
        row = {f"canary:{s}": float(sim.canary.values[i, j]) for j, s in enumerate(sim.canary.signals)}
        row["canary:p99_latency_ms"] = math.nan if i % 2 else row["canary:p99_latency_ms"]  # NaN samples
        rows.append(row)
    return rows


def test_prometheus_pull_source_and_pull_mode(tmp_path, healthy_sim):
    sim, cfg = healthy_sim
    exp = Exporter(_rows(sim, 400), free_port())
    prom = Prometheus(tmp_path, exp.server.server_address[1], free_port())
    try:
        names = list(cfg.names)
        queries = {s: f'ds_sim{{cohort="canary",signal="{s}"}}' for s in names}
        queries[names[-1]] = 'ds_sim{cohort="canary",signal="does_not_exist"}'  # empty result
        src = PrometheusSource(prom.url, queries)
        tick = src.poll(time.time())
        assert tick["values"][names[-1]] is None  # empty vector -> missing
        assert all(isinstance(tick["values"][s], float) for s in names[:-1] if s != "p99_latency_ms")
        seen_missing = any(src.poll(time.time() - k)["values"]["p99_latency_ms"] is None for k in range(6))
        assert seen_missing  # NaN samples come back as missing
        down = PrometheusSource("http://127.0.0.1:1", queries, timeout=0.5)
        try:
            assert down.poll(time.time())["values"][names[0]] is None  # down -> missing
        finally:
            down.close()  # its socket, else a ResourceWarning whenever the garbage collector finds it (filterwarnings=error)
        src.close()

        with Server(tmp_path, f"sqlite:///{tmp_path / 'pull.db'}") as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
            body = {"id": "pull", "config": json.loads(cfg.to_json()), "window": 480, "prometheus": {"url": prom.url, "interval_seconds": 1, "settle_seconds": 1.5, "canary": queries, "max_ticks": 4}}
            assert c.post("/v1/analyses", json=body, headers=W).status_code == 201
            deadline = time.monotonic() + 30
            while c.get("/v1/analyses/pull", headers=R).json()["n_ticks"] < 4 and time.monotonic() < deadline:
                time.sleep(0.3)
            v = c.get("/v1/analyses/pull", headers=R).json()
            assert v["n_ticks"] == 4
            assert v["verdict"] == "pending"  # missing data never rolls back
            gates = [json.loads(ln)["record"] for ln in c.get("/v1/analyses/pull/audit", headers=R).text.splitlines()[1:]]
            assert all(g["schema_continuity"] == "ok" for g in gates if g["family"] == "gate")
            ts = [g["timestamp"] for g in gates if g["family"] == "gate"]
            assert all(t == int(t) for t in ts) and ts == sorted(set(ts))  # grid-aligned, strictly increasing
    finally:
        prom.stop()
        exp.stop()
