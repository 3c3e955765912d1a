"""Seeded Monte-Carlo validity of family A and the whole gate (issue 2 acceptance).

Every path draws its own finite baseline (2 days of 1-minute ticks) and canary from the same null
process, compiles the baseline, and runs the gate for the whole horizon (window + one extension,
960 ticks), checking every tick. A false fire/rollback is any fire within the horizon. The claim
"rate <= alpha" is accepted only if the one-sided 99% Clopper-Pearson *upper* bound of the observed
rate is <= alpha.
"""

from __future__ import annotations

import numpy as np
import pytest

from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec

from ._mc import cp_lower, cp_upper, run_mc

pytestmark = pytest.mark.montecarlo
ALPHA = GateSettings().alpha
ALPHA_A = GateSettings().shares["A"] * ALPHA


def test_family_a_false_fire_rate(null_run):
    name, r = null_run
    k, n = int(r.fired("A").sum()), r.fired("A").size
    assert n >= 2000
    assert cp_upper(k, n) <= ALPHA_A, f"{name}: family A fired on {k}/{n} null paths (CP99 upper {cp_upper(k, n):.4f} > {ALPHA_A})"


def test_gate_false_rollback_rate(null_run):
    name, r = null_run
    k, n = int(r.rollback.sum()), r.rollback.size
    assert cp_upper(k, n) <= ALPHA, f"{name}: gate rolled back {k}/{n} null paths (CP99 upper {cp_upper(k, n):.4f} > {ALPHA})"
    # and the gate mostly reaches a decision: proceed (or extend) rather than nothing
    assert np.all(r.verdicts > 0)


@pytest.mark.extended  # negative control (~55 CPU-s): the CI null checks above are the guarantee (docs/testing.md)
def test_without_prewhitening_ar1_null_inflates_false_fires():
    """Negative control: same AR(1) 0.85 null, prewhitening disabled -> family A's guarantee breaks."""
    r = run_mc(77, 300, 960, NoiseSpec(phi=0.85, diurnal=2.0), GateSettings(), prewhiten=False)
    k, n = int(r.fired("A").sum()), r.fired("A").size
    assert cp_lower(k, n) > 5 * ALPHA_A, f"expected inflation without prewhitening, got {k}/{n}"


def test_two_sample_mode_null_ar1(two_sample_null):
    """Two-sample mode on an AR(1) 0.85 + diurnal null (2000 paths): canary and control independent
    draws; family A within its share and the whole gate within alpha."""
    r = two_sample_null
    k, n = int(r.fired("A").sum()), r.fired("A").size
    assert n >= 2000
    assert cp_upper(k, n) <= ALPHA_A, f"two-sample: family A fired on {k}/{n}"
    k, n = int(r.rollback.sum()), r.rollback.size
    assert cp_upper(k, n) <= ALPHA, f"two-sample: gate rolled back {k}/{n} (CP99 upper {cp_upper(k, n):.4f} > {ALPHA})"


@pytest.mark.extended  # a second null for the two-sample guarantee (~100 s); CI keeps test_two_sample_mode_null_ar1
def test_two_sample_mode_cancels_shared_load_shocks():
    """Canary and control both hit by the same strong, persistent load process (1.5 sd, AR(1) 0.95)
    that the baseline never saw: one-sample mode rolls back on most paths (it cannot tell load from
    regression); the paired difference keeps family A within its alpha."""
    nz = NoiseSpec(phi=0.0, diurnal=1.0)
    one = run_mc(79, 600, 960, nz, GateSettings(), common_shock=1.5, also_two_sample=True)
    two = one.two_sample
    k, n = int(two.fired("A").sum()), two.fired("A").size
    assert cp_upper(k, n) <= ALPHA_A, f"two-sample: family A fired on {k}/{n}"
    assert cp_lower(int(one.rollback.sum()), one.rollback.size) > 0.5
