from __future__ import annotations

import numpy as np
import pytest

from deploysignal.calibration import compile_baseline
from deploysignal.simulate import simulate


@pytest.fixture(scope="session")
def sim_healthy():
    return simulate("healthy", seed=21, baseline_ticks=2880, canary_ticks=300)


@pytest.fixture(scope="session")
def cfg_healthy(sim_healthy):
    return compile_baseline(sim_healthy.baseline, seed=5, robust_covariance=False)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``--dist loadgroup``) the Monte-Carlo checks of one null process run on one
    worker, so its session-cached null run is simulated once and shared by the family-A and C/D/E
    checks; different nulls (and the other Monte-Carlo tests) spread over the workers. Likewise the
    checks of the ``eval --quick`` report share one worker (a module fixture is built once per worker)."""
    if not config.pluginmanager.hasplugin("xdist"):  # run without pytest-xdist (-p no:xdist): nothing to group
        return
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "montecarlo" in item.nodeid.split("/") and "null_run" in params:
            item.add_marker(pytest.mark.xdist_group(f"null-{params['null_run']}"))
        elif "quick_report" in getattr(item, "fixturenames", ()):  # one `eval --quick` run, not one per worker
            item.add_marker(pytest.mark.xdist_group("eval-quick"))
