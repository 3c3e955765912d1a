"""Benchmarks behind ``deploysignal bench``: per-tick latency of the gate."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numba import njit

from .calibration import compile_baseline, level_neighbour
from .detectors import FamilyA
from .gate import Gate, GateSettings
from .simulate import simulate

__all__ = ["bench_gate", "bench_split"]

#: parts of a tick timed by the kernel floor, in the order they run
_PARTS = ("standardise", "A", "B", "C", "D", "E")


def _kernel_floor(cfg: Any, settings: GateSettings, can: Any, ctl: Any, ticks: int, repeats: int) -> dict[str, float]:
    """Per part of a tick, microseconds per tick of its compiled loop over ``ticks`` ticks of one stream
    (the standardizer's batch path, each family's ``run``, family B's rules), median over ``repeats``
    fresh gates. No input checks, verdict, records or Python per tick: what any single-stream path of
    this design costs at least on this machine (a throughput, not a latency distribution)."""
    two = settings.mode == "two-sample"
    stamps, raw = can.timestamps[:ticks], can.values[:ticks]
    craw = ctl.values[:ticks] if two else None
    laps: dict[str, list[float]] = {part: [] for part in _PARTS}
    for rep in range(repeats + 1):  # the first pass warms caches and is not counted
        gate = Gate(cfg, settings)
        offsets, weights = level_neighbour(stamps, cfg.tick_seconds)
        cells = np.array([gate._cell(float(t), "")[0] for t in stamps], dtype=np.int64)
        nbs = np.array([gate._cell(float(t) + float(o), "")[0] for t, o in zip(stamps, offsets)], dtype=np.int64)
        can_std, ctl_std = gate._cohort("")[:2]
        t0 = time.perf_counter_ns()
        z = can_std.run(stamps, raw, cells, nbs, weights)
        lag = can_std.lag
        cz = ctl_std.run(stamps, craw, cells, nbs, weights) if two else None
        clag = ctl_std.lag if two else None
        lap = {"standardise": time.perf_counter_ns() - t0}
        for name, fam in gate._families.items():
            t0 = time.perf_counter_ns()
            if isinstance(fam, FamilyA):
                fam.run(z, cells, cz, lag, clag)
            else:
                fam.run(z, cells, cz)
            lap[name] = time.perf_counter_ns() - t0
        t0 = time.perf_counter_ns()
        gate._rules.run(z, raw, cells, cz, craw)
        lap["B"] = time.perf_counter_ns() - t0
        if rep:
            for part, ns in lap.items():
                laps[part].append(ns / ticks / 1e3)
    return {part: float(np.median(v)) for part, v in laps.items() if v}


def bench_gate(ticks: int = 5000, seed: int = 0, warmup: int = 200, floor_repeats: int = 5) -> dict[str, Any]:
    """Time the gate per tick (``time.perf_counter_ns``) on a simulated 12-signal stream, three ways:

    * ``update``: :meth:`Gate.update`, the live path (input checks, all families, verdict) and the
      tick's audit lines (:attr:`Decision.lines`, built on first use: what an audit log writes);
    * ``run_batch``: :meth:`Gate.run_batch` fed one tick per call, the same families and verdict
      without building audit records (what the Monte-Carlo and evaluation runs use, for one stream);
    * ``update_many/500``: :meth:`Gate.update_many` with batches of 500 ticks and every tick's audit
      lines (what the service's batch ingest runs), reported as the batch time divided by 500: a throughput figure, not the latency of
      a tick (a tick's decision is available only when its batch is done).

    and, under ``"floor"``, the cost per tick of each part's compiled loop over the whole stream
    (:func:`_kernel_floor`): the arithmetic every path above pays, without any per-tick Python.
    """
    sim = simulate("healthy", seed=seed, canary_ticks=ticks + warmup)
    cfg = compile_baseline(sim.baseline, seed=seed, robust_covariance=False)
    results, floor = [], []
    for mode in ("one-sample", "two-sample"):
        settings = GateSettings(mode=mode, window=10**9, max_extensions=0, early_proceed=False)
        can, ctl = sim.canary, sim.control
        parts = _kernel_floor(cfg, settings, can, ctl, ticks + warmup, floor_repeats)
        floor.append({"mode": mode, "us_per_tick": parts, "total_us": float(sum(parts.values())), "ticks": ticks + warmup})
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
    return {"signals": len(cfg.signals), "results": results, "floor": floor}


def _laps(fn: Any, n: int, warmup: int) -> dict[str, float]:
    """``fn(t)`` for ``t`` in ``range(n)``: median and p99 wall time of the calls after ``warmup`` and their
    mean CPU time (``time.process_time``), microseconds."""
    laps = np.empty(n - warmup)
    cpu = 0.0
    for t in range(n):
        c0, t0 = time.process_time(), time.perf_counter_ns()
        fn(t)
        t1, c1 = time.perf_counter_ns(), time.process_time()
        if t >= warmup:
            laps[t - warmup] = t1 - t0
            cpu += c1 - c0
    return {"median_us": float(np.median(laps) / 1e3), "p99_us": float(np.percentile(laps, 99) / 1e3),
            "cpu_us": cpu / (n - warmup) * 1e6, "ticks": n - warmup}


@njit(cache=True)
def _empty_step(plan: Any, grid: Any, slots: Any, ell: Any, acc: Any, fv: Any, cnt: Any, pk: Any, pix: Any, t0: int, t1: int, out: Any) -> int:
    """Nothing, with :func:`~deploysignal.split._step.gate_run`'s arguments: the cost of the call itself."""
    return t1 - t0


def _split_floor(gate: Any, data: Any, repeats: int = 20000) -> dict[str, float]:
    """What any Python-called split step costs at least: one call of a compiled function that takes
    :func:`~deploysignal.split._step.gate_run`'s 12 arguments and does nothing (numba's dispatch:
    type checks and unboxing), and ``gate_run``'s arithmetic per tick (all ticks in one call: no
    per-tick dispatch), both CPU time, microseconds."""
    from .split._step import gate_run, packed

    st = gate._step  # noqa: SLF001 - the gate's compiled step, timed on its own
    pk, pix, _, _ = packed(data, st.names, st.n_events)
    out = np.empty((st.plan.shape[0], 4, data.n_ticks), dtype=bool)
    args = (st.plan, st.grid, st.slots, st.ell, st.acc, st.fv, st.cnt, pk, pix)
    _empty_step(*args, 0, 1, out)
    c0 = time.process_time()
    for _ in range(repeats):
        _empty_step(*args, 0, 1, out)
    dispatch = (time.process_time() - c0) / repeats * 1e6
    c0 = time.process_time()
    gate_run(*args, 0, data.n_ticks, out)
    return {"dispatch_us": dispatch, "arithmetic_us": (time.process_time() - c0) / data.n_ticks * 1e6}


def bench_split(ticks: int = 2000, seed: int = 0, n_metrics: int = 12, n_buckets: int = 20, warmup: int = 20) -> dict[str, Any]:
    """Per-tick cost of the split gate for ``n_metrics`` continuous metrics x ``n_buckets`` buckets x 2
    arms (5,000 units per tick, 5% canary; bucket counts drawn multinomially from one seeded generator):

    * ``update``: :meth:`SplitGate.update` on tick ``t`` of the parsed run (``update(data, t)``, as the
      CLI and the service feed it, no cut built): one compiled call for every family and the verdict; the
      decision is dropped, so its evidence records are never built. No shipped path runs this: it is
      what a library caller that reads only verdicts pays;
    * ``update+records``: the same with the tick's audit records built (every family's e-value,
      effect and confidence sequence, formatted): the per-tick cost of the CLI's audit path and of the
      service once a batch is parsed (both build the records every tick);
    * ``parse+update``: from the tick's JSON dict (:meth:`SplitTick.from_dict`, :func:`ticks_to_data`,
      packing, then ``update``), what the service's ingest of one split tick runs before its records;
    * ``run_batch``: :meth:`SplitGate.run_batch` over all ticks, total time / ticks (throughput).

    Medians and p99 of wall time (``time.perf_counter_ns``) over ``ticks`` timed ticks after ``warmup``,
    and mean CPU time per tick (``cpu_us``); under ``"floor"`` :func:`_split_floor`.
    """
    from .split import MetricSpec, SplitGate, SplitSettings, SplitTick, ticks_to_data

    rng = np.random.default_rng(seed)
    edges = tuple(float(2.0**i) for i in range(n_buckets - 1))
    specs = [MetricSpec(f"m{j}", "continuous", "up", edges) for j in range(n_metrics)]
    p = np.full(n_buckets, 1.0 / n_buckets)
    n = ticks + warmup
    dicts = []
    for t in range(n):
        arms = {}
        for arm, units in (("canary", 250), ("stable", 4750)):
            counts = rng.multinomial(units, p, size=n_metrics)
            arms[arm] = {"units": units, "events": {}, "buckets": {s.name: [int(x) for x in c] for s, c in zip(specs, counts)}}
        dicts.append({"timestamp": 1_796_637_600.0 + 60.0 * t, "arms": arms, "tier": None})
    settings = SplitSettings(window=10**9, max_extensions=0)
    data = ticks_to_data([SplitTick.from_dict(d) for d in dicts], specs)
    paths = {  # tick t of the parsed run, as the CLI and the service feed it
        "update": lambda g: (lambda t: g.update(data, t)),
        "update+records": lambda g: (lambda t: g.update(data, t).records()),
        "parse+update": lambda g: (lambda t: g.update(ticks_to_data([SplitTick.from_dict(dicts[t])], specs))),
    }
    out = [{"path": path, **_laps(make(SplitGate(specs, settings)), n, warmup)} for path, make in paths.items()]
    batch, cpu = [], []
    for _ in range(5):
        gate = SplitGate(specs, settings)
        c0, t0 = time.process_time(), time.perf_counter_ns()
        gate.run_batch(data)
        batch.append((time.perf_counter_ns() - t0) / n / 1e3)
        cpu.append((time.process_time() - c0) / n * 1e6)
    out.append({"path": "run_batch", "median_us": float(np.median(batch)), "p99_us": float(max(batch)), "cpu_us": float(np.median(cpu)), "ticks": n})
    return {"metrics": n_metrics, "buckets": n_buckets, "arms": 2, "results": out, "floor": _split_floor(SplitGate(specs, settings), data)}
