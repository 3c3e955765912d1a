"""Per-tick cost of families C, D, E for 12 signals (pytest-benchmark).

Run: ``PYTHONPATH=src python -m pytest tests/bench -q --benchmark-only`` (the figures in the README come
from this file). Each round feeds the next tick of a pre-standardised healthy stream to one detector.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deploysignal.detectors import FamilyC, FamilyD, FamilyE, Observation

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def ticks(cfg_healthy):
    rng = np.random.default_rng(0)
    k = len(cfg_healthy.signals)
    return [Observation(t, 60.0 * t, 0, rng.normal(size=k), np.zeros(k), rng.normal(size=k), None) for t in range(2000)]


def _builder(fam, cfg, two):
    if fam == "C":
        return FamilyC.from_config(cfg, alpha=0.01, two_sample=two)
    if fam == "D":
        return FamilyD.from_config(cfg, alpha=0.005, two_sample=two)
    return FamilyE.from_config(cfg, alpha=0.005, horizon=960, two_sample=two)


@pytest.mark.parametrize("two", [False, True], ids=["one-sample", "two-sample"])
@pytest.mark.parametrize("fam", ["C", "D", "E"])
def test_family_update_latency(benchmark, fam, two, cfg_healthy, ticks):
    det = _builder(fam, cfg_healthy, two)
    stream = itertools.cycle(ticks)
    for _ in range(200):  # warm-up
        det.update(next(stream))
    benchmark.extra_info["family"] = fam
    ev = benchmark(lambda: det.update(next(stream)))
    assert np.isfinite(ev.log_wealth)
