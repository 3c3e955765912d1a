"""Family A with ``a_nuisance="mixture"`` (issue 22): the model's own null, seeded Monte Carlo.

The null of ``tests/montecarlo/test_validity_a.py`` (AR(1) 0.85 + strong diurnal, 2-day baselines, every
tick of a 960-tick canary). Extended: 2,000 paths, one- and two-sample, family A's false-fire rate
within its share (one-sided 99% Clopper-Pearson upper bound <= alpha_A) and the gate's within alpha
(about 25 CPU-minutes; ``scripts/family_a_validity_mc.py mixture`` prints the same counts). CI: 300 paths,
one-sample, the gate within alpha (about 2 CPU-minutes): 300 paths cannot bound family A's 2% share.
"""

from __future__ import annotations

import pytest

from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec

from ._mc import cp_upper, run_mc

pytestmark = pytest.mark.montecarlo
SETTINGS = GateSettings(a_nuisance="mixture")
ALPHA = SETTINGS.alpha
ALPHA_A = SETTINGS.shares["A"] * ALPHA
NULL = NoiseSpec(phi=0.85, diurnal=2.0)


@pytest.mark.extended  # ~2 CPU-minutes for a check other families dominate; CI holds the mixture's wiring
# (tests/test_family_a_mixture.py: fires exactly at 2/alpha_e) and its exact per-tick factor
# (tests/test_family_a_mixture_factor.py); docs/testing.md
def test_gate_false_rollbacks_within_alpha_ci():
    r = run_mc(1001, 300, 960, NULL, SETTINGS)
    k, n = int(r.rollback.sum()), r.rollback.size
    assert cp_upper(k, n) <= ALPHA, f"gate rolled back {k}/{n} null paths (CP99 upper {cp_upper(k, n):.4f} > {ALPHA})"


@pytest.mark.extended
def test_family_a_within_its_share_both_modes():
    r = run_mc(1001, 2000, 960, NULL, SETTINGS, also_two_sample=True)
    for label, res in (("one-sample", r), ("two-sample", r.two_sample)):
        k, n = int(res.fired("A").sum()), res.fired("A").size
        assert cp_upper(k, n) <= ALPHA_A, f"{label}: family A fired on {k}/{n} (CP99 upper {cp_upper(k, n):.4f} > {ALPHA_A})"
        k = int(res.rollback.sum())
        assert cp_upper(k, n) <= ALPHA, f"{label}: gate rolled back {k}/{n} (CP99 upper {cp_upper(k, n):.4f} > {ALPHA})"
