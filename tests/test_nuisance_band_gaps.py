"""The gap reductions of family A's band, computed in chunks with early exit, equal the reduction over
every gap at once (the definition), bit for bit, on edge values and random coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from deploysignal.detectors import _nuisance_band as nb


def _all_gaps(phi: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    phi = np.asarray(phi, dtype=float)
    g = np.arange(1, max_gap + 1, dtype=float).reshape((-1,) + (1,) * phi.ndim)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore", over="ignore"):
        f = g * np.abs(phi) ** (g - 1.0) * np.sqrt((1.0 - phi**2) / (1.0 - phi ** (2.0 * g)))
        den = g * np.abs(phi) ** (g - 1.0)
        ratio = np.where(den > 0, (1.0 - phi**g) / np.where(den > 0, den, 1.0), np.inf)
    return np.nanmax(np.where(np.isfinite(f), f, 0.0), axis=0), ratio.min(axis=0)


EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.98, -0.98, 0.999999, -0.999999, 1.5, -1.5, np.nan, np.inf, -np.inf,
                  1e-300, 5e-324, 0.5, -0.5, 0.3])


@pytest.mark.parametrize("max_gap", [1, 3, 64, 65, 4096])
def test_chunked_gap_reductions_equal_the_definition(max_gap: int) -> None:
    rng = np.random.default_rng(max_gap)
    for phi in (EDGES, rng.uniform(-1.0, 1.0, (40, 12)), rng.uniform(0.9, 0.98, (3, 7)), np.array(0.7), np.zeros((0, 3))):
        gap, slack = _all_gaps(phi, max_gap)
        got_gap, got_slack = nb.gap_factor(phi, max_gap), nb._monotone_slack(phi, max_gap)
        assert got_gap.shape == gap.shape and np.array_equal(got_gap, gap, equal_nan=True)
        assert got_slack.shape == slack.shape and np.array_equal(got_slack, slack, equal_nan=True)


def test_docstring_values() -> None:
    assert nb.gap_factor(np.array(0.3)) == pytest.approx(1.0)
    assert 3.5 < float(nb.gap_factor(np.array(0.98))) < 4.5
    assert float(nb._monotone_slack(np.array(0.4))) == pytest.approx(0.6)
