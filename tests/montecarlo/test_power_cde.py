"""Each of families C, D, E catches what the others miss (issue 3 acceptance).

Seeded batches of paths, each with its own compiled 2-day baseline; the canary (480 ticks) carries a
shape change from :mod:`deploysignal.simulate._patterns`:

* joint shift (``decouple``): six signals' correlation with the other six flips from +0.6 to -0.6,
  every marginal mean and sd unchanged: C fires, the per-signal family A does not;
* period-3 oscillation of kv-cache utilisation with unchanged mean and variance: D fires, A and C do not;
* a 30-tick excursion of p99 latency (down 2 sd) and eval score (up 2 sd), each in its benign direction
  (the axis family A does not watch) and against the baseline correlation of 0.8: E fires.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import NoiseSpec, apply_pattern, simulate_streams
from deploysignal.simulate._core import _PROFILE
from deploysignal.simulate._patterns import PATTERN_SCENARIOS

from ._mc import BASELINE, SIGNALS, WORKERS, _compile, cp_lower, cp_upper

pytestmark = pytest.mark.montecarlo
PATHS = 100
CANARY = 480


def _run(scenario: str, seed: int):
    _desc, corr, pattern, _n = PATTERN_SCENARIOS[scenario]
    noise = NoiseSpec(correlation=corr)
    rng = np.random.default_rng(seed)
    ts, vals = simulate_streams(rng, PATHS, BASELINE + CANARY, noise=noise, signals=SIGNALS)
    seeds = rng.integers(2**31 - 1, size=PATHS)
    with ProcessPoolExecutor(WORKERS) as pool:
        cfgs = list(pool.map(_compile, [(ts[:BASELINE], vals[i, :BASELINE], int(seeds[i]), True) for i in range(PATHS)], chunksize=10))
    canary = apply_pattern(ts[BASELINE:], vals[:, BASELINE:], SIGNALS, pattern, _PROFILE, noise.diurnal)
    res = Gate(cfgs, GateSettings()).run_batch(ts[BASELINE:], canary)
    fired = {f: res.ever_fired[:, i] for i, f in enumerate(res.families)}
    print(scenario, {f: f"{v.mean():.2f}" for f, v in fired.items()})
    return fired


def _rate_at_least(fired: np.ndarray, p: float) -> bool:
    return cp_lower(int(fired.sum()), fired.size) >= p


def _rate_at_most(fired: np.ndarray, p: float) -> bool:
    return cp_upper(int(fired.sum()), fired.size) <= p


def test_joint_shift_c_fires_a_does_not():
    fired = _run("joint_shift", 301)
    assert _rate_at_least(fired["C"], 0.85), f"C caught {fired['C'].mean():.2f}"
    assert _rate_at_most(fired["A"], 0.1), f"A fired on {fired['A'].mean():.2f}"


def test_oscillation_d_fires_a_and_c_do_not():
    fired = _run("oscillation", 302)
    assert _rate_at_least(fired["D"], 0.85), f"D caught {fired['D'].mean():.2f}"
    assert _rate_at_most(fired["A"], 0.1), f"A fired on {fired['A'].mean():.2f}"
    assert _rate_at_most(fired["C"], 0.1), f"C fired on {fired['C'].mean():.2f}"


def test_novel_pattern_e_fires_a_does_not():
    fired = _run("novel_pattern", 303)
    assert _rate_at_least(fired["E"], 0.85), f"E caught {fired['E'].mean():.2f}"
    assert _rate_at_most(fired["A"], 0.1), f"A fired on {fired['A'].mean():.2f}"
