"""Seeded Monte-Carlo validity of early proceed (FamilyA's docstring): for a channel whose harm is
at least tau from the first tick, P(its proceed test ever rejects 'harm >= tau') <= alpha_proceed
(Ville), so P(the gate proceeds early while some channel's harm >= tau) <= alpha_proceed
(intersection-union over channels).

Every path draws its own baseline and canary; the canary's p99 latency steps up from its first tick by
the shift whose harm, in the units the proceed test measures, is exactly tau: the boundary of the
tested null, where the guarantee is tightest. Two checks per run, each accepted only if the one-sided
99% Clopper-Pearson upper bound of the observed rate is <= alpha_proceed: the p99 channel's proceed
test ever rejecting within the window (the per-channel claim; read after every tick), and the gate
proceeding before the window's last tick (what an operator sees; rollbacks by the other tests make it
rarer, especially in two-sample mode where most paths roll back before early proceed is allowed).

Harm in score units: the compiler divides innovations by their MAD scale; the score clips them at
``C_LO``/``C_HI`` and divides by the clipped score's sd (two-sample mode: the paired difference of
canary and control innovations over sqrt 2, clipped at ``C_PAIR``). A step of ``m`` marginal sd on an
AR(1) process moves the innovations by ``m sqrt((1 - phi) / (1 + phi))`` marginal-innovation sd after
the first tick (with the true phi: the compiled phi's error is carried by the null's lag term).

Before 0.4.0 the proceed test centred its bets on the null's predictor of the cell bias and global
level offset, which absorbs part of a harmful step: at a one-sample harm of 1.00 tau (iid, 1000 paths)
the gate proceeded early on 66 paths, 6.6% against 1%; at 1.15 tau on the AR(1) null below, 69 of
2000 (3.5%).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from deploysignal.calibration import C_HI, C_LO
from deploysignal.detectors._family_a import C_PAIR
from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec, Regression

from ._mc import MCResult, Variant, cp_lower, cp_upper, run_mc

pytestmark = pytest.mark.montecarlo
SETTINGS = GateSettings(early_proceed=True)
ALPHA_P = SETTINGS.proceed_share * SETTINGS.alpha
TAU = SETTINGS.tau
WINDOW = SETTINGS.window
PATHS = 2000


def _density(kind: str):
    if kind == "t3":
        return stats.t(3, scale=1 / math.sqrt(3.0))  # unit variance, as the simulator scales it
    return stats.norm()


def _clip_mean(s: float, lo: float, hi: float, pdf) -> float:
    """E[clip(e + s, -lo, hi)] for innovations ``e`` with density ``pdf``."""
    f = lambda u: min(max(u + s, -lo), hi) * pdf(u)  # noqa: E731
    return sum(integrate.quad(f, a, b, limit=200)[0] for a, b in ((-np.inf, -lo - s), (-lo - s, hi - s), (hi - s, np.inf)))


def one_sample_harm(s: float, kind: str) -> float:
    """Harm of an innovation shift ``s`` (marginal-innovation sd) in one-sample score units: the
    innovation over its MAD scale, clipped, centred, over the clipped score's sd."""
    law = _density(kind)
    mad = 1.4826 * law.ppf(0.75)  # symmetric: median |e| is the upper quartile
    pdf = lambda u: law.pdf(u * mad) * mad  # noqa: E731 - density of e / mad
    m0 = _clip_mean(0.0, C_LO, C_HI, pdf)
    f2 = lambda u: (min(max(u, -C_LO), C_HI) - m0) ** 2 * pdf(u)  # noqa: E731
    sd = math.sqrt(sum(integrate.quad(f2, a, b, limit=200)[0] for a, b in ((-np.inf, -C_LO), (-C_LO, C_HI), (C_HI, np.inf))))
    return (_clip_mean(s / mad, C_LO, C_HI, pdf) - m0) / sd


def two_sample_harm(s: float) -> float:
    """Harm of an innovation shift ``s`` of the canary against its control (Gaussian innovations): the
    paired difference (z_canary - z_control) / sqrt 2 is N(s / sqrt 2, 1) before its clip at C_PAIR."""
    return _clip_mean(s / math.sqrt(2.0), C_PAIR, C_PAIR, stats.norm.pdf)


def step_for(harm, target: float, phi: float) -> float:
    """Step (marginal sd) whose innovation shift has the ``target`` harm."""
    s = optimize.brentq(lambda s: harm(s) - target, 0.0, 5.0, xtol=1e-12)
    return s / math.sqrt((1 - phi) / (1 + phi))


def _check(seed: int, noise: NoiseSpec, settings: GateSettings, magnitude: float, name: str) -> None:
    r = run_mc(seed, PATHS, WINDOW, noise, settings, regression=Regression(("p99_latency_ms",), magnitude), track_proceed=True)
    _assert_bounds(r, name)


def _assert_bounds(r: MCResult, name: str) -> None:
    assert r.verdicts.size >= PATHS
    assert (r.verdicts > 0).all()
    crossed = r.harm_excluded[:, r.proceed_channels.index("p99_latency_ms")]
    early = (r.verdicts == 1) & (r.decided_at < WINDOW - 1)
    for what, hit in (("the p99 channel's proceed test rejected", crossed), ("the gate proceeded early", early)):
        k, n = int(hit.sum()), hit.size
        assert cp_upper(k, n) <= ALPHA_P, f"{name}: {what} on {k}/{n} paths at harm tau (CP99 upper {cp_upper(k, n):.4f} > {ALPHA_P})"


def boundary_variants(noise: NoiseSpec) -> dict[str, Variant]:
    """The AR(1) boundary checks as variants of the shared null run (tests/montecarlo/conftest.py): the
    p99 step whose harm is tau in one- and two-sample mode, on the first WINDOW canary (and control)
    ticks of its paths, so one compile per path serves the null checks and these."""
    phi = float(noise.phi or 0.0)
    m1 = step_for(lambda s: one_sample_harm(s, noise.kind), TAU, phi)
    m2 = step_for(two_sample_harm, TAU, phi)
    return {
        "proceed_one_sample": Variant(SETTINGS, Regression(("p99_latency_ms",), m1), WINDOW, two_sample=False, track_proceed=True),
        "proceed_two_sample": Variant(SETTINGS, Regression(("p99_latency_ms",), m2), WINDOW, two_sample=True, track_proceed=True),
    }

def test_harm_formulas():
    """A zero shift has no harm, harm grows with the shift; Gaussian: MAD scale 1, score sd ~0.98 so a
    0.3 shift is ~0.301 score sd; t3: the MAD scale (0.655) magnifies a shift (~1.2x net of the
    larger score sd); the clip at C_PAIR shrinks the paired one a little."""
    assert one_sample_harm(0.0, "gaussian") == pytest.approx(0.0, abs=1e-9)
    assert one_sample_harm(0.3, "gaussian") == pytest.approx(0.3012, abs=5e-4)
    assert one_sample_harm(0.3, "t3") > 1.15 * one_sample_harm(0.3, "gaussian")
    assert 0.29 < two_sample_harm(0.3 * math.sqrt(2.0)) < 0.3
    m = step_for(lambda s: one_sample_harm(s, "gaussian"), TAU, 0.85)
    assert one_sample_harm(m * math.sqrt(0.15 / 1.85), "gaussian") == pytest.approx(TAU, rel=1e-9)


def test_early_proceed_one_sample_at_the_harm_boundary_ar1(null_variants):
    """AR(1) 0.85 + diurnal: the paths (baselines, canary noise) of the shared null run, 2000 x WINDOW
    ticks (``boundary_variants``)."""
    _assert_bounds(null_variants["proceed_one_sample"], "ar1_0.85_diurnal")


@pytest.mark.extended
@pytest.mark.parametrize(
    ("name", "noise", "seed"),
    [
        ("iid", NoiseSpec(phi=0.0, diurnal=0.0), 3101),
        ("student_t3", NoiseSpec(phi=0.0, diurnal=0.0, kind="t3"), 3102),
    ],
)
def test_early_proceed_one_sample_at_the_harm_boundary(name, noise, seed):
    m = step_for(lambda s: one_sample_harm(s, noise.kind), TAU, float(noise.phi or 0.0))
    _check(seed, noise, SETTINGS, m, name)


def test_early_proceed_two_sample_at_the_harm_boundary(null_variants):
    """Two-sample mode, AR(1) 0.85 + diurnal canary and an independent control of the same process: the
    paths of the shared null run, 2000 x WINDOW ticks (``boundary_variants``)."""
    _assert_bounds(null_variants["proceed_two_sample"], "two-sample")


def test_early_proceed_happens_on_healthy_canaries():
    """The bounds above are not met by a test that never proceeds: on healthy iid canaries (harm 0)
    early proceed comes on a share of paths in both modes (``scripts/early_proceed_power.py``: about
    24% one-sample, 89% two-sample at 500 paths)."""
    r = run_mc(3104, 300, WINDOW, NoiseSpec(phi=0.0, diurnal=0.0), SETTINGS, also_two_sample=True)
    for res, lower in ((r, 0.1), (r.two_sample, 0.6)):
        early = (res.verdicts == 1) & (res.decided_at < WINDOW - 1)
        k, n = int(early.sum()), early.size
        assert cp_lower(k, n) > lower, f"early proceed on {k}/{n} healthy paths"
