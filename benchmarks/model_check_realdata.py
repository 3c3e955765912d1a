"""Model check and certification on the healthy stretches of the real-data benchmarks (NAB, SMD, ASD).

For every clean run of ``deploysignal.evaluation._realdata.iter_runs`` (baseline and canary both free of
labelled anomalies, the lengths ``deploysignal eval`` uses), this compiles the baseline through
``certify_baseline`` (model check + rolling-origin backtest, gate window = canary ticks, as ``eval``
runs it) and gates the canary in one-sample mode. It reports per dataset: clean runs, runs with a
failed check, runs with a check that could not run, certified runs, false rollbacks, and false
rollbacks among certified runs (99% Clopper-Pearson upper bound).

Usage: ``PYTHONPATH=src python benchmarks/model_check_realdata.py [--max-null N] [--out FILE.json]``
(about 15 minutes on two busy cores with the default ``--max-null 10``).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from scipy.stats import beta

from deploysignal.evaluation._realdata import DATASETS, iter_runs, load_dataset
from deploysignal.gate import Gate, GateSettings, certification_status, certify_baseline


def cp_upper(k: int, n: int, conf: float = 0.99) -> float:
    return 1.0 if k >= n else float(beta.ppf(conf, k + 1, n - k))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-null", type=int, default=10)
    ap.add_argument("--datasets", default="nab,smd,asd")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows, runs = [], []
    for ds in args.datasets.split(","):
        _, nb, nc = DATASETS[ds]
        settings = GateSettings(window=nc)
        for s in load_dataset(ds):
            for kind, row, base, can in iter_runs(s, nb, nc, max_null=args.max_null):
                if kind != "clean":
                    continue
                cfg = certify_baseline(base, settings, robust_covariance=False)
                cert = cfg.certification
                status = certification_status(cfg, settings)
                verdict = Gate(cfg, settings).run(can)[-1].verdict
                failed = sorted({r["check"] for r in cert["checks"] if r["passed"] is False})
                unrun = sorted({r["check"] for r in cert["checks"] if r["passed"] is None})
                runs.append({"dataset": ds, "series": s.name, "row": row, "failed": failed, "not_run": unrun,
                             "backtest_windows": cert["backtest"]["windows"], "backtest_flagged": cert["backtest"]["flagged"],
                             "certified": status["certified"], "rollback": verdict == "rollback"})
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        rs = [r for r in runs if r["dataset"] == ds]
        n = len(rs)
        cert_rb = sum(r["certified"] and r["rollback"] for r in rs)
        n_cert = sum(r["certified"] for r in rs)
        rows.append({"dataset": ds, "clean_runs": n, "check_failed": sum(bool(r["failed"]) for r in rs),
                     "check_not_run_only": sum(not r["failed"] and bool(r["not_run"]) for r in rs),
                     "backtest_flagged": sum(r["backtest_flagged"] for r in rs), "certified": n_cert,
                     "rollbacks": sum(r["rollback"] for r in rs), "certified_and_rollback": cert_rb,
                     "cp99_upper_joint": cp_upper(cert_rb, n) if n else None,
                     "failed_checks": {c: sum(c in r["failed"] for r in rs) for c in sorted({c for r in rs for c in r["failed"]})}})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"summary": rows, "runs": runs}, fh, indent=1, sort_keys=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
