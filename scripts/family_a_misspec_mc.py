"""Family A's false rollbacks on the misspecified healthy nulls of issue 22, before and after the nuisance band.

Run from the repository root: ``PYTHONPATH=src:tests .venv/bin/python scripts/family_a_misspec_mc.py``
(``--paths N`` per null, default 100; ``--nulls a,b``; ``--out FILE.jsonl`` appends one JSON line per
null; ``--nuisance learned,band`` the treatments). Same paths as ``scripts/model_check_mc.py`` (``tests/montecarlo/_misspec.py``, seed 2200 + the
null's index, so the first ``N`` paths of that script's run): each path's baseline is compiled once with
the model check, and its 960-tick healthy canary runs through family A alone
(``GateSettings(shares={"A": 0.4})``) and through the default gate, each with the 0.4.0 nuisance
centring (``a_nuisance="learned"``, the default) and with the band (``"band"``, opt-in since 0.5.0). Every
rollback is false. Prints a markdown table: per null the model check's flag rate and, per gate and
treatment, false rollbacks with the one-sided 99% Clopper-Pearson upper bound, and the rollbacks on
baselines the check did not flag.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from deploysignal.detectors._kernels import ROLLBACK
from deploysignal.gate import Gate, GateSettings
from montecarlo._mc import cp_upper
from montecarlo._misspec import NULLS, WORKERS, _compile, simulate_null

def gates(treatments: str = "learned,band") -> dict[str, GateSettings]:
    """Family A alone and the default gate under each ``a_nuisance`` treatment."""
    out = {f"A {t}": GateSettings(shares={"A": 0.4}, a_nuisance=t) for t in treatments.split(",")}
    return out | {f"gate {t}": GateSettings(a_nuisance=t) for t in treatments.split(",")}


GATES = gates()


def run(name: str, paths: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ts, vals, base = simulate_null(name, rng, paths)
    seeds = rng.integers(2**31 - 1, size=paths)
    with ProcessPoolExecutor(WORKERS) as pool:
        res = list(pool.map(_compile, [(ts[:base], vals[i, :base], int(seeds[i])) for i in range(paths)], chunksize=5))
    flagged = np.array([r[0] for r in res])
    rec: dict = {"null": name, "paths": paths, "flagged": int(flagged.sum())}
    for label, settings in GATES.items():
        rb = Gate([r[2] for r in res], settings).run_batch(ts[base:], vals[:, base:]).verdict == ROLLBACK
        rec[label] = int(rb.sum())
        rec[label + " unflagged"] = int((rb & ~flagged).sum())
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kw in (("--paths", {"type": int, "default": 100}), ("--nulls", {"default": ",".join(NULLS)}), ("--out", {}),
                     ("--nuisance", {"default": "learned,band"})):
        ap.add_argument(flag, **kw)
    args = ap.parse_args()
    global GATES
    GATES = gates(args.nuisance)
    print("| null | paths | flagged | " + " | ".join(f"{g} (CP99) / unflagged" for g in GATES) + " |")
    print("|---|---|---|" + "---|" * len(GATES))
    for name in args.nulls.split(","):
        rec = run(name, args.paths, seed=2200 + NULLS.index(name))
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        n = rec["paths"]
        cells = " | ".join(f"{rec[g]}/{n} ({cp_upper(rec[g], n):.1%}) / {rec[g + ' unflagged']}" for g in GATES)
        print(f"| {name} | {n} | {rec['flagged']}/{n} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
