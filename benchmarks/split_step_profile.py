"""Where a live split tick's time goes (the breakdown quoted in docs/split.md, "Per-tick cost").

Same data as ``deploysignal bench --split`` (12 continuous metrics x 20 buckets x 2 arms, 5,000 units a
tick, 5% canary). CPU time per call (``time.process_time``, minimum of ``--repeats`` passes over the
ticks): ``SplitGate.update``; ``gate_run`` called once per tick and once over all ticks; a compiled
function that only builds the array views ``gate_run`` passes to ``run_metric``; the evidence of the
twelve metrics (the kernel ``evidence_summary`` alone, and ``SplitMetric.evidence`` with its formatting).

Run from the repository root:
    PYTHONPATH=src python benchmarks/split_step_profile.py [--ticks 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np
from numba import njit

from deploysignal.split import MetricSpec, SplitGate, SplitSettings, SplitTick, ticks_to_data
from deploysignal.split._kernels import evidence_summary
from deploysignal.split._step import gate_run, packed


@njit(cache=True)
def views_only(plan: Any, grid: Any, slots: Any, ell: Any, acc: Any, fv: Any, pk: Any, pix: Any, t0: int, t1: int) -> float:
    """The views ``gate_run`` builds per metric for ``run_metric``, touched once each, nothing else."""
    s = 0.0
    for f in range(pix.shape[0]):
        p, x = plan[f], pix[f]
        K, R, S, Jr, Jp, so = p[2], p[3], p[7], p[8], p[9], p[10]
        q = so + 2 * S + S * Jr
        nb, nx = x[1], x[2]
        cur = np.empty(t1 - t0)
        e = ell[p[1]:p[1] + K * R].reshape((K, R))
        ri, pi = slots[so + S:so + S + S * Jr].reshape((S, Jr)), slots[q + S:q + S + S * Jp].reshape((S, Jp))
        ca, c1 = pk[x[6]:x[6] + nb * K].reshape((nb, K)), pk[x[7]:x[7] + nb * K].reshape((nb, K))
        ac = acc[p[4]:p[4] + 2 * K].reshape((K, 2))
        s += e.size + ri.size + pi.size + ca.size + c1.size + ac.size + cur.size
        s += slots[so:so + S].size + slots[so + S + S * Jr:so + 2 * S + S * Jr].size + slots[q:q + S].size
        s += slots[q + S + S * Jp:q + 2 * S + S * Jp].size + pk[x[3] + t0:x[3] + t1 + 1].size + pk[x[4]:x[4] + nb].size
        s += pk[x[5]:x[5] + nb].size + pk[x[8]:x[8] + nb + 1].size + pk[x[9]:x[9] + nx].size + pk[x[10]:x[10] + nx].size
        s += pk[x[11]:x[11] + nx].size + fv[2 * f:2 * f + 1].size + grid[p[5]:p[5] + R].size + grid[p[5] + R:p[5] + 2 * R].size
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    edges = tuple(float(2.0**i) for i in range(19))
    specs = [MetricSpec(f"m{j}", "continuous", "up", edges) for j in range(12)]
    ticks = []
    for t in range(a.ticks):
        arms = {arm: {"units": u, "events": {}, "buckets": {s.name: [int(x) for x in c] for s, c in zip(specs, rng.multinomial(u, np.full(20, 0.05), size=12))}}
                for arm, u in (("canary", 250), ("stable", 4750))}
        ticks.append(SplitTick.from_dict({"timestamp": 1.8e9 + 60.0 * t, "arms": arms, "tier": None}))
    data = ticks_to_data(ticks, specs)
    one = [data.ticks(t, t + 1) for t in range(a.ticks)]
    settings = SplitSettings(window=10**9, max_extensions=0)

    def cpu(fn: Callable[[], None], calls: int) -> float:
        best = np.inf
        for _ in range(a.repeats):
            c0 = time.process_time()
            fn()
            best = min(best, (time.process_time() - c0) / calls * 1e6)
        return best

    gate = SplitGate(specs, settings)
    st = gate._step
    pk, pix, _, _ = packed(data, st.names, st.n_events)
    out1, outn = np.empty((12, 4, 1), dtype=bool), np.empty((12, 4, a.ticks), dtype=bool)
    args = (st.plan, st.grid, st.slots, st.ell, st.acc, st.fv, st.cnt, pk, pix)
    gate_run(*args, 0, 1, out1)
    views_only(st.plan, st.grid, st.slots, st.ell, st.acc, st.fv, pk, pix, 0, 1)

    def live() -> None:
        g = SplitGate(specs, settings)
        for d in one:
            g.update(d)

    def per_tick() -> None:
        for t in range(a.ticks):
            gate_run(*args, t, t + 1, out1)

    def views() -> None:
        for t in range(a.ticks):
            views_only(st.plan, st.grid, st.slots, st.ell, st.acc, st.fv, pk, pix, t, t + 1)

    print(f"update                          {cpu(live, a.ticks):7.2f} us a tick")
    print(f"gate_run, one tick a call       {cpu(per_tick, a.ticks):7.2f} us a tick")
    print(f"gate_run, all ticks in one call {cpu(lambda: gate_run(*args, 0, a.ticks, outn), a.ticks):7.2f} us a tick")
    print(f"views only (with its call)      {cpu(views, a.ticks):7.2f} us a tick")
    ms = gate.families
    n = 200
    print(f"evidence_summary, 12 metrics    {cpu(lambda: [evidence_summary(m._ell, *m._rb, m.lrho, m.proceed_threshold) for _ in range(n) for m in ms], n):7.2f} us")
    print(f"SplitMetric.evidence, 12        {cpu(lambda: [m.evidence() for _ in range(n) for m in ms], n):7.2f} us")


if __name__ == "__main__":
    main()
