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
    """Under pytest-xdist (``--dist loadgroup``) all Monte-Carlo tests run on one worker, so the
    session-cached null runs are simulated once and shared by the family-A and C/D/E checks."""
    if not config.pluginmanager.hasplugin("xdist"):  # run without pytest-xdist (-p no:xdist): nothing to group
        return
    for item in items:
        if "montecarlo" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.xdist_group("montecarlo"))
