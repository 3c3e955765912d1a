"""What family A's nuisance band costs in power: p99 steps, one-week baselines, learned vs band.

Run from the repository root: ``PYTHONPATH=src:tests .venv/bin/python scripts/family_a_band_cost.py``
(``--paths N`` per cell, default 20; ``--baseline TICKS``, default one week; ``--sizes 0.5,1,1.5,2``;
``--nuisance learned,band``).
Each path: its own baseline and 960-tick canary from the default simulated process
(``tests/montecarlo/_mc.run_mc``, seed 2024, the paths of ``tests/montecarlo/test_power_a.py``), a p99
step of the given size (marginal sd) at tick 60, run through the default gate and through family A
alone (``shares={"A": 0.4}``), each with ``a_nuisance="learned"`` (default) and ``"band"``. Prints
one line per cell: paths rolled back and the median delay after onset.
"""

from __future__ import annotations

import argparse

import numpy as np

from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec, Regression
from montecarlo._mc import run_mc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=20)
    ap.add_argument("--baseline", type=int, default=7 * 1440)
    ap.add_argument("--sizes", default="0.5,1,1.5,2")
    ap.add_argument("--nuisance", default="learned,band", help="comma-separated a_nuisance treatments")
    args = ap.parse_args()
    for size in (float(x) for x in args.sizes.split(",")):
        reg = Regression(("p99_latency_ms",), size, "step", 60)
        for nuisance in args.nuisance.split(","):
            for label, settings in (("gate", GateSettings(a_nuisance=nuisance)), ("A alone", GateSettings(shares={"A": 0.4}, a_nuisance=nuisance))):
                r = run_mc(2024, args.paths, 960, NoiseSpec(), settings, regression=reg, baseline=args.baseline)
                det = r.rollback
                delay = r.decided_at[det] - reg.onset
                med = f"{np.median(delay):g}" if det.any() else "-"
                print(f"step {size:g} sd | {nuisance} | {label} | {int(det.sum())}/{args.paths} | median delay {med}", flush=True)


if __name__ == "__main__":
    main()
