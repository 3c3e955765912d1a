"""Noisy-neighbour benchmark of ``deploysignal serve`` (``deploysignal bench --noisy-neighbour``).

A real service (``deploysignal serve`` in a subprocess, loopback HTTP, SQLite store by default) holds
two analyses. Client B sends single ticks into analysis B on a fixed schedule and times each request (end
to end from its scheduled send time, so waiting behind a late request counts, and the service's own
``Server-Timing``); first alone, then while client A sends
the largest batches the service accepts into analysis A, back to back. The figure of merit is B's p99
with the neighbour divided by B's p99 alone (issue 23's goal: at most 2). Client and server share the
machine: the result depends on its other load, which is reported (load averages before and after).

With ``isolate``, A sends its batches to a second ``serve`` process with its own store: B's service then
shares nothing with A but the machine's cores, so the ratio measures what the machine alone does to B
(the floor no change inside the service can go below), in the same run and on the same load.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["bench_noisy_neighbour"]

#: A's throughput the default stock of batches is sized for (about twice what a 2-core machine reached)
A_TICKS_PER_S = 12_000
#: ticks per simulated block: 14 days of 60-second ticks, so the block repeats at the same time of day and week
_BLOCK = 20_160


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ticks(values: np.ndarray, signals: tuple[str, ...], t0: float, start: int, n: int) -> list[dict[str, Any]]:
    """Ticks ``start .. start+n`` of an endless stream: the simulated block repeated, 60 s apart."""
    out = []
    for i in range(start, start + n):
        row = values[i % len(values)]
        out.append({"timestamp": t0 + 60.0 * i, "values": {s: (None if np.isnan(v) else float(v)) for s, v in zip(signals, row)}})
    return out


def _paced(send: Callable[[], float], rate: float, seconds: float, clock: Callable[[], float] = time.perf_counter,
           sleep: Callable[[float], None] = time.sleep) -> tuple[list[float], list[float]]:
    """Call ``send`` (which returns the service's own time in ms) ``rate`` times a second for ``seconds``
    on a fixed schedule: (latencies in ms, server times). Every scheduled request is sent, a late one at
    once, and each latency is timed from its **scheduled** send time, so a request queued behind a slow
    one counts with its wait (no coordinated omission: a stall is not a single sample)."""
    e2e, srv = [], []
    start = clock()
    for k in range(max(1, round(seconds * rate))):
        due = start + k / rate
        pause = due - clock()
        if pause > 0:
            sleep(pause)
        s = send()
        e2e.append((clock() - due) * 1e3)
        srv.append(s)
    return e2e, srv


def _pcts(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def _start(cmd: list[str], cwd: Path, env: dict[str, str], port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server and wait (up to 120 s) until ``/healthz`` answers."""
    import httpx

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=url, timeout=30) as c:
        while True:
            try:
                if c.get("/healthz").status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the service did not start: {proc.stderr.read().decode(errors='replace')[-2000:] if proc.stderr else ''}")
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    if proc.stderr is not None:
        proc.stderr.close()


def bench_noisy_neighbour(*, seconds: float = 20.0, batch: int = 10_000, rate: float = 20.0, seed: int = 0, store: str | None = None,
                          server_pythonpath: str | None = None, a_bodies: int | None = None, isolate: bool = False,
                          replays: int = 0, replay_in: str = "process", replay_ticks: int = 5_000) -> dict[str, Any]:
    """Run the benchmark; returns B's latency alone and with the neighbour, and A's throughput.

    Parameters
    ----------
    seconds : float
        Length of each phase (B alone, then B with A).
    batch : int
        Ticks per request of client A (the service's default cap is 10,000).
    rate : float
        Single-tick requests per second of client B (sent on a fixed schedule; a late request is sent
        at once, not skipped).
    store : str, optional
        The server's ``--store`` (default: a new SQLite file in a temporary directory).
    server_pythonpath : str, optional
        Run the server from another source tree (``PYTHONPATH``), e.g. an earlier version to compare
        with; such a server gets the rate-limit and ``--create`` options only where its ``serve --help``
        lists them.
    a_bodies : int, optional
        Batches client A has ready (encoded before the timed phase); default: enough for
        ``A_TICKS_PER_S`` ticks per second over the phase. A stops early when all are sent (then
        ``a.ran_out_of_batches`` is true and the phase measured B partly without its neighbour).
    isolate : bool
        A's batches go to a second server process with its own SQLite store (module docstring).
    replays : int
        Instead of batches, the neighbour is ``replays`` clients each replaying analysis A (``replay_ticks``
        ticks, stored before B's first phase) back to back; the server runs with ``--max-replays replays
        --replay-in replay_in`` (with ``server_pythonpath``: those of the two its ``serve`` has; the
        result's ``server_options`` lists what it was started with). Measures what running replays cost another analysis' ingest.
    """
    import httpx

    from ..calibration import compile_baseline
    from ..simulate import simulate

    if a_bodies is None:
        a_bodies = max(2, math.ceil((seconds + 2.0) * A_TICKS_PER_S / batch))
    sim = simulate("healthy", seed=seed, canary_ticks=_BLOCK)
    cfg = json.loads(compile_baseline(sim.baseline, seed=seed).to_json())
    values, signals, t0 = sim.canary.values, sim.canary.signals, float(sim.canary.timestamps[0])
    tmp = Path(tempfile.mkdtemp(prefix="ds-noisy-"))

    def command(port: int, db: str) -> list[str]:
        return [sys.executable, "-m", "deploysignal", "serve", "--insecure", "--port", str(port), "--store", store or f"sqlite:///{tmp / db}",
                "--max-clock-skew", "-1", "--max-batch-ticks", str(max(batch, 1)), "--max-body-bytes", str(max(8 << 20, batch * 1200)), "--log-level", "warning"]

    # the benchmark measures contention, not the limits: rate limits off, a new store created
    extra = ["--rate-limit-token", "", "--rate-limit-analysis", "", "--rate-limit-analysis-write", "", "--rate-limit-ticks", "", "--create"]
    env = dict(os.environ)
    own = server_pythonpath is None
    if own:
        server_pythonpath = str(Path(__file__).resolve().parents[2])  # the code this benchmark runs (the server's cwd is a temporary directory)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(server_pythonpath).resolve()), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).is_absolute()]])
    if replays:
        extra += ["--max-replays", str(replays), "--replay-in", replay_in]
    if not own:  # another version: only the options its serve has (0.4.0 has none of these)
        helptext = subprocess.run([sys.executable, "-m", "deploysignal", "serve", "--help"], env={**env, "COLUMNS": "300"}, cwd=tmp,
                                  capture_output=True, text=True, timeout=300).stdout
        extra = [x for k, opt in enumerate(extra) if opt.startswith("--") and opt in helptext for x in extra[k : k + (1 if opt == "--create" else 2)]]
    if isolate and store is not None:
        raise ValueError("isolate runs A's server on its own SQLite file: give no store")
    load_before = os.getloadavg()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = _free_port()
        proc, url = _start(command(port, "noisy.db") + extra, tmp, env, port)
        procs.append(proc)
        url_a = url
        if isolate:
            port_a = _free_port()
            proc_a, url_a = _start(command(port_a, "neighbour.db") + extra, tmp, env, port_a)
            procs.append(proc_a)
        with httpx.Client(base_url=url, timeout=600) as c, httpx.Client(base_url=url_a, timeout=600) as c_a:
            for aid, client in (("A", c_a), ("B", c)):
                r = client.post("/v1/analyses", json={"id": aid, "config": cfg, "window": 10_000_000, "max_extensions": 0})
                if r.status_code != 201:
                    raise RuntimeError(f"creating analysis {aid}: {r.status_code} {r.text[:500]}")
            warm = c_a.post("/v1/analyses/A/ticks", content=json.dumps({"ticks": _ticks(values, signals, t0, 0, min(batch, 500))}),
                          headers={"content-type": "application/json"})
            warm.raise_for_status()
            state = {"a_next": min(batch, 500), "b_next": 0}
            while replays and state["a_next"] < replay_ticks:  # A's stored ticks for the replays, before either phase
                n = min(1_000, replay_ticks - state["a_next"])
                c_a.post("/v1/analyses/A/ticks", content=json.dumps({"ticks": _ticks(values, signals, t0, state["a_next"], n)}),
                         headers={"content-type": "application/json"}).raise_for_status()
                state["a_next"] += n

            def run_b(phase_seconds: float) -> tuple[list[float], list[float]]:
                with httpx.Client(base_url=url, timeout=600) as cb:

                    def send() -> float:
                        body = json.dumps({"ticks": _ticks(values, signals, t0, state["b_next"], 1)})
                        r = cb.post("/v1/analyses/B/ticks", content=body, headers={"content-type": "application/json"})
                        if r.status_code != 200:
                            raise RuntimeError(f"B's tick refused: {r.status_code} {r.text[:300]}")
                        state["b_next"] += 1
                        return float(r.headers["server-timing"].split("dur=")[1])

                    return _paced(send, rate, phase_seconds)

            b_alone = run_b(seconds)
            stop = threading.Event()
            a_stats = {"batches": 0, "ticks": 0, "seconds": 0.0, "error": None}

            # A's bodies are encoded before the phase: encoding 10,000 ticks in this process while B is timed
            # would delay B's client, not the service
            bodies = [] if replays else [json.dumps({"ticks": _ticks(values, signals, t0, state["a_next"] + k * batch, batch)}).encode() for k in range(a_bodies)]
            a_stats["replays"] = 0

            def replay_a() -> None:
                with httpx.Client(base_url=url_a, timeout=600) as ca:
                    while not stop.is_set():
                        r = ca.post("/v1/analyses/A/replay")
                        if r.status_code != 200 or not r.json().get("ok"):
                            a_stats["error"] = f"replay: {r.status_code} {r.text[:300]}"
                            return
                        a_stats["replays"] += 1

            def run_a() -> None:
                with httpx.Client(base_url=url_a, timeout=600) as ca:
                    t_start = time.perf_counter()
                    for body in bodies:
                        if stop.is_set():
                            break
                        r = ca.post("/v1/analyses/A/ticks", content=body, headers={"content-type": "application/json"})
                        if r.status_code != 200:
                            a_stats["error"] = f"{r.status_code} {r.text[:300]}"
                            return
                        state["a_next"] += batch
                        a_stats["batches"] += 1
                        a_stats["ticks"] += batch
                    a_stats["seconds"] = time.perf_counter() - t_start

            workers = [threading.Thread(target=replay_a, daemon=True) for _ in range(replays)] or [threading.Thread(target=run_a, daemon=True)]
            for ta in workers:
                ta.start()
            time.sleep(1.0)  # A's first batch (or replays) under way
            b_with = run_b(seconds)
            stop.set()
            for ta in workers:
                ta.join(600)
            if a_stats["error"]:
                raise RuntimeError(f"A's batch refused: {a_stats['error']}")
            replay = {aid: c.post(f"/v1/analyses/{aid}/replay").json()["ok"] for aid in ("B",)}
    finally:
        for p in procs:
            _stop(p)
    alone, with_a = _pcts(b_alone[0]), _pcts(b_with[0])
    return {
        "seconds": seconds, "batch": batch, "rate": rate, "isolated": isolate, "server_options": extra, "store": "sqlite" if store is None else store.split(":", 1)[0],
        "b_alone": {**alone, "server": _pcts(b_alone[1])},
        "b_with_neighbour": {**with_a, "server": _pcts(b_with[1])},
        "p99_ratio": with_a["p99_ms"] / alone["p99_ms"],
        "p50_ratio": with_a["p50_ms"] / alone["p50_ms"],
        "a": {"batches": a_stats["batches"], "ticks_per_s": a_stats["ticks"] / a_stats["seconds"] if a_stats["seconds"] else 0.0,
              "ran_out_of_batches": not replays and a_stats["batches"] >= a_bodies, "replays": a_stats["replays"],
              **({"replay_clients": replays, "replay_in": replay_in, "replay_ticks": state["a_next"]} if replays else {})},
        "b_replay_ok": replay["B"],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }
