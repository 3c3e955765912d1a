"""Shared Monte-Carlo runs: each null is simulated once per session and checked by several tests."""

from __future__ import annotations

import pytest

from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec

from ._mc import run_mc

PATHS = 2000
HORIZON = 960  # window 480 + one extension: every tick of the gate's horizon is monitored

NULLS = {
    "iid": NoiseSpec(phi=0.0, diurnal=0.0),
    "ar1_0.85_diurnal": NoiseSpec(phi=0.85, diurnal=2.0),
    "student_t3": NoiseSpec(kind="t3"),
    "missing_5pct": NoiseSpec(missing=0.05),
    "correlated_0.5": NoiseSpec(correlation=0.5),
}
#: Nulls outside the 20-minute CI budget, run with ``./run test -m extended`` (each costs about 5 CPU-minutes:
#: 2000 compiled baselines and 2000 x 960 gate ticks). CI keeps the AR(1) 0.85 + diurnal null, the hardest
#: for prewhitening and the one the two-sample checks share.
EXTENDED_NULLS = ("iid", "student_t3", "missing_5pct", "correlated_0.5")
#: The two-sample checks reuse this null's compiled baselines and canaries, paired with a control.
TWO_SAMPLE_NULL = "ar1_0.85_diurnal"
_CACHE: dict[str, object] = {}


def null_result(name: str):
    """The MCResult of one null, simulated once per session (and worker)."""
    if name not in _CACHE:
        seed = 1000 + list(NULLS).index(name)
        variants = None
        if name == TWO_SAMPLE_NULL:  # the early-proceed boundary checks, on the same compiled baselines
            from .test_validity_proceed import boundary_variants

            variants = boundary_variants(NULLS[name])
        _CACHE[name] = run_mc(seed, PATHS, HORIZON, NULLS[name], GateSettings(), also_two_sample=name == TWO_SAMPLE_NULL, variants=variants)
    return _CACHE[name]


@pytest.fixture(scope="session", params=[pytest.param(n, marks=pytest.mark.extended) if n in EXTENDED_NULLS else n for n in NULLS])
def null_run(request):
    """(name, MCResult) of the default gate on PATHS null paths, each with its own 2-day baseline."""
    return request.param, null_result(request.param)


@pytest.fixture(scope="session", params=[TWO_SAMPLE_NULL])
def two_sample_null(request):
    """The default gate in two-sample mode on the AR(1) 0.85 + diurnal null: PATHS paths, each with its
    own baseline and canary (those of the one-sample null run) and an independent control stream.
    (Parametrised by the null's name so that the run shares that null's xdist group.)"""
    return null_result(request.param).two_sample


@pytest.fixture(scope="session", params=[TWO_SAMPLE_NULL])
def null_variants(request):
    """The gate variants run on the AR(1) 0.85 + diurnal null's compiled baselines, canary noise and
    control streams (``boundary_variants`` in test_validity_proceed.py), by name. (Parametrised by the
    null's name so that the run shares that null's xdist group.)"""
    return null_result(request.param).variants
