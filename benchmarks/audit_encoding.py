"""CPU cost of writing a tick's audit lines: RFC 8785 (``decision_lines``: what ``gate --audit`` writes
since 0.5.0) against the old ``repr`` encoding (``Decision.lines``) and the ``rfc8785`` library alone.

The same decisions (12 signals, five families, slowbleed scenario so families fire) are encoded by each
way in turn, ``--rounds`` times alternating, on fresh decisions each round (the records and lines are
built on first use, so each way pays for its own). Reports CPU microseconds per tick
(``time.process_time``: other processes on a shared machine inflate it less than wall time), median over
rounds.

With ``--path update`` each way is timed together with the live path that produces the decision
(:meth:`Gate.update` tick by tick on a fresh gate, then the tick's lines): the A/B of the ``update`` row of
``deploysignal bench`` before (``repr`` lines, what that row timed up to 0.4.0) and after (RFC 8785
lines, what it times since), in CPU time.

Run from the repository root:
    PYTHONPATH=src python benchmarks/audit_encoding.py [--ticks 1000] [--rounds 7] [--mode one-sample] [--path lines|update]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rfc8785

from deploysignal.audit import decision_lines
from deploysignal.calibration import compile_baseline
from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import simulate

WAYS = {
    "repr (Decision.lines)": lambda d: d.lines,
    "jcs (decision_lines)": decision_lines,
    "jcs (rfc8785 library only)": lambda d: [rfc8785.dumps(r).decode() for r in d.records],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--mode", default="one-sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--path", choices=("lines", "update"), default="lines")
    a = ap.parse_args()
    sim = simulate("slowbleed", seed=a.seed, canary_ticks=a.ticks)
    cfg = compile_baseline(sim.baseline, seed=a.seed, robust_covariance=False)
    settings = GateSettings(mode=a.mode, window=10**9)
    ctl = sim.control.values if a.mode == "two-sample" else None
    cpu: dict[str, list[float]] = {w: [] for w in WAYS}
    for _ in range(a.rounds):
        for way, fn in WAYS.items():
            if a.path == "update":  # the live path and the tick's lines, as `deploysignal bench`'s update row
                gate, n = Gate(cfg, settings), len(sim.canary)
                c0 = time.process_time()
                for i in range(n):
                    d = gate.update(sim.canary.timestamps[i], sim.canary.values[i], control=None if ctl is None else ctl[i])
                    fn(d)
                cpu[way].append((time.process_time() - c0) / n * 1e6)
                continue
            decisions = Gate(cfg, settings).update_many(sim.canary.timestamps, sim.canary.values, control=ctl)
            c0 = time.process_time()
            for d in decisions:
                fn(d)
            cpu[way].append((time.process_time() - c0) / len(decisions) * 1e6)
    print(json.dumps({"mode": a.mode, "path": a.path, "ticks": a.ticks, "rounds": a.rounds, "records_per_tick": len(d.records),
                      "cpu_us_per_tick": {w: round(float(np.median(v)), 1) for w, v in cpu.items()}}))


if __name__ == "__main__":
    main()
