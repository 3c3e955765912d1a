"""Model check vs false rollbacks on healthy processes the one-sample model does not describe (issue 22).

Run from the repository root: ``PYTHONPATH=src:tests .venv/bin/python scripts/model_check_mc.py``
(``--paths N`` per null, default 100; ``--nulls a,b``; ``--out FILE.jsonl`` appends one JSON line per
null). Uses ``tests/montecarlo/_misspec.py`` with the seeds of ``tests/montecarlo/test_model_check.py``
(2200 + the null's index): per path a 7-day baseline (2 days for ``model_ar1_2day``), compiled with the
model check, and a 960-tick canary of the same process through the default gate. Prints the markdown
table of docs/one-sample.md: flag rate, which checks flagged, false rollbacks, and paths both certified
by the checks and rolled back with the one-sided 99% Clopper-Pearson upper bound. About 2-4 minutes per
null and 100 paths on two busy cores.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

from montecarlo._mc import cp_upper
from montecarlo._misspec import NULLS, Outcome, run_null

DESC = {
    "model_ar1": "model's own null: AR(1) 0.85 + strong diurnal, 7-day baseline",
    "model_ar1_2day": "model's own null: AR(1) 0.85 + strong diurnal, 2-day baseline (as `_mc.py`)",
    "ar2": "AR(2) (0.5, 0.3)",
    "slow10": "AR(0.5) + slow AR(0.995) holding 10% of the variance",
    "slow30": "AR(0.5) + slow AR(0.995) holding 30%",
    "phi099": "AR(1) phi 0.99",
    "frac03": "fractional noise d = 0.3",
    "regime": "regime switching between two levels 1 sd apart (mean stay 6 h) + AR(0.5)",
    "dst_inside": "daily cycle shifts 1 h (DST) on day 5 of the baseline; canary in the new phase",
    "dst_after": "daily cycle shifts 1 h between baseline and canary (not visible at compile time)",
    "hetero_peak": "variance doubled in peak hours (a third of the day), baseline and canary alike",
    "weekly": "weekly pattern (weekend -0.8/-0.9 sd), 7-day baseline",
    "var_growth": "noise sd grows linearly to 1.5x over the canary (not in the baseline)",
    "regime_after": "every signal's level moves 0.5 sd (random sign) from the canary's first tick (not in the baseline)",
}


def outcomes(nulls: str = ",".join(NULLS), header: str = "") -> Iterator[tuple[str, Outcome, argparse.Namespace]]:
    """Parse ``--paths``, ``--nulls`` (default ``nulls``), ``--out``; print the table ``header`` (its
    columns and the separator row); yield each null's run (seed 2200 + its index) with the arguments."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=100)
    ap.add_argument("--nulls", default=nulls)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    print(header)
    print("|---" * header.count(" | ") + "|---|")
    for name in args.nulls.split(","):
        yield name, run_null(name, args.paths, seed=2200 + NULLS.index(name)), args


def main() -> None:
    for name, r, args in outcomes(header="| null (healthy: every rollback is false) | paths | flagged by the check | checks that flagged (paths) "
                                  "| gate false rollbacks | certified and rolled back (CP99 upper) |"):
        n, k_flag, k_rb = r.rollback.size, int(r.flagged.sum()), int(r.rollback.sum())
        both = int((~r.flagged & r.rollback).sum())
        checks = {c: int(v.sum()) for c, v in r.failed.items()}
        rec = {"null": name, "paths": n, "flagged": k_flag, "rollback": k_rb, "certified_and_rollback": both,
               "cp99_upper_joint": cp_upper(both, n), "checks": checks}
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        fired = ", ".join(f"{c} {k}" for c, k in checks.items() if k) or "-"
        print(f"| {DESC[name]} | {n} | {k_flag}/{n} = {k_flag / n:.0%} | {fired} | {k_rb}/{n} = {k_rb / n:.0%} "
              f"| {both}/{n} ({cp_upper(both, n):.1%}) |", flush=True)


if __name__ == "__main__":
    main()
