"""Long real runs of families C, D, E (log-space numerics, no drift of the Sherman-Morrison update).

Complements ``tests/test_families_cde.py::test_log_space_numerics_at_million_tick_magnitudes``, which
starts from states scaled to 10^6-tick magnitudes; here 10^5 real ticks are fed one by one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploysignal.detectors import FamilyC, FamilyD, FamilyE, Observation

pytestmark = [pytest.mark.montecarlo, pytest.mark.extended]
TICKS = 100_000


def _ticks(k, shift, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_t(3, size=(TICKS, k)) / math.sqrt(3.0) + shift
    cz = rng.standard_t(3, size=(TICKS, k)) / math.sqrt(3.0)
    return z, cz


def test_family_c_long_run_finite_and_no_drift():
    k = 4
    chol = np.linalg.cholesky(0.5 * np.eye(k) + 0.5)
    ref = np.random.default_rng(0).normal(size=(1, 1, 300, k)) @ chol.T
    c = FamilyC(chol[None, None], ref, np.array([[300]]), np.zeros(1, dtype=int), names=tuple("abcd"), alpha=0.01, two_sample=True)
    z, cz = _ticks(k, np.array([0.3, -0.3, 0.0, 0.0]), 1)
    linv = np.linalg.inv(chol)
    V = np.zeros((k, k))
    for t in range(TICKS):
        ev = c.update(Observation(t, 60.0 * t, 0, z[t], z[t], cz[t], None))
        x = linv @ ((np.clip(z[t], -6, 6) - np.clip(cz[t], -6, 6)) / math.sqrt(2))
        x *= min(1.0, 3 * math.sqrt(k) / np.linalg.norm(x))
        V += np.outer(x, x)
    assert math.isfinite(ev.log_wealth) and ev.fired and ev.log_wealth > 1000
    exact = np.linalg.inv(V + np.eye(k) / c.tau2)
    assert np.allclose(c._A[0], exact, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("fam", ["D", "E"])
def test_families_d_e_long_run_finite(fam):
    k = 3
    if fam == "D":
        det = FamilyD(np.zeros((1, 1, k)), np.zeros(1, dtype=int), names=tuple("abc"), alpha=0.005)
        z, _ = _ticks(k, 0.0, 2)
        z[:, 0] += 0.8 * np.cos(2 * np.pi * np.arange(TICKS) / 3)
    else:
        ref = np.random.default_rng(3).normal(size=(1, 1, 500, k))
        det = FamilyE(np.eye(k)[None, None], ref, np.array([[500]]), np.zeros(1, dtype=int), names=tuple("abc"), alpha=0.005, horizon=960)
        z, _ = _ticks(k, 0.0, 4)
        z[:, 2] += 6.0
    for t in range(TICKS):
        ev = det.update(Observation(t, 60.0 * t, 0, z[t], z[t]))
    assert math.isfinite(ev.log_wealth) and ev.fired and ev.log_wealth > 1000
