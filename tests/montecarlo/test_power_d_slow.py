"""Family D: oscillations slower than 24 ticks (issue 22; the filter bank now spans periods 2..48).

Seeded paths, each with its own compiled 2-day baseline (default process), 480 canary ticks:

* ``test_period_30_oscillation``: the evaluation suite's effect (p99 latency + sd * sin(2 pi (t - 60) / 30)
  from tick 60, i.e. +-1 marginal sd, period 30) on 960 canary ticks (the gate's window and one
  extension), 80 paths: the default gate must roll back on >= 90% of paths (one-sided 99%
  Clopper-Pearson lower bound), and D must be the family that fires. Before the change: 0% (docs/eval).
  Not asserted, measured once: the harder variance-preserving pattern of
  :mod:`deploysignal.simulate._patterns` (0.9 sd wave, noise shrunk so mean and variance are unchanged)
  on 480 canary ticks is caught on 34/60 paths.
* the suite's own ``oscillation`` scenario (+-1 sd, period 30) under ``extended`` (200 paths).

Validity of D with the wider bank is the 2000-path AR(1) 0.85 + diurnal null of
``test_validity_cde.py`` (unchanged threshold, alpha_D = 0.005). CI cost: about 1 CPU-minute.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from deploysignal.detectors import FamilyD, Observation
from deploysignal.detectors._family_d import PERIODS
from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import NoiseSpec, simulate_streams
from deploysignal.simulate._core import _PROFILE

from ._mc import BASELINE, SIGNALS, WORKERS, _compile, cp_lower

pytestmark = pytest.mark.montecarlo
CANARY = 480


def _period_30(paths: int, seed: int):
    from concurrent.futures import ProcessPoolExecutor

    canary_ticks = 960
    rng = np.random.default_rng(seed)
    ts, vals = simulate_streams(rng, paths, BASELINE + canary_ticks, noise=NoiseSpec(), signals=SIGNALS)
    seeds = rng.integers(2**31 - 1, size=paths)
    with ProcessPoolExecutor(WORKERS) as pool:
        cfgs = list(pool.map(_compile, [(ts[:BASELINE], vals[i, :BASELINE], int(seeds[i]), True) for i in range(paths)], chunksize=10))
    t = np.arange(canary_ticks)
    canary = vals[:, BASELINE:].copy()
    canary[:, :, SIGNALS.index("p99_latency_ms")] += (t >= 60) * _PROFILE["p99_latency_ms"][1] * np.sin(2 * np.pi * (t - 60) / 30.0)
    return Gate(cfgs, GateSettings()).run_batch(ts[BASELINE:], canary)


def test_period_30_oscillation():
    paths = 80
    res = _period_30(paths, 2230)
    rolled = res.verdict == 3
    d = res.ever_fired[:, res.families.index("D")]
    print(f"period-30 oscillation: rollback {rolled.sum()}/{paths} (CP99 lower {cp_lower(int(rolled.sum()), paths):.3f}), "
          f"D fired {d.sum()}, median decision tick {np.median(res.decided_at[rolled]):.0f}")
    assert cp_lower(int(rolled.sum()), paths) >= 0.9
    assert cp_lower(int(d.sum()), paths) >= 0.9


def test_period_30_attributed_to_d_on_p99():
    """One path through the record-building API: the drivers name p99 latency at a period near 30."""
    rng = np.random.default_rng(2231)
    ts, vals = simulate_streams(rng, 1, BASELINE + CANARY, noise=NoiseSpec(), signals=SIGNALS)
    fam = FamilyD.from_config(_compile((ts[:BASELINE], vals[0, :BASELINE], 7, True)), alpha=0.005)
    osc = 1.2 * np.cos(2 * np.pi * np.arange(CANARY) / 30.0)
    z = rng.standard_normal((CANARY, len(SIGNALS)))
    z[:, SIGNALS.index("p99_latency_ms")] += osc
    ev = None
    for t in range(CANARY):
        ev = fam.update(Observation(t, 60.0 * t, 0, z[t], z[t]))
    assert ev is not None and ev.fired
    m = re.match(r"p99_latency_ms@period=(\d+)$", ev.drivers[0])
    assert m and 27 <= int(m.group(1)) <= 33, ev.drivers


def test_state_saved_with_the_old_bank_continues_with_it():
    """A state written with the 2..24 bank (before issue 22) restores into a default-built detector, which
    then continues exactly like the old one."""
    rng = np.random.default_rng(5)
    old = FamilyD(np.zeros((1, 1, 2)), np.zeros(1, dtype=int), names=("a", "b"), alpha=0.005, periods=np.arange(2, 25))
    z = rng.standard_normal((80, 2))
    for t in range(40):
        old.update(Observation(t, 60.0 * t, 0, z[t], z[t]))
    new = FamilyD(np.zeros((1, 1, 2)), np.zeros(1, dtype=int), names=("a", "b"), alpha=0.005).load_state(old.state())
    assert len(new.channel_names()) == len(old.channel_names()) < 2 * len(PERIODS)
    for t in range(40, 80):
        a = old.update(Observation(t, 60.0 * t, 0, z[t], z[t]))
        b = new.update(Observation(t, 60.0 * t, 0, z[t], z[t]))
        assert a == b


@pytest.mark.extended
def test_suite_oscillation_200():
    """The evaluation suite's scenario (p99 +-1 sd, period 30, from tick 60; 4320-tick baseline, 960 ticks)."""
    from deploysignal.calibration import compile_baseline
    from deploysignal.simulate._suite import simulate_suite

    sims = [simulate_suite("oscillation", s) for s in range(200)]
    cfgs = [compile_baseline(s.baseline, seed=i, robust_covariance=False, check_model=False) for i, s in enumerate(sims)]
    res = Gate(cfgs, GateSettings()).run_batch(sims[0].canary.timestamps, np.stack([s.canary.values for s in sims]))
    k = int((res.verdict == 3).sum())
    print(f"suite oscillation: rollback {k}/200 (CP99 lower {cp_lower(k, 200):.3f})")
    assert cp_lower(k, 200) >= 0.9
