"""Family A's false fires under innovation-variance and autocorrelation misspecification, ``mixture`` beside ``band``.

Run from the repository root: ``PYTHONPATH=src:tests .venv/bin/python scripts/family_a_mixture_misspec.py``
(``--paths N``, default 200; ``--ticks T``, default 480). Family A alone (alpha_A 0.02, horizon T) on the
config compiled from ``simulate("step", seed=0)``'s baseline, fed standardised innovations directly
(cells advancing hourly, AR lag zero): i.i.d. N(0, s2) for s2 in 1.0 / 1.3 / 1.6 (seed 7), and a
stationary unit-variance Gaussian AR(1) of lag-1 autocorrelation rho in 0.1 / 0.2 (seed 11), in both
modes (two-sample: the control arm drawn the same way, independently). Prints the paths fired with the
one-sided 99% Clopper-Pearson upper bound, to compare with alpha_A = 0.02. These laws break the compiler's
model (unit-variance, independent innovations); neither treatment claims validity there.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from deploysignal.calibration import compile_baseline
from deploysignal.detectors import FamilyA
from deploysignal.simulate import simulate
from montecarlo._mc import cp_upper


def run(cfg, nuisance: str, two: bool, paths: int, ticks: int, s2: float, rho: float, seed: int) -> int:
    rng = np.random.default_rng(seed)
    fam = FamilyA([cfg] * paths, alpha=0.02, horizon=ticks, two_sample=two, nuisance=nuisance)
    k, ncell = len(cfg.signals), fam._center.shape[1]
    fired = np.zeros(paths, dtype=bool)
    sd, innov = math.sqrt(s2), math.sqrt(1 - rho**2)
    z, cz = rng.normal(size=(paths, k)), rng.normal(size=(paths, k))
    lag = np.zeros((paths, k))
    for t in range(ticks):
        z = rho * z + innov * rng.normal(size=(paths, k))
        cz = rho * cz + innov * rng.normal(size=(paths, k))
        _, f = fam.step(z * sd, t // 60 % ncell, cz * sd if two else None, lag, lag if two else None)
        fired |= f
    return int(fired.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=200)
    ap.add_argument("--ticks", type=int, default=480)
    args = ap.parse_args()
    cfg = compile_baseline(simulate("step", seed=0, canary_ticks=10).baseline, seed=0)
    cases = [("variance", s2, 0.0, 7) for s2 in (1.0, 1.3, 1.6)] + [("lag-1 autocorrelation", 0.0, rho, 11) for rho in (0.1, 0.2)]
    for what, s2, rho, seed in cases:
        for two in (False, True):
            for nuisance in ("mixture", "band"):
                n = run(cfg, nuisance, two, args.paths, args.ticks, s2 or 1.0, rho, seed)
                val = s2 if what == "variance" else rho
                print(f"{what} {val:g} | {'two' if two else 'one'}-sample | {nuisance} | fired {n}/{args.paths} "
                      f"(CP99 {cp_upper(n, args.paths):.3f}; alpha_A 0.02)", flush=True)


if __name__ == "__main__":
    main()
