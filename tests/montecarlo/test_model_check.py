"""Monte Carlo of the model check (issue 22): on each healthy process the one-sample model does not
describe, either the check flags the baseline or the gate's false rollbacks stay within alpha, measured
jointly: P(baseline certified by the checks AND the gate rolls back) <= alpha, one-sided 99%
Clopper-Pearson (the backtest can only withdraw certifications, so this bounds the certified gate's
rate too). And the check must not flag the model's own AR(1) + diurnal null too often.

CI runs the model's null with 7-day baselines and the slow-component null at 10% (the issue's
headline: 62% false rollbacks), 100 paths each, exactly the runs of the table in docs/one-sample.md
(71 CPU-seconds, 3.3 minutes wall on two busy cores, together); every null at 2,000 paths is
``extended``.
Processes and seeds: ``_misspec.py``; the table: ``scripts/model_check_mc.py``.
"""

from __future__ import annotations

import pytest

from deploysignal.gate import GateSettings

from ._mc import cp_upper
from ._misspec import NULLS, run_null

pytestmark = pytest.mark.montecarlo
ALPHA = GateSettings().alpha
#: screening target, fixed before measuring: the check flags at most this share of 7-day baselines of
#: the model's own null (measured: 2/100; 29/2000 in the extended run). On 2-day baselines it flags 15/100, above it: reported in
#: docs/one-sample.md as an open problem, not asserted.
MAX_FALSE_FLAG = 0.15
CI_PATHS = {"model_ar1": 100, "slow10": 100}
EXTENDED_PATHS = 2000
#: departures after the baseline (DST change, noise growth, a new regime) are the run-time check's
#: (tests/montecarlo/test_runtime_check.py): nothing at compile time sees them
MISSPECIFIED = tuple(n for n in NULLS if not n.startswith("model_") and n not in ("dst_after", "var_growth", "regime_after"))


def _run(name: str):
    return run_null(name, CI_PATHS.get(name, EXTENDED_PATHS), 2200 + NULLS.index(name))


def _joint(r) -> tuple[int, int]:
    return int((~r.flagged & r.rollback).sum()), r.rollback.size


def _ci(names):
    return [n if n in CI_PATHS else pytest.param(n, marks=pytest.mark.extended) for n in names]


@pytest.mark.parametrize("name", _ci(["model_ar1"]))
def test_check_rarely_flags_the_models_own_null(name):
    """AR(1) 0.85 + strong diurnal, 7-day baselines: the check's false-flag rate, CP99 upper <= MAX_FALSE_FLAG."""
    r = _run(name)
    k, n = int(r.flagged.sum()), r.flagged.size
    assert cp_upper(k, n) <= MAX_FALSE_FLAG, f"{name}: check flagged {k}/{n} baselines of the model's own null"


@pytest.mark.parametrize("name", _ci(MISSPECIFIED + ("model_ar1_2day",)))
def test_misspecified_null_is_flagged_or_within_alpha(name):
    r = _run(name)
    both, n = _joint(r)
    assert cp_upper(both, n) <= ALPHA, (
        f"{name}: flagged {int(r.flagged.sum())}/{n}, rolled back {int(r.rollback.sum())}/{n}, "
        f"certified and rolled back {both}/{n} (CP99 upper {cp_upper(both, n):.4f} > {ALPHA})")


@pytest.mark.extended
@pytest.mark.xfail(strict=True, reason="a DST change after the baseline is invisible at compile time (100 paths: 58% false rollbacks, 1% flagged)")
def test_dst_change_after_the_baseline_is_not_caught():
    r = _run("dst_after")
    both, n = _joint(r)
    assert cp_upper(both, n) <= ALPHA
