"""Power of candidate ratio grids and mixture weights for the split gate's rollback e-process (paired).

An experiment, not the shipped gate: it runs ``deploysignal split-eval``'s power cells (split gate only,
one volume and share) once with the shipped :class:`deploysignal.split.SplitMetric` and once with a
variant, on the same seeds (replicate ``r`` of a cell is the same data for both), and compares them
pair by pair: detections with two-sided 95% Clopper-Pearson intervals, the discordant pairs (runs only
one variant detects) with an exact two-sided binomial (McNemar) test, and the change in detection
delay on the runs both detect.

Variant ``fine_w`` (the one measured in docs/split_eval_goal.md): the ratio grid gains the points
``(1 + tolerance) ** (±1/2)`` between 1 and the tolerance (coarse steps beyond it unchanged), and the
rollback mixture weighs its alternatives ``j = 1, 2, ...`` (counted outwards from ratio 1) in
proportion to ``round(36 / j**2)`` (at least 1) instead of equally. Both are fixed before any data, so
the rollback statistic stays a convex combination of the same test supermartingales and Ville's bound
holds unchanged; the variant is installed by replacing ``rate_grid`` and the rollback index table of
the metric in this process only (repeating an alternative's index ``m`` times gives it weight ``m``).

Usage (from the repository root; about 210 CPU-seconds per variant for 99 replicates of 5 effects)::

    PYTHONPATH=src python benchmarks/split_grid_variants.py --reps 99 \\
        --effects errors_x1.5,errors_x2,tier_shift,error_bursts,refusals_6pct --out /tmp/grid.json
    PYTHONPATH=src:. python benchmarks/split_grid_variants.py --validity
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
from scipy.stats import binomtest

import deploysignal.split._metric as metric_module
from deploysignal.evaluation._split_eval import SplitEvalSettings, run_split_eval

_SHIPPED_GRID = metric_module.rate_grid
_SHIPPED_INIT = metric_module.SplitMetric.__init__
#: weight numerator of the ``fine_w`` variant: alternative j gets ``max(1, round(W / j**2))``
W = 36


def fine_grid(tolerance: float) -> tuple[np.ndarray, int, int]:
    """The shipped grid with the points ``(1 + tolerance) ** (±k / (2 n))`` inside the tolerance."""
    lt = math.log1p(tolerance)
    n = max(1, math.ceil(lt / math.log(metric_module._MAX_STEP)))
    ls = lt / n
    jc = math.ceil(math.log(metric_module._REACH) / ls)
    pos = [lt * i / (2 * n) for i in range(1, 2 * n + 1)] + [ls * j for j in range(n + 1, jc + 1)]
    logs = np.array([-x for x in reversed(pos)] + [0.0] + pos)
    return np.exp(logs), len(pos), 2 * n


def _weighted_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _SHIPPED_INIT(self, *args, **kwargs)
    slot_k, idx, base = self._rb
    mult = [max(1, round(W / (j * j))) for j in range(1, idx.shape[1] + 1)]
    self._rb = (slot_k, idx[:, [c for c, m in enumerate(mult) for _ in range(m)]].copy(), base)


def install(variant: str) -> None:
    metric_module.rate_grid = fine_grid if variant == "fine_w" else _SHIPPED_GRID
    metric_module.SplitMetric.__init__ = _weighted_init if variant == "fine_w" else _SHIPPED_INIT


def _cp(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import beta

    return (0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))), (1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=99)
    ap.add_argument("--effects", default="errors_x1.5,errors_x2,tier_shift,error_bursts,refusals_6pct")
    ap.add_argument("--volume", type=float, default=5000.0)
    ap.add_argument("--share", type=float, default=0.05)
    ap.add_argument("--variant", default="fine_w", choices=["fine_w"])
    ap.add_argument("--out", default=None, help="JSON of both runs' raw rows")
    ap.add_argument("--validity", action="store_true",
                    help="instead: the CI validity checks of tests/montecarlo/test_validity_split.py with the variant installed "
                         "(run with PYTHONPATH=src:. ; about 55 CPU-seconds; an assertion error = the variant is not valid)")
    a = ap.parse_args()
    if a.validity:
        install(a.variant)
        from tests.montecarlo import test_validity_split as checks

        for name in checks.NULLS:
            checks.test_gate_false_rollback(name)
            checks.test_each_metric_and_srm(name)
        install("shipped")
        return
    s = SplitEvalSettings(reps_null=0, reps_power=a.reps, volumes=(a.volume,), shares=(a.share,), effects=tuple(a.effects.split(",")),
                          methods=("split",))
    runs = {}
    for v in ("shipped", a.variant):
        install(v)
        t0 = time.process_time()
        runs[v] = {k: rows for k, rows in run_split_eval(s, jobs=1).items() if k.startswith("power")}
        print(f"{v}: {time.process_time() - t0:.0f} CPU-s")
    install("shipped")
    for key in runs["shipped"]:
        a_rows = {r[1]: r for r in runs["shipped"][key]}
        b_rows = {r[1]: r for r in runs[a.variant][key]}
        n = len(a_rows)
        da = {r: a_rows[r][3] == "rollback" for r in a_rows}
        db = {r: b_rows[r][3] == "rollback" for r in a_rows}
        ka, kb = sum(da.values()), sum(db.values())
        up, down = sum(db[r] and not da[r] for r in a_rows), sum(da[r] and not db[r] for r in a_rows)
        p = binomtest(up, up + down).pvalue if up + down else 1.0
        both = [r for r in a_rows if da[r] and db[r]]
        dd = np.array([b_rows[r][2] - a_rows[r][2] for r in both], dtype=float)
        (la, ha), (lb, hb) = _cp(ka, n), _cp(kb, n)
        print(f"{key.split(':')[1]}: shipped {ka}/{n} [{100 * la:.1f}, {100 * ha:.1f}]%, {a.variant} {kb}/{n} [{100 * lb:.1f}, {100 * hb:.1f}]%; "
              f"discordant +{up}/-{down} (exact p {p:.2g}); delay change on {len(both)} runs both detect: "
              + (f"median {np.median(dd):+.1f}, mean {dd.mean():+.2f} ticks" if both else "-"))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(runs, fh)


if __name__ == "__main__":
    main()
