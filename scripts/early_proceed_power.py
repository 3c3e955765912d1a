"""Early-proceed rate on healthy canaries (the power side of early proceed), seeded.

Run from the repository root: ``PYTHONPATH=src:tests .venv/bin/python scripts/early_proceed_power.py``
(add ``--paths N --seed S``). Uses the Monte-Carlo harness of the test suite (tests/montecarlo/_mc.py):
every path its own 2-day baseline and a 480-tick canary of the same process, gate with
``early_proceed=True`` and default settings; prints the share of paths proceeded before the window's
last tick and their median decision tick.
"""

from __future__ import annotations

import argparse

import numpy as np

from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec
from montecarlo._mc import run_mc

NULLS = {"iid": NoiseSpec(phi=0.0, diurnal=0.0), "ar1_0.85_diurnal": NoiseSpec(phi=0.85, diurnal=2.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=500)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    settings = GateSettings(early_proceed=True)
    for name, noise in NULLS.items():
        for mode in ("one-sample", "two-sample"):
            r = run_mc(args.seed, args.paths, settings.window, noise, settings.model_copy(update={"mode": mode}))
            early = (r.verdicts == 1) & (r.decided_at < settings.window - 1)
            med = float(np.median(r.decided_at[early])) if early.any() else float("nan")
            print(f"{name:18s} {mode:11s} early proceed {early.mean():6.1%}  median decision tick {med:.0f}", flush=True)


if __name__ == "__main__":
    main()
