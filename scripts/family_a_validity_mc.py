"""Family A's and the gate's false rollbacks under an ``a_nuisance`` treatment, on the CI null of
``tests/montecarlo/test_validity_a.py`` (AR(1) 0.85 + diurnal, seed 1001, 2,000 paths, 960 ticks).

Run from the repository root: ``PYTHONPATH=src:tests .venv/bin/python scripts/family_a_validity_mc.py capped``
(``--paths N``, default 2000; about 25 CPU-minutes for one- and two-sample). Prints, per mode, the
false fires of family A and the gate's false rollbacks with the one-sided 99% Clopper-Pearson upper
bound, to compare with alpha_A = 0.02 and alpha = 0.05.
"""

from __future__ import annotations

import argparse

from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec
from montecarlo._mc import cp_upper, run_mc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nuisance", choices=("learned", "band", "capped", "mixture"))
    ap.add_argument("--paths", type=int, default=2000)
    args = ap.parse_args()
    r = run_mc(1001, args.paths, 960, NoiseSpec(phi=0.85, diurnal=2.0), GateSettings(a_nuisance=args.nuisance), also_two_sample=True)
    for label, res in (("one-sample", r), ("two-sample", r.two_sample)):
        k, n, kr = int(res.fired("A").sum()), res.fired("A").size, int(res.rollback.sum())
        print(f"{args.nuisance} {label}: family A fired {k}/{n} (CP99 {cp_upper(k, n):.4f}); gate rolled back {kr}/{n} (CP99 {cp_upper(kr, n):.4f})")


if __name__ == "__main__":
    main()
