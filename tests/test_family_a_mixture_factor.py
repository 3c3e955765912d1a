"""The per-tick factor of family A's mixture on the compiler's own score law (review of the mixture,
finding 1), computed exactly (quadrature), so docs/one-sample.md and the module docstring of
:mod:`deploysignal.detectors._nuisance_mixture` cannot drift from it.

With Gaussian innovations the one-sample score is ``y = (clip(z, -C_LO, C_HI) - m) / sd`` (``m``, ``sd``:
the mean and sd of the clipped score, as the compiler estimates them). The Gaussian likelihood ratio's
per-tick factor ``E exp(delta y - delta^2 / 2)`` is above 1 for every ``delta`` of the grid: the
recentred lower clip and the division by ``sd < 1`` leave a right tail of N(0, 1) / sd, heavier than
the unit Gaussian the ratio assumes. So the mixture is **not** a supermartingale under the model's own
null; its validity is approximate and measured (docs/one-sample.md). Two-sample mode's paired
differences (symmetric clip, no rescaling) have factor <= 1 (checked below)."""

from __future__ import annotations

import math

import pytest
from scipy import integrate, stats

from deploysignal.calibration import C_HI, C_LO
from deploysignal.detectors._family_a import C_PAIR
from deploysignal.detectors._nuisance_mixture import DELTAS

#: delta -> per-tick factor, as documented (4 decimals)
DOCUMENTED = {0.1: 1.0000, 0.2: 1.0002, 0.4: 1.0011, 0.8: 1.0071, 1.6: 1.0401}


def _expect(g, lo: float, hi: float, scale: float = 1.0) -> float:
    """E g(clip(X, lo, hi)) for X ~ N(0, scale^2), exactly up to quadrature error (< 1e-10)."""
    body = integrate.quad(lambda x: g(x) * stats.norm.pdf(x, scale=scale), lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    return body + g(lo) * stats.norm.cdf(lo, scale=scale) + g(hi) * stats.norm.sf(hi, scale=scale)


def test_one_sample_factor_is_the_documented_one_and_above_one():
    m = _expect(lambda x: x, -C_LO, C_HI)
    sd = math.sqrt(_expect(lambda x: (x - m) ** 2, -C_LO, C_HI))
    assert sd == pytest.approx(0.97990, abs=1e-5)
    got = {float(d): _expect(lambda x: math.exp(d * (x - m) / sd - d * d / 2), -C_LO, C_HI) for d in DELTAS}
    assert got == pytest.approx(DOCUMENTED, abs=5e-5)
    assert all(f > 1.0 for f in got.values())
    assert sum(got.values()) / len(got) == pytest.approx(1.0097, abs=5e-5)  # the grid's average (uniform weights)


def test_two_sample_factor_is_at_most_one():
    # paired difference (z - z_ctl) / sqrt(2) ~ N(0, 1), clipped symmetrically at +-C_PAIR, not rescaled
    for d in DELTAS:
        assert _expect(lambda x: math.exp(d * x - d * d / 2), -C_PAIR, C_PAIR) <= 1.0
