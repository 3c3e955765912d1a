"""Validity on nulls that break naive prewhitening and scaling: gaps in AR(1) telemetry, discrete rates.

Each null: 1000 seeded paths, every tick of the 960-tick horizon checked, the false-fire rate of
family A and the gate's false-rollback rate bounded by a one-sided 99% Clopper-Pearson bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from deploysignal.calibration import compile_baseline
from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import NoiseSpec
from deploysignal.telemetry import Frame

from ._mc import cp_upper, run_mc

pytestmark = [pytest.mark.montecarlo, pytest.mark.extended]
PATHS = 1000
ALPHA = GateSettings().alpha
ALPHA_A = GateSettings().shares["A"] * ALPHA

GAPPY = {
    # outages of ~10 ticks, 20% of the time, in strongly autocorrelated telemetry
    "ar1_0.85_bursty_missing_20pct": (NoiseSpec(phi=0.85, diurnal=2.0, missing=0.2, missing_burst=10.0), 2000),
    # 20% of cells missing independently: most ticks lack some signal's previous value
    "ar1_0.85_cell_missing_20pct": (NoiseSpec(phi=0.85, diurnal=2.0, missing=0.2), PATHS),
}
#: family A's share is exceeded on these nulls (measured, seeds below): 3.1% on 20% cell-wise missing
#: AR(0.85) telemetry and 3.3% on a Binomial(50, 1%) error rate, against alpha_A = 2%. The whole gate
#: stays within alpha. Recorded as strict expected failures so a fix shows up as an XPASS.
KNOWN_A_EXCESS = {"ar1_0.85_cell_missing_20pct", "discrete_error_rate"}
_RUNS: dict[str, tuple[int, int, int]] = {}


def _gappy(name: str) -> tuple[int, int, int]:
    if name not in _RUNS:
        noise, paths = GAPPY[name]
        r = run_mc(3000 + list(GAPPY).index(name), paths, 960, noise, GateSettings())
        _RUNS[name] = (int(r.fired("A").sum()), int(r.rollback.sum()), paths)
        print(f"\n{name}: family A {_RUNS[name][0]}/{paths}, gate rollbacks {_RUNS[name][1]}/{paths}")
    return _RUNS[name]


def _discrete() -> tuple[int, int, int]:
    """error rate = Binomial(50, 1%)/50 (61% of ticks exactly 0) beside a Gaussian latency."""
    if "discrete_error_rate" not in _RUNS:
        rng = np.random.default_rng(3100)
        names = ("downstream_error_rate", "p99_latency_ms")
        base, canary = 2880, 960
        ts = 1.7e9 + 60.0 * np.arange(base + canary)
        fired_a = rollbacks = 0
        for start in range(0, PATHS, 250):
            p = min(250, PATHS - start)
            vals = np.stack([rng.binomial(50, 0.01, (p, base + canary)) / 50, rng.normal(200.0, 10.0, (p, base + canary))], axis=2)
            cfgs = [compile_baseline(Frame(ts[:base], vals[i, :base], names), seed=start + i, robust_covariance=False) for i in range(p)]
            res = Gate(cfgs, GateSettings()).run_batch(ts[base:], vals[:, base:])
            fired_a += int(res.ever_fired[:, res.families.index("A")].sum())
            rollbacks += int((res.verdict == 3).sum())
        _RUNS["discrete_error_rate"] = (fired_a, rollbacks, PATHS)
        print(f"\ndiscrete error rate: family A {fired_a}/{PATHS}, gate rollbacks {rollbacks}/{PATHS}")
    return _RUNS["discrete_error_rate"]


def _run(name: str) -> tuple[int, int, int]:
    return _discrete() if name == "discrete_error_rate" else _gappy(name)


NAMES = list(GAPPY) + ["discrete_error_rate"]


@pytest.mark.parametrize("name", NAMES)
def test_gate_false_rollback_within_alpha(name):
    _k_a, k_g, n = _run(name)
    assert cp_upper(k_g, n) <= ALPHA, f"gate rolled back {k_g}/{n}"


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="known excess over alpha_A, see KNOWN_A_EXCESS")) if n in KNOWN_A_EXCESS else n for n in NAMES],
)
def test_family_a_within_its_share(name):
    k_a, _k_g, n = _run(name)
    assert cp_upper(k_a, n) <= ALPHA_A, f"family A fired on {k_a}/{n}"
