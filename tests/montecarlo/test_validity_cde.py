"""Seeded Monte-Carlo validity of families C, D and E (issue 3 acceptance).

Uses the session-shared null runs of ``conftest.py`` (2000 paths per null, each with its own 2-day
baseline compiled from the null process, 960 monitored ticks): i.i.d., AR(1) 0.85 with strong diurnal
seasonality, Student-t(3), 5% missing values and equicorrelated (0.5) signals (CI runs the AR(1) null;
the others are marked ``extended``, see ``conftest.py``). A family's false-fire
rate passes only if the one-sided 99% Clopper-Pearson upper bound of the observed rate is at most its
alpha share (DESIGN.md: C 20%, D 10%, E 10% of alpha = 0.05).
"""

from __future__ import annotations

import pytest

from deploysignal.gate import GateSettings
from deploysignal.simulate import NoiseSpec

from ._mc import cp_upper, run_mc

pytestmark = pytest.mark.montecarlo
SETTINGS = GateSettings()


@pytest.mark.parametrize("fam", ["C", "D", "E"])
def test_family_false_fire_rate(null_run, fam):
    name, r = null_run
    alpha_f = SETTINGS.shares[fam] * SETTINGS.alpha
    fired = r.fired(fam)
    k, n = int(fired.sum()), fired.size
    print(f"{name} family {fam}: {k}/{n} fired, CP99 upper {cp_upper(k, n):.4f} (alpha {alpha_f})")
    assert n >= 2000
    assert cp_upper(k, n) <= alpha_f, f"{name}: family {fam} fired on {k}/{n} null paths (CP99 upper {cp_upper(k, n):.4f} > {alpha_f})"


def test_two_sample_null_families_ce(two_sample_null):
    """Two-sample mode (paired with an independent control stream of the same process), AR(1) 0.85 with
    strong diurnal seasonality, 2000 paths: C and E within their alpha (D: see the next test)."""
    r = two_sample_null
    for fam in ("C", "E"):
        _check_share(r, fam, "two-sample ar1")


#: Paths for family D in two-sample mode. Its realised false-fire rate on this null is about 0.1% (4/4000
#: over two 2000-path runs), a fifth of alpha_D = 0.5%; a one-sided 99% CP bound <= 0.5% then needs at
#: most 2 fires in 2000 paths (probability ~0.68 at 0.1%) but allows 9 in 4000 (probability ~0.99). So the
#: 2000-path check is a coin flip for a correct detector and the claim is tested on 4000 paths.
D_TWO_SAMPLE_PATHS = 4000


@pytest.mark.extended
def test_two_sample_null_family_d():
    """Family D in two-sample mode, AR(1) 0.85 + diurnal, 4000 paths (fresh seed): within alpha_D."""
    r = run_mc(4343, D_TWO_SAMPLE_PATHS, 960, NoiseSpec(phi=0.85, diurnal=2.0), GateSettings(mode="two-sample"))
    for fam in ("C", "D", "E"):
        _check_share(r, fam, "two-sample ar1 (4000 paths)", paths=D_TWO_SAMPLE_PATHS)


def _check_share(r, fam: str, label: str, paths: int = 2000) -> None:
    alpha_f = SETTINGS.shares[fam] * SETTINGS.alpha
    k, n = int(r.fired(fam).sum()), r.fired(fam).size
    assert n >= paths
    print(f"{label} family {fam}: {k}/{n} fired, CP99 upper {cp_upper(k, n):.4f} (alpha {alpha_f})")
    assert cp_upper(k, n) <= alpha_f, f"{label}: family {fam} fired on {k}/{n}"
