"""Per-tick cost of the split gate: 12 continuous metrics x 20 buckets (19 edges) x 2 arms.

Synthetic null ticks (2,000 units a tick, 10% canary, bucket probabilities drawn afresh each tick and
shared by both arms). Reports CPU time per tick (``time.process_time``, so other processes on a shared
machine inflate it less than wall time): the families' compiled kernels over the run (minimum of
``--repeats``), the batch path with the verdict (``SplitGate.run_batch``), and the live path with audit
records (``SplitGate.update``, one tick at a time, effects and confidence sequences included).

Run from the repository root:
    PYTHONPATH=src python benchmarks/split_tick.py [--ticks 5000] [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deploysignal.split import BlockBuilder, MetricSpec, SplitData, SplitGate, SplitSettings


def null_ticks(ticks: int, seed: int) -> tuple[list[MetricSpec], SplitData]:
    rng = np.random.default_rng(seed)
    edges = tuple(float(x) for x in np.geomspace(10, 5000, 19))
    specs = [MetricSpec(f"m{i}", "continuous", "up", edges) for i in range(12)]
    n = rng.poisson(2000, ticks)
    nc = rng.binomial(n, 0.1)
    data = {}
    for s in specs:
        bb = BlockBuilder(19)
        for t in range(ticks):
            every = rng.multinomial(n[t], np.diff(np.r_[0, np.sort(rng.random(19)), 1]))
            canary = rng.binomial(every, nc[t] / n[t])
            bb.add_block(int(nc[t]), int(n[t]), np.cumsum(canary[::-1])[::-1][1:], np.cumsum(every[::-1])[::-1][1:])
            bb.end_tick()
        data[s.name] = bb.build()
    return specs, SplitData(np.arange(ticks, dtype=float), nc, n, data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    specs, data = null_ticks(a.ticks, a.seed)
    SplitGate(specs, SplitSettings(window=a.ticks)).run_batch(data.ticks(0, 10))  # compile / load the kernels
    for ep in (False, True):
        st = SplitSettings(window=a.ticks, early_proceed=ep)
        kern, batch = [], []
        for _ in range(a.repeats):
            g = SplitGate(specs, st)
            t0 = time.process_time()
            for f in g.families:
                f.step(data)
            kern.append((time.process_time() - t0) / a.ticks * 1e6)
            g = SplitGate(specs, st)
            t0 = time.process_time()
            g.run_batch(data)
            batch.append((time.process_time() - t0) / a.ticks * 1e6)
        print(f"early_proceed={ep}: kernels {min(kern):.2f} us/tick, run_batch {min(batch):.2f} us/tick (min of {a.repeats})")
    g = SplitGate(specs, SplitSettings(window=a.ticks))
    n = min(300, a.ticks)
    t0 = time.process_time()
    for t in range(n):
        g.update(data.ticks(t, t + 1)).records()
    print(f"update with records: {(time.process_time() - t0) / n * 1e6:.0f} us/tick")


if __name__ == "__main__":
    main()
