"""Throughput benchmark of one fleet observation window (used by ``deploysignal bench``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._observer import FleetObserver, ObserverSettings
from ._topology import TopologySnapshot

__all__ = ["bench_fleet"]


def bench_fleet(n_shards: int = 10_000, n_signals: int = 12, *, repeats: int = 20, seed: int = 0) -> dict[str, Any]:
    """Time :meth:`FleetObserver.update` on ``n_shards x n_signals`` (default 10,000 x 12).

    The fleet is 125 racks x 10 hosts x 8 GPUs (truncated/padded to ``n_shards``). Returns a dict with
    ``median_ms``, ``min_ms``, ``max_ms``, ``repeats``, ``n_shards``, ``n_signals``. The clock is read
    here, in the benchmark adapter, never in the core.
    """
    hosts = max(1, -(-n_shards // 8))
    racks = max(1, -(-hosts // 10))
    topo = TopologySnapshot.synthetic(racks, 10, 8)
    topo = TopologySnapshot(topo.shards[:n_shards])
    rng = np.random.default_rng(seed)
    obs = FleetObserver(topo, n_signals, baseline_loc=np.zeros(n_signals), baseline_scale=np.ones(n_signals),
                        settings=ObserverSettings())
    ticks = rng.standard_normal((repeats + 3, len(topo), n_signals))
    for t in range(3):  # warm-up
        obs.update(ticks[t])
    times = []
    for t in range(3, repeats + 3):
        t0 = time.perf_counter()
        obs.update(ticks[t])
        times.append((time.perf_counter() - t0) * 1e3)
    arr = np.asarray(times)
    return {"n_shards": len(topo), "n_signals": n_signals, "repeats": repeats,
            "median_ms": float(np.median(arr)), "min_ms": float(arr.min()), "max_ms": float(arr.max())}
