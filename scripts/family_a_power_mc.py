"""The power scenarios of ``tests/montecarlo/test_power_a.py`` under each ``a_nuisance`` treatment.

Run from the repository root: ``PYTHONPATH=src:tests .venv/bin/python scripts/family_a_power_mc.py mixture``
(``--paths N``, default 200, the test's count; several treatments comma-separated). Same seed (2024),
one-week baselines, 960-tick canaries and regressions as the test (p99 step of 0.5 sd at tick 60; eval
score ramp to 0.6 sd over 480 ticks), default gate shares. Prints per scenario and treatment: paths
rolled back, the median and 90th percentile of the delay after onset, and the test's pins (detected
>= 95%; median within the band; p90 below the cap) as pass / FAIL.
"""

from __future__ import annotations

import argparse

import numpy as np

from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec, Regression
from montecarlo._mc import run_mc

SCENARIOS = (
    ("step_0.5sd", Regression(("p99_latency_ms",), 0.5, "step", 60), (120, 280), 420),
    ("ramp_to_0.6sd_over_480", Regression(("eval_score",), 0.6, "ramp", 0, 480), (330, 500), 600),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nuisance")
    ap.add_argument("--paths", type=int, default=200)
    args = ap.parse_args()
    for name, reg, band, p90_max in SCENARIOS:
        for nuisance in args.nuisance.split(","):
            r = run_mc(2024, args.paths, 960, NoiseSpec(), GateSettings(a_nuisance=nuisance), regression=reg, baseline=7 * 1440)
            det = r.rollback
            delay = r.decided_at[det] - reg.onset
            med = float(np.median(delay)) if det.any() else float("nan")
            p90 = float(np.percentile(delay, 90)) if det.any() else float("nan")
            ok = det.mean() >= 0.95 and band[0] <= med <= band[1] and p90 <= p90_max
            print(f"{name} | {nuisance} | {int(det.sum())}/{args.paths} | median {med:g} | p90 {p90:g} | pins {'pass' if ok else 'FAIL'}", flush=True)


if __name__ == "__main__":
    main()
