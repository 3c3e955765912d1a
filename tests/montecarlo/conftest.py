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
_CACHE: dict[str, object] = {}


@pytest.fixture(scope="session", params=list(NULLS))
def null_run(request):
    """(name, MCResult) of the default gate on PATHS null paths, each with its own 2-day baseline."""
    name = request.param
    if name not in _CACHE:
        seed = 1000 + list(NULLS).index(name)
        _CACHE[name] = run_mc(seed, PATHS, HORIZON, NULLS[name], GateSettings())
    return name, _CACHE[name]
