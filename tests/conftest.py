from __future__ import annotations

import sys

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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook turns the markers into @group node ids
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``--dist loadgroup``) the Monte-Carlo checks of one null process run on one
    worker, so its session-cached null run is simulated once and shared by the family-A and C/D/E
    checks; different nulls (and the other Monte-Carlo tests) spread over the workers. Likewise the
    checks of the ``eval --quick`` report share one worker (a module fixture is built once per worker), and
    so do the tests of a module that use one of its module-scoped fixtures. The units are queued longest
    first (:func:`_schedule_rank`)."""
    if not config.pluginmanager.hasplugin("xdist"):  # run without pytest-xdist (-p no:xdist): nothing to group
        return
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        null = params.get("null_run", params.get("two_sample_null", params.get("null_variants")))  # these share their null's
        if "montecarlo" in item.nodeid.split("/") and null is not None:
            item.add_marker(pytest.mark.xdist_group(f"null-{null}"))
        elif "quick_report" in getattr(item, "fixturenames", ()):  # one `eval --quick` run, not one per worker
            item.add_marker(pytest.mark.xdist_group("eval-quick"))
        elif item.get_closest_marker("xdist_group") is None and _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=_schedule_rank)  # stable: the longest units of work are handed out first


def _schedule_rank(item) -> int:
    """Position of the test's unit of work in the xdist queue (``--dist loadgroup`` hands the groups out in
    collection order, see :func:`pytest_configure`): the Monte-Carlo null runs and the ``eval --quick``
    report first (each several minutes on one worker: started last, one of them would run alone at the
    end), then the other Monte-Carlo tests, then the groups sharing a started service, then the rest."""
    group = item.get_closest_marker("xdist_group")
    name = group.args[0] if group is not None and group.args else ""
    if name == "eval-quick" or name.startswith("null-"):
        return 0
    if item.get_closest_marker("montecarlo") is not None:
        return 1
    return 2 if group is not None else 3


def _uses_module_fixture(item) -> bool:
    """Whether the test uses a module-scoped fixture (a started service, a simulated scenario, a report).
    Such a module's tests share one worker: spread over both, each worker would set the fixture up again
    (a second server, Prometheus or ``split-eval --quick`` run), which is what a module scope avoids."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(d and d[-1].scope == "module" for d in defs.values())


class _GroupsHonoured:
    """Fail loudly when ``--dist loadgroup`` silently ignores the groups: pytest-xdist 3.8 writes the group
    into a node attribute that pytest 9 no longer reads (hence ``pytest<9`` in pyproject.toml), and then
    every worker recomputes every Monte-Carlo null run and the ``eval --quick`` report."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        if not getattr(config.option, "loadgroup", False):
            return
        for item in items:
            if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid:
                msg = (f"pytest-xdist did not apply the xdist_group of {item.nodeid}: use a pytest version this "
                       "pytest-xdist supports (pyproject.toml pins one)")
                sys.stderr.write(msg + "\n")  # a worker's exception reaches the controller only as INTERNALERROR
                raise pytest.UsageError(msg)


def pytest_configure(config):
    config.pluginmanager.register(_GroupsHonoured(), "deploysignal-groups-honoured")
    # registered here too, so that ``-p no:xdist`` runs (which do not load the plugin that registers it) do not
    # turn the tests' own ``xdist_group`` marks into unknown-mark errors
    config.addinivalue_line("markers", "xdist_group(name): tests that share one pytest-xdist worker")
    if getattr(config.option, "dist", "no") == "loadgroup":
        # pytest-xdist would otherwise queue the groups by their number of tests (largest first), which puts
        # the 3-test ``eval --quick`` group, the longest of all, behind every larger group; the order of
        # pytest_collection_modifyitems above (longest first) is the one wanted.
        config.option.loadscopereorder = False
