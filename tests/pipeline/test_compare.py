"""Output comparison: the paired sequential test's error guarantees by seeded Monte Carlo (one-sided 99%
Clopper-Pearson bounds), its power, and the known failure when pairs arrive in quality-correlated order.

Reproduce the extended figures: ``PYTHONPATH=src python -m pytest tests/pipeline/test_compare.py -m extended -s``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from deploysignal.pipeline._compare import paired_comparison, sequential_verdicts

MARGIN, TOL, ALPHA = 0.02, 0.0, 0.05


def _upper(k: int, n: int) -> float:
    return 1.0 if k >= n else float(beta.ppf(0.99, k + 1, n - k))


def _discordant(rng: np.random.Generator, mean: np.ndarray | float, p_disc: float, size: tuple[int, int]) -> np.ndarray:
    """Paired differences of two 0/1 graders: +1 (only the incumbent right), -1, 0 with E[x] = mean."""
    p1, pm = (p_disc + mean) / 2.0, (p_disc - mean) / 2.0
    u = rng.random(size)
    return np.where(u < p1, 1.0, np.where(u < p1 + pm, -1.0, 0.0))


def _sticky(rng: np.random.Generator, mean: float, size: tuple[int, int], stick: float = 0.95) -> np.ndarray:
    """Order correlated with quality: regimes (mean +-0.1, kept with probability ``stick`` per pair) around
    the boundary ``mean``; the marginal mean is at the boundary, the conditional mean is not."""
    b, n = size
    state = rng.random(b) < 0.5
    x = np.empty(size)
    for t in range(n):
        state = np.where(rng.random(b) > stick, rng.random(b) < 0.5, state)
        x[:, t] = _discordant(rng, np.where(state, mean + 0.1, mean - 0.1), 0.3, (b,))
    return x


def _rate(x: np.ndarray, bad: int) -> tuple[int, float]:
    v, _, _, _ = sequential_verdicts(x, margin=MARGIN, tolerance=TOL, alpha=ALPHA)
    k = int((v == bad).sum())
    return k, _upper(k, x.shape[0])


@pytest.mark.parametrize("null, bad", [("noninferiority", 1), ("harm", -1)])
def test_error_rates_at_the_null_boundary_ci(null: str, bad: int) -> None:
    """CI instance (1,000 paths of 600 pairs): false pass at E[x] = margin, false fail at E[x] = tolerance."""
    rng = np.random.default_rng(26 + bad)
    x = _discordant(rng, MARGIN if null == "noninferiority" else TOL, 0.2, (1000, 600))
    k, up = _rate(x, bad)
    print(f"{null}: {k}/1000, CP99 upper {up:.4f}")
    assert up <= ALPHA, (k, up)


def test_power_better_passes_worse_fails() -> None:
    rng = np.random.default_rng(7)
    better = _discordant(rng, -0.05, 0.2, (200, 3000))
    worse = _discordant(rng, 0.05, 0.2, (200, 3000))
    vb, atb, _, _ = sequential_verdicts(better, margin=MARGIN, tolerance=TOL, alpha=ALPHA)
    vw, _, _, _ = sequential_verdicts(worse, margin=MARGIN, tolerance=TOL, alpha=ALPHA)
    assert (vb == 1).mean() >= 0.95 and (vw == -1).mean() >= 0.95, ((vb == 1).mean(), (vw == -1).mean())
    print("power: better passes", (vb == 1).mean(), "median pairs", np.median(atb[vb == 1]), "; worse fails", (vw == -1).mean())
    assert np.median(atb[vb == 1]) < 1500


def test_single_stream_matches_the_batch_and_rejects_bad_scores() -> None:
    rng = np.random.default_rng(3)
    inc = (rng.random(500) < 0.8).astype(float)
    cand = np.where(rng.random(500) < 0.1, 1.0, inc)
    res = paired_comparison(inc, cand, margin=MARGIN, tolerance=TOL, alpha=ALPHA)
    v, at, pni, ph = sequential_verdicts((inc - cand)[None, :], margin=MARGIN, tolerance=TOL, alpha=ALPHA)
    assert res.verdict == "pass" and res.decided_at == int(at[0]) and res.p_noninferiority == float(pni[0]) <= ALPHA
    from deploysignal._exceptions import InputError

    with pytest.raises(InputError, match="row 3"):
        paired_comparison(np.array([1.0, 0.0, 1.5]), np.array([1.0, 1.0, 1.0]))


@pytest.mark.extended
@pytest.mark.parametrize("null, bad, kind", [("noninferiority", 1, "binary"), ("harm", -1, "binary"),
                                             ("noninferiority", 1, "continuous"), ("harm", -1, "continuous")])
def test_error_rates_at_the_null_boundary_extended(null: str, bad: int, kind: str) -> None:
    """4,000 paths of 1,000 pairs; continuous = regression-style scores (N(mean, 0.3) differences, clipped
    to [-1, 1] symmetrically around the mean so the mean stays on the boundary)."""
    rng = np.random.default_rng(2600 + bad)
    mean = MARGIN if null == "noninferiority" else TOL
    if kind == "binary":
        x = _discordant(rng, mean, 0.2, (4000, 1000))
    else:
        x = mean + np.clip(rng.normal(0.0, 0.3, (4000, 1000)), -0.9, 0.9)
    k, up = _rate(x, bad)
    print(f"{null} {kind}: {k}/4000, CP99 upper {up:.4f}")
    assert up <= ALPHA, (k, up)


@pytest.mark.extended
@pytest.mark.xfail(strict=True, reason="known limit: pairs in quality-correlated order break the conditional-mean "
                   "assumption (measured ~11% false pass, ~14% false fail at alpha 5%); documented in docs/pipeline.md")
@pytest.mark.parametrize("null, bad", [("noninferiority", 1), ("harm", -1)])
def test_quality_correlated_order_breaks_the_guarantee(null: str, bad: int) -> None:
    rng = np.random.default_rng(2650 + bad)
    k, up = _rate(_sticky(rng, MARGIN if null == "noninferiority" else TOL, (4000, 1000)), bad)
    print(f"{null} sticky: {k}/4000, CP99 upper {up:.4f}")
    assert up <= ALPHA, (k, up)
