"""The run-time model check (issue 22) on the misspecified healthy nulls: does it flag what the compile-time
check cannot see, before the gate's false rollback?

Run from the repository root: ``PYTHONPATH=src:tests .venv/bin/python scripts/runtime_check_mc.py``
(``--paths N`` per null, default 100; ``--nulls a,b``; ``--out FILE.jsonl`` appends one JSON line per
null). Same processes, seeds and paths as ``scripts/model_check_mc.py`` (``tests/montecarlo/_misspec.py``,
seed 2200 + the null's index): a 7-day baseline compiled with the model check, then a 960-tick healthy
canary through the default gate (run-time check on, budget 0.01). Every rollback is false. Per null:
the compile-time flag rate, the gate's false rollbacks, the run-time check's flag rate (any tick of the
horizon, and at or before the gate's decision), and "false rollback and not flagged in time" (neither by
the compile-time check nor by the run-time check at or before the rollback) with its one-sided 99%
Clopper-Pearson upper bound, to compare with alpha.
"""

from __future__ import annotations

import json

from model_check_mc import DESC, outcomes

from montecarlo._mc import cp_upper


def main() -> None:
    for name, r, args in outcomes(
        "model_ar1,dst_after,regime_after,var_growth,slow10,regime,hetero_peak",
        "| null (healthy: every rollback is false) | paths | flagged at compile time | run-time check fired (any tick) "
        "| run-time check fired by the decision | gate false rollbacks | false rollback, not flagged in time (CP99 upper) |",
    ):
        n = r.rollback.size
        rt_any = int((r.uncertified_at >= 0).sum())
        rt_time = int(((r.uncertified_at >= 0) & ((r.decided_at < 0) | (r.uncertified_at <= r.decided_at))).sum())
        miss = int((r.rollback & ~r.flagged_in_time).sum())
        rec = {"null": name, "paths": n, "flagged": int(r.flagged.sum()), "runtime_any": rt_any, "runtime_in_time": rt_time,
               "rollbacks": int(r.rollback.sum()), "rollback_not_flagged": miss}
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        print(f"| {DESC[name]} | {n} | {rec['flagged']}/{n} | {rt_any}/{n} | {rt_time}/{n} | {rec['rollbacks']}/{n} "
              f"| {miss}/{n} ({cp_upper(miss, n):.1%}) |", flush=True)


if __name__ == "__main__":
    main()
