"""Family A with ``a_nuisance="mixture"`` fires exactly when the mixture crosses ``2/alpha_e`` (review of
the mixture, note 5): the mixture is recomputed here from the compiled config's own arrays (clip
``[-2, 6]``, score sd, cell centres, cell and day-offset variances with ``drift_allowance``, channel
weights) with numpy, not with
the kernel, so a wiring or alpha error (a wrong clip, sd, centre, variance or threshold) moves the tick."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploysignal.calibration import compile_baseline, stack_arrays
from deploysignal.detectors import FamilyA
from deploysignal.simulate import simulate

DRIFT = 0.1  # drift_allowance: its square joins the day-offset variance v_g
DELTAS = (0.1, 0.2, 0.4, 0.8, 1.6)  # the documented grid (docs/one-sample.md)


@pytest.fixture(scope="module")
def cfg():
    return compile_baseline(simulate("step", seed=0, canary_ticks=10).baseline, seed=0)


def _mixture(cfg, z: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """log of the mixture after each tick (T,), one-sample, AR lag zero (no AR edge), from the config."""
    arr = stack_arrays(cfg)
    k = len(cfg.signals)
    two = np.asarray(arr["two_sided"], dtype=bool).reshape(-1)[-k:]
    chans = [(s, 0) for s in range(k)] + [(s, 1) for s in np.flatnonzero(two)]
    T = z.shape[0]
    out = np.full((T, len(chans) * len(DELTAS)), -np.inf)
    for j, (s, d) in enumerate(chans):
        sign = 1.0 if d == 0 else -1.0
        sd = arr["score_sd"][0, d, s]
        y = np.clip(sign * z[:, s], -2.0, 6.0) / sd - arr["cell_center"][0, d, cells, s]
        v = np.maximum(arr["cell_bias_var"][0, d, cells, s], 1e-12)
        vg = arr["day_bias_var"][0, d, s] + DRIFT**2
        w = 1.0 / (k * (2 if two[s] else 1) * len(DELTAS))
        U, A = np.zeros(T), np.zeros(T)
        for t in range(T):
            for c in np.unique(cells[: t + 1]):
                in_c = cells[: t + 1] == c
                n = in_c.sum()
                U[t] += y[: t + 1][in_c].sum() / (1 + n * v[np.argmax(in_c)])
                A[t] += n / (1 + n * v[np.argmax(in_c)])
        for i, delta in enumerate(DELTAS):
            out[:, j * len(DELTAS) + i] = math.log(w) + (delta * U - delta**2 * A / 2) / (1 + vg * A)
    return np.logaddexp.reduce(out, axis=1)


@pytest.mark.parametrize("alpha", [0.02, 0.2])
def test_fires_at_the_first_tick_the_mixture_reaches_two_over_alpha_e(cfg, alpha):
    rng = np.random.default_rng(5)
    k, T = len(cfg.signals), 150
    z = rng.normal(size=(T, k))
    p99 = [s.name for s in cfg.signals].index("p99_latency_ms")
    z[:, p99] += 1.0  # a harmful step from the start
    cells = (np.arange(T) // 60 % 24).astype(np.int64)
    fam = FamilyA(cfg, alpha=alpha, horizon=480, drift_allowance=DRIFT, nuisance="mixture")
    fired_at, reason, lw = None, "", np.empty(T)
    for t in range(T):
        lw[t : t + 1], f = fam.step(z[t : t + 1], int(cells[t]), None, np.zeros((1, k)), None)
        if f[0] and fired_at is None:
            fired_at, reason = t, fam.state()["reason"]
    mix = _mixture(cfg, z, cells)
    thr = math.log(2 / (alpha * 0.8))  # alpha_e: what the band's 20% leaves
    crossed = np.flatnonzero(mix >= thr)
    assert crossed.size, "the step must cross within the test's ticks"
    assert fired_at == crossed[0], (fired_at, crossed[0], mix[crossed[0] - 1 : crossed[0] + 1], thr)
    assert "mixture over the nuisance" in reason
    # the log-wealth reported is the mixture rescaled to family A's own threshold (or the e-SR's, if larger)
    scaled = mix - thr + math.log(1 / alpha)
    assert np.all(lw >= scaled - 1e-9) and np.isclose(lw, scaled, rtol=0, atol=1e-9).mean() >= 0.9
