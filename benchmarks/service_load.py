"""Service load benchmark against a real uvicorn subprocess on loopback (bounded loops).

1. Batch ingest: one analysis, N ticks in batches of B; reports wall-clock ticks/s and ticks per
   server CPU-second (utime + stime of the server process from /proc, i.e. "per core"), next to the
   in-process cost of the gate alone (no HTTP, no store) so the service's own overhead is visible.
2. Concurrency: A analyses, each fed 1 tick/s by its own client task for D seconds; reports request
   latency percentiles over all ingest requests, end to end (client clock, includes the client's own
   CPU on the same machine) and server side (the ``Server-Timing`` header: handling time inside the
   service, including the store commit).

Run from the repository root:
    PYTHONPATH=src:. python benchmarks/service_load.py [--ticks 10000] [--batch 500] [--analyses 100] [--seconds 30] [--store sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from deploysignal.calibration import compile_baseline
from deploysignal.service import AnalysisEngine
from deploysignal.simulate import simulate
from tests.service._proc import READ, WRITE, Server
from tests.service.conftest import ticks_of

W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--analyses", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--store", choices=["sqlite", "sqlite-normal", "postgresql"], default="sqlite")
    a = ap.parse_args()

    sim = simulate("healthy", seed=7, canary_ticks=a.ticks + a.seconds.__int__() + 10)
    cfg = compile_baseline(sim.baseline, seed=0)
    ticks = ticks_of(sim.canary)
    settings = {"window": 100_000}

    eng = AnalysisEngine(cfg.to_json(), settings)
    t0 = time.process_time()
    eng.ingest(eng.validate(ticks[: a.ticks]))
    gate_only = a.ticks / (time.process_time() - t0)

    tmp = Path(tempfile.mkdtemp(prefix="ds-bench-"))
    pg = None
    if a.store.startswith("sqlite"):
        store = f"sqlite:///{tmp / 'bench.db'}" + ("?synchronous=NORMAL" if a.store == "sqlite-normal" else "")
    else:
        from tests.service._external import Postgres

        pg = Postgres()
        store = pg.fresh_db("ds_bench")
    out: dict[str, object] = {"store": a.store, "ticks": a.ticks, "batch": a.batch, "gate_only_ticks_per_cpu_s": round(gate_only)}
    with Server(tmp, store) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        assert c.post("/v1/analyses", json={"id": "thr", "config": json.loads(cfg.to_json()), **settings}, headers=W).status_code == 201
        bodies = [json.dumps({"ticks": ticks[i : i + a.batch]}).encode() for i in range(0, a.ticks, a.batch)]
        cpu0, w0 = cpu_seconds(srv.proc.pid), time.perf_counter()
        for b in bodies:
            r = c.post("/v1/analyses/thr/ticks", content=b, headers={**W, "content-type": "application/json"})
            assert r.status_code == 200, r.text
        wall, cpu = time.perf_counter() - w0, cpu_seconds(srv.proc.pid) - cpu0
        out.update(ingest_wall_ticks_per_s=round(a.ticks / wall), ingest_ticks_per_server_cpu_s=round(a.ticks / cpu), service_overhead_us_per_tick=round(1e6 * (cpu / a.ticks - 1 / gate_only), 1))

        for k in range(a.analyses):
            r = c.post("/v1/analyses", json={"id": f"c{k}", "config_ref": cfg.version_id, **settings}, headers=W)
            assert r.status_code == 201, r.text

        async def feeder(k: int, client: httpx.AsyncClient, lat: list[float], srv_lat: list[float], start: float) -> None:
            await asyncio.sleep((k / a.analyses))  # spread the analyses over the second
            i = 0
            while time.perf_counter() - start < a.seconds:
                t = time.perf_counter()
                r = await client.post(f"/v1/analyses/c{k}/ticks", json={"ticks": [ticks[i]]}, headers=W)
                lat.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
                srv_lat.append(float(r.headers["server-timing"].split("dur=")[1]) / 1000)
                i += 1
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))

        async def run() -> tuple[list[float], list[float]]:
            lat: list[float] = []
            srv_lat: list[float] = []
            limits = httpx.Limits(max_connections=a.analyses + 10)
            async with httpx.AsyncClient(base_url=srv.url, timeout=30, limits=limits) as client:
                start = time.perf_counter()
                await asyncio.gather(*(feeder(k, client, lat, srv_lat, start) for k in range(a.analyses)))
            return lat, srv_lat

        cpu0 = cpu_seconds(srv.proc.pid)
        lat_s, srv_s = asyncio.run(run())
        lat, srv_ms = np.array(lat_s) * 1000, np.array(srv_s) * 1000
        out.update(
            concurrent_analyses=a.analyses,
            concurrent_seconds=a.seconds,
            requests=int(lat.size),
            latency_ms_p50=round(float(np.percentile(lat, 50)), 2),
            latency_ms_p99=round(float(np.percentile(lat, 99)), 2),
            latency_ms_max=round(float(lat.max()), 2),
            server_side_ms_p50=round(float(np.percentile(srv_ms, 50)), 2),
            server_side_ms_p99=round(float(np.percentile(srv_ms, 99)), 2),
            server_cpu_share=round((cpu_seconds(srv.proc.pid) - cpu0) / a.seconds, 3),
        )
    if pg is not None:
        pg.stop()
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
