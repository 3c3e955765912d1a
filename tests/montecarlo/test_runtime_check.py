"""Monte Carlo of the one-sample run-time model check (issue 22; :mod:`deploysignal.gate._runtime_check`).

Its own budget: on innovations drawn from the check's model (unit Gaussian plus each hour cell's level
error with the compiled variance), P(fires within 960 ticks) <= 0.01, one-sided 99% Clopper-Pearson at
2,000 paths in ``extended`` (measured: see docs/one-sample.md). CI runs the same code on 300 paths and
asserts only that the count is not significantly above the budget (one-sided binomial test at 1%: at
most 8 fires; a rate of 4% fails it with probability 0.85): 300 paths cannot show a rate below 1%. On the full pipeline (7-day baselines of the
model's AR(1) 0.85 + diurnal null compiled with the model check, default gate): the check's false flags
<= 0.01 (CP99), ``extended``, 2,000 paths. On the healthy processes the compiled model does not
describe (``_misspec.py``): P(false rollback and flagged neither at compile time nor by the run-time
check at or before the rollback) <= alpha (CP99), ``extended``, 2,000 paths; the DST change after the
baseline, the regime the baseline never showed and noise growing over the canary do not meet it yet
(strict xfail: measured at 160 paths, docs/one-sample.md). Heavy tails and cross-signal correlation
(review findings 1 and 2): the budget on MAD-scaled t(3) and equicorrelated (0.5) innovations in CI (300
paths, binomial test), and on t(3), t(5), Laplace, equicorrelation 0.3 / 0.5 / 0.8 and t(3) with 0.5 /
0.8 at 2,000 paths each, every path with its own baseline estimates, in ``extended``. The CI instances of the gate path (the check fires on a canary one hour
late, holds, is recorded and replayed; an on-time canary's records are unchanged) are in
tests/test_runtime_check.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom
from scipy.stats import t as student_t

from deploysignal.calibration import compile_baseline
from deploysignal.gate import Gate, GateSettings, RuntimeCheck
from deploysignal.simulate import NoiseSpec, simulate

from ._mc import cp_upper
from ._misspec import NULLS, run_null

pytestmark = pytest.mark.montecarlo
ALPHA = GateSettings().alpha
BUDGET = GateSettings().runtime_check
#: departures after the baseline that the run-time check does not yet catch before the false rollback
#: often enough (160 paths, docs/one-sample.md: DST 9/160, new regime 48/160, noise growing to 1.5x 62/160
#: rolled back before any flag; the last since the variance part is calibrated on the baseline's own rate)
OPEN = ("dst_after", "regime_after", "var_growth")


def _equicorrelated(k: int, rho: float) -> np.ndarray:
    return np.linalg.cholesky((1.0 - rho) * np.eye(k) + rho * np.ones((k, k)))


def _own_model_fires(paths: int, seed: int, kind: str = "gaussian", rho: float = 0.0) -> int:
    """Fires of the check over 960 ticks on ``paths`` canaries of the compiled model's process: each hour
    cell's level error drawn with the compiled variance, innovations with the cross-signal correlation
    ``rho`` (equicorrelated) and the law ``kind`` ("gaussian" or "t3", MAD-scaled to 1 as the compiler
    scales them); the config is compiled from a 3-day baseline of the same law and correlation."""
    s = simulate("healthy", seed=0, baseline_ticks=4320, canary_ticks=480, noise=NoiseSpec(diurnal=2.0, kind=kind, correlation=rho))
    cfg = compile_baseline(s.baseline, seed=0, robust_covariance=False)
    gate = Gate(cfg, GateSettings())
    rng = np.random.default_rng(seed)
    check = RuntimeCheck([cfg] * paths, BUDGET)
    var = check._var[0]  # noqa: SLF001 - the compiled level-error variance the check integrates out
    k = var.shape[1]
    offsets = rng.standard_normal((paths,) + var.shape) * np.sqrt(var)
    mix = _equicorrelated(k, rho)
    t3_mad = 1.4826 * student_t.ppf(0.75, 3)
    for i in range(960):
        ts = s.canary.timestamps[0] + 60.0 * i
        c, b, a = gate._cell(ts, "")[0], gate._cell(ts - 3600.0, "")[0], gate._cell(ts + 3600.0, "")[0]  # noqa: SLF001
        e = rng.standard_normal((paths, k)) if kind == "gaussian" else rng.standard_t(3, size=(paths, k)) / t3_mad
        check.step(i, e @ mix.T * np.asarray(cfg.arrays["orient"]) + offsets[:, c], c, b, a)
    return int((check.fired_at >= 0).sum())


def test_check_not_above_its_budget_on_its_own_model_ci():
    k, n = _own_model_fires(300, 2600), 300
    assert k <= binom.ppf(0.99, n, BUDGET), f"fired on {k}/{n}: significantly above the budget {BUDGET}"


def _draw(rng: np.random.Generator, law: str, shape: tuple[int, ...]) -> np.ndarray:
    if law == "gaussian":
        return rng.standard_normal(shape)
    if law == "laplace":
        return rng.laplace(size=shape)
    if law == "exp":  # right skew
        return rng.exponential(size=shape) - 1.0
    if law == "negexp":  # left skew
        return 1.0 - rng.exponential(size=shape)
    if law == "lognormal":  # right skew, sigma 0.8
        return rng.lognormal(0.0, 0.8, size=shape)
    return rng.standard_t(int(law[1:]), size=shape)  # "t3", "t5"


def _law_fires(paths: int, seed: int, law: str, rho: float) -> int:
    """Fires of the check over 960 ticks on canaries whose innovations follow ``law`` ("gaussian",
    "t3", "t5", "laplace", and the skewed "exp", "negexp", "lognormal") with equicorrelation ``rho``,
    each path with its *own* baseline estimates made as the compiler makes them (so their estimation
    error is part of the rate): a 3,000-row fitting sample sets the median (the compiler's cell levels
    are medians, so skewed innovations have a nonzero clipped mean), the MAD scale and the Ledoit-Wolf
    covariance of the clipped innovations, a disjoint 1,000-row calibration sample the variance part's
    null rate (:func:`exceedance_bound`) and the phase / level parts' centre (:func:`clipped_centre`). Hour cells,
    regressors and level-error variances come from a compiled 3-day Gaussian baseline; each path draws
    its cells' level errors with the compiled variance."""
    from sklearn.covariance import LedoitWolf

    from deploysignal.calibration import C_HI
    from deploysignal.gate import clipped_centre, exceedance_bound

    s = simulate("healthy", seed=0, baseline_ticks=4320, canary_ticks=480, noise=NoiseSpec(diurnal=2.0))
    cfg = compile_baseline(s.baseline, seed=0, robust_covariance=False)
    gate = Gate(cfg, GateSettings())
    rng = np.random.default_rng(seed)
    check = RuntimeCheck([cfg] * paths, BUDGET)
    var = check._var[0].copy()  # noqa: SLF001 - the Gaussian baseline's, before the per-path centres
    k = var.shape[1]
    mix = _equicorrelated(k, rho).T * np.asarray(cfg.arrays["orient"])
    scales, meds = np.empty((paths, k)), np.empty((paths, k))
    for p in range(paths):
        fit, cal = _draw(rng, law, (3000, k)) @ mix, _draw(rng, law, (1000, k)) @ mix
        meds[p] = np.median(fit, axis=0)
        scales[p] = 1.4826 * np.median(np.abs(fit - meds[p]), axis=0)
        check._cov[p] = LedoitWolf().fit(np.clip((fit - meds[p]) / scales[p], -C_HI, C_HI)).covariance_  # noqa: SLF001 - every block
        ref = np.clip((cal - meds[p]) / scales[p], -C_HI, C_HI)
        check._p_up[p] = exceedance_bound(ref, BUDGET / 6.0)  # noqa: SLF001
        centre, centre_var = clipped_centre(ref)
        check._centre[p] = centre  # noqa: SLF001
        check._var[p] += centre_var - check._centre_var[p]  # noqa: SLF001 - in place of the Gaussian baseline's
    offsets = rng.standard_normal((paths,) + var.shape) * np.sqrt(var)
    for i in range(960):
        ts = s.canary.timestamps[0] + 60.0 * i
        c, b, a = gate._cell(ts, "")[0], gate._cell(ts - 3600.0, "")[0], gate._cell(ts + 3600.0, "")[0]  # noqa: SLF001
        check.step(i, (_draw(rng, law, (paths, k)) @ mix - meds) / scales + offsets[:, c], c, b, a)
    return int((check.fired_at >= 0).sum())


LAW_NULLS = [("t3", 0.0), ("t5", 0.0), ("laplace", 0.0), ("gaussian", 0.3), ("gaussian", 0.5), ("gaussian", 0.8), ("t3", 0.5), ("t3", 0.8),
             ("exp", 0.0), ("negexp", 0.0), ("lognormal", 0.0), ("negexp", 0.5)]


@pytest.mark.extended
@pytest.mark.parametrize(("law", "rho"), LAW_NULLS, ids=[f"{law}-rho{rho}" for law, rho in LAW_NULLS])
def test_check_within_its_budget_on_heavy_tails_and_correlation(law, rho):
    """Review findings 1 and 2 at 2,000 paths: the budget holds (CP99) on heavy-tailed and correlated
    innovations, with each path's own baseline estimates (docs/one-sample.md)."""
    k = _law_fires(2000, 5300 + LAW_NULLS.index((law, rho)), law, rho)
    assert cp_upper(k, 2000) <= BUDGET, f"{law}, rho {rho}: fired on {k}/2000 (CP99 upper {cp_upper(k, 2000):.4f} > {BUDGET})"


@pytest.mark.parametrize(("kind", "rho"), [("t3", 0.0), ("gaussian", 0.5)], ids=["student_t3", "correlated_0.5"])
def test_check_not_above_its_budget_on_nulls_breaking_its_assumptions_ci(kind, rho):
    """Review findings 1 and 2: heavy tails (MAD-scaled t(3): E[z^2] > 1) and cross-signal correlation."""
    k, n = _own_model_fires(300, 2601, kind, rho), 300
    assert k <= binom.ppf(0.99, n, BUDGET), f"{kind}, rho {rho}: fired on {k}/{n}: significantly above the budget {BUDGET}"


@pytest.mark.parametrize("law", ["exp", "negexp", "lognormal"])
def test_check_not_above_its_budget_on_skewed_innovations_ci(law):
    """Second review, finding 1: cells are medians, so a skewed law's clipped innovations have a nonzero
    mean; without the reference-row centre (:func:`clipped_centre`) this harness fires on 300/300 paths
    (centred exponential, either sign). 200 paths: at most 6 fires (one-sided binomial test at 1%)."""
    k, n = _law_fires(200, 2700 + ["exp", "negexp", "lognormal"].index(law), law, 0.0), 200
    assert k <= binom.ppf(0.99, n, BUDGET), f"{law}: fired on {k}/{n}: significantly above the budget {BUDGET}"


@pytest.mark.extended
def test_check_within_its_budget_on_its_own_model():
    k = _own_model_fires(2000, 4300)
    assert cp_upper(k, 2000) <= BUDGET, f"fired on {k}/2000 (CP99 upper {cp_upper(k, 2000):.4f} > {BUDGET})"


@pytest.mark.extended
def test_check_within_its_budget_on_the_models_null():
    r = run_null("model_ar1", 2000, 2200 + NULLS.index("model_ar1"))
    k = int((r.uncertified_at >= 0).sum())
    assert cp_upper(k, 2000) <= BUDGET, f"fired on {k}/2000 (CP99 upper {cp_upper(k, 2000):.4f})"


@pytest.mark.extended
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="open: docs/one-sample.md")) if n in OPEN else n
                                  for n in NULLS if not n.startswith("model_")])
def test_false_rollbacks_flagged_in_time_or_within_alpha(name):
    r = run_null(name, 2000, 2200 + NULLS.index(name))
    miss = int((r.rollback & ~r.flagged_in_time).sum())
    assert cp_upper(miss, 2000) <= ALPHA, f"{name}: {miss}/2000 false rollbacks flagged neither at compile time nor in time"
