"""Issue 22's gross regressions through family A alone, learned vs band (the table in docs/one-sample.md).

Run from the repository root: ``PYTHONPATH=src .venv/bin/python scripts/family_a_gross_cases.py --seeds 0,1,2``
(``--nuisance learned|band``). Simulated step scenario (``simulate("step", seed, canary_ticks=480)``,
its regression-free canary changed from tick 100 on), compiled with and without prewhitening; family A
alone (``GateSettings(shares={"A": 0.4})``), one-sample and two-sample. Prints one line per seed,
prewhitening and mode: each case's verdict and its rollback tick (or the last tick).
"""

from __future__ import annotations

import argparse

from deploysignal.calibration import compile_baseline
from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import simulate
from deploysignal.telemetry import Frame

CASES = ("eval0.3", "p99x2.5", "p99x5", "p99x10", "err0.5", "p99+4sd")
ONSET = 100


def changed(canary: Frame, case: str) -> Frame:
    v = canary.values.copy()
    col = list(canary.signals).index
    if case == "eval0.3":
        v[ONSET:, col("eval_score")] = 0.3
    elif case.startswith("p99x"):
        v[ONSET:, col("p99_latency_ms")] *= float(case[4:])
    elif case == "err0.5":
        v[ONSET:, col("downstream_error_rate")] = 0.5
    else:  # p99 + 4 sd of the simulated process (40 ms)
        v[ONSET:, col("p99_latency_ms")] += 4 * 40.0
    return Frame(canary.timestamps, v, canary.signals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--nuisance", default="band", choices=("learned", "band", "capped", "mixture"))
    args = ap.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        sim = simulate("step", seed=seed, canary_ticks=480)
        for prewhiten in (True, False):
            cfg = compile_baseline(sim.baseline, seed=0, prewhiten=prewhiten)
            for mode in ("one-sample", "two-sample"):
                row = []
                for case in CASES:
                    gate = Gate(cfg, GateSettings(shares={"A": 0.4}, mode=mode, a_nuisance=args.nuisance))
                    ds = gate.run(changed(sim.canary, case), sim.control if mode == "two-sample" else None)
                    rb = [d.tick for d in ds if d.verdict == "rollback"]
                    row.append(f"{case}:{ds[-1].verdict}@{rb[0] if rb else ds[-1].tick}")
                print(seed, "prewhiten" if prewhiten else "no-prewhiten", mode, args.nuisance, " ".join(row), flush=True)


if __name__ == "__main__":
    main()
