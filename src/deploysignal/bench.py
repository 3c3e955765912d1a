"""Benchmarks behind ``deploysignal bench``: per-tick latency of the gate."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .calibration import compile_baseline
from .gate import Gate, GateSettings
from .simulate import simulate

__all__ = ["bench_gate"]


def bench_gate(ticks: int = 5000, seed: int = 0, warmup: int = 200) -> dict[str, Any]:
    """Time the gate per tick (``time.perf_counter_ns``) on a simulated 12-signal stream, two ways:

    * ``update``: :meth:`Gate.update`, the live path (input checks, all families, verdict) and the
      tick's audit lines (:attr:`Decision.lines`, built on first use: what an audit log writes);
    * ``run_batch``: :meth:`Gate.run_batch` fed one tick per call, the same families and verdict
      without building audit records (what the Monte-Carlo and evaluation runs use, for one stream);
    * ``update_many/500``: :meth:`Gate.update_many` with batches of 500 ticks and every tick's audit
      lines (what the service's batch ingest runs), reported as the batch time divided by 500: a throughput figure, not the latency of
      a tick (a tick's decision is available only when its batch is done).
    """
    sim = simulate("healthy", seed=seed, canary_ticks=ticks + warmup)
    cfg = compile_baseline(sim.baseline, seed=seed, robust_covariance=False)
    results = []
    for mode in ("one-sample", "two-sample"):
        settings = GateSettings(mode=mode, window=10**9, max_extensions=0, early_proceed=False)
        can, ctl = sim.canary, sim.control
        batch = min(500, ticks)
        gate = Gate(cfg, settings)
        gate.update_many(can.timestamps[:warmup], can.values[:warmup], control=None if mode == "one-sample" else ctl.values[:warmup])
        per_tick = []
        for a in range(warmup, warmup + ticks - batch + 1, batch):
            cvals = None if mode == "one-sample" else ctl.values[a : a + batch]
            t0 = time.perf_counter_ns()
            for d in gate.update_many(can.timestamps[a : a + batch], can.values[a : a + batch], control=cvals):
                d.lines  # noqa: B018 - built on first use; part of the live path's cost
            per_tick.append((time.perf_counter_ns() - t0) / batch)
        if per_tick:
            results.append(
                {
                    "mode": mode,
                    "path": f"update_many/{batch}",
                    "families": sorted(gate._families) + ["B"],
                    "median_us": float(np.median(per_tick) / 1e3),
                    "p99_us": float(np.percentile(per_tick, 99) / 1e3),
                    "ticks": batch * len(per_tick),
                }
            )
        for path in ("update", "run_batch"):
            gate = Gate(cfg, settings)
            laps = np.empty(ticks)
            for i in range(ticks + warmup):
                control = ctl.values[i] if mode == "two-sample" else None
                if path == "update":
                    t0 = time.perf_counter_ns()
                    gate.update(can.timestamps[i], can.values[i], control=control).lines  # noqa: B018 - see update_many
                else:
                    ts, vals = can.timestamps[i : i + 1], can.values[None, i : i + 1]
                    cvals = None if control is None else ctl.values[None, i : i + 1]
                    t0 = time.perf_counter_ns()
                    gate.run_batch(ts, vals, cvals)
                if i >= warmup:
                    laps[i - warmup] = time.perf_counter_ns() - t0
            results.append(
                {
                    "mode": mode,
                    "path": path,
                    "families": sorted(gate._families) + ["B"],
                    "median_us": float(np.median(laps) / 1e3),
                    "p99_us": float(np.percentile(laps, 99) / 1e3),
                    "ticks": ticks,
                }
            )
    return {"signals": len(cfg.signals), "results": results}
