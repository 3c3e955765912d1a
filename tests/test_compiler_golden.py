"""Byte-for-byte regression of :func:`compile_baseline`: the compiler's speed-ups must not change one
byte of a config. The SHA-256 of each case's canonical JSON (``CompiledConfig.to_json``) was recorded
with the compiler before they were made (commit 37ca98c); the cases cover the Monte-Carlo harness's
shape (12 signals, two days, AR(1) + diurnal, with and without prewhitening), the defaults (model check,
MCD), missing values in bursts and at random, heavy tails, day effects, two tiers with discrete
signals and gaps in the timeline, and a short baseline (under a day: the phi fallback). The model
check and the MCD (not on the changed paths, and most of a compile's time) run in two cases only.
The hashes hold for the pinned numpy/scipy/scikit-learn: a different BLAS or library version may
round differently, and then they are re-recorded from the old compiler, not from the new one."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from deploysignal.calibration import compile_baseline
from deploysignal.simulate import NoiseSpec, simulate, simulate_streams
from deploysignal.simulate._core import _PROFILE
from deploysignal.telemetry import Frame

SIGNALS = tuple(_PROFILE)


def _streams(seed: int, noise: NoiseSpec, n: int = 2880, signals: tuple[str, ...] = SIGNALS) -> Frame:
    ts, vals = simulate_streams(np.random.default_rng(seed), 1, n, noise=noise, signals=signals)
    return Frame(ts, vals[0], signals)


def _tiers(seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    n = 3 * 1440
    ts = np.arange(n) * 60.0
    keep = np.ones(n, dtype=bool)
    keep[500:620] = False  # a two-hour gap
    keep[rng.random(n) < 0.02] = False
    vals = np.column_stack([
        rng.normal(850.0, 40.0, n),
        np.round(rng.normal(220.0, 12.0, n)),  # integer-valued: discrete
        rng.poisson(0.3, n) / 100.0,  # a low-count error rate: mostly 0
        rng.normal(0.82, 0.015, n),
    ])
    vals[rng.random(vals.shape) < 0.03] = np.nan
    tiers = np.array(["gold", "free"])[rng.integers(0, 2, n)]
    return Frame(ts[keep], vals[keep], ("p99_latency_ms", "tokens_per_turn", "downstream_error_rate", "eval_score"), cohort=tiers[keep])


_MC = {"robust_covariance": False, "check_model": False}
CASES = {
    "mc_ar1_s1": (lambda: _streams(1, NoiseSpec(phi=0.85, diurnal=2.0)), {**_MC, "seed": 11}),
    "mc_ar1_s2": (lambda: _streams(2, NoiseSpec(phi=0.85, diurnal=2.0)), {**_MC, "seed": 12}),
    "mc_ar1_s3_no_prewhiten": (lambda: _streams(3, NoiseSpec(phi=0.85, diurnal=2.0)), {**_MC, "seed": 13, "prewhiten": False}),
    "mc_iid": (lambda: _streams(4, NoiseSpec(phi=0.0, diurnal=0.0)), {**_MC, "seed": 14}),
    "healthy_defaults": (lambda: simulate("healthy", seed=21, baseline_ticks=2880, canary_ticks=10).baseline, {"seed": 5}),
    "t3_missing": (lambda: _streams(5, NoiseSpec(kind="t3", missing=0.05)), {**_MC, "seed": 6}),
    "bursts_day_effect": (lambda: _streams(6, NoiseSpec(missing=0.1, missing_burst=30.0, day_effect=0.5), n=4 * 1440), {**_MC, "seed": 7}),
    "two_tiers_discrete": (lambda: _tiers(8), {**_MC, "seed": 8}),
    "two_tiers_discrete_defaults": (lambda: _tiers(8), {"seed": 8}),
    "short": (lambda: _streams(9, NoiseSpec(), n=600, signals=("p99_latency_ms", "refusal_rate")), {"seed": 9, "min_cell_samples": 20}),
}
#: sha256 of ``compile_baseline(frame, **kwargs).to_json()`` with the compiler of commit 37ca98c
GOLDEN = {
    "bursts_day_effect": "fb4365e85d9b79e46edf6a915079e43e9ef8f7c47335975c1ec07ed349d98d7a",
    "healthy_defaults": "242f88a653b5c2a6fb7167f06c332f7a11c28b11b640e0acc4f0de00a066941d",
    "mc_ar1_s1": "afc5bb22ea6b1a505eac436f2c2d50a387f3712cba8c32c465576dc6f43b98e3",
    "mc_ar1_s2": "38b08f0d3cf18e8bf94ca16d6e7dad1a3e39ceabccb86522005aca700e79ac38",
    "mc_ar1_s3_no_prewhiten": "9bdc2c42734423ffbd136279e0396c92c9f1edb060c08d4a3127d8a740fbebb5",
    "mc_iid": "f171f43b0081fec3ecbd73a10b7e0d3b318600420c6941154779fe7671c67c6e",
    "short": "ea808df6301acbb96c3faeba95c87c5b856ebcfa4982295740e6246dfcec5f9b",
    "t3_missing": "9cc8db28af08d4e5eeceb1f9080b5d67dbe6e7a733334ff8487c2bcf8ccfc08a",
    "two_tiers_discrete": "fa6e607b7a8e9567be558435b5ea0c560585ed95adf2b95b2e86385e9f824d86",
    "two_tiers_discrete_defaults": "3daebb39fc41db386c8e8392c17a0190a1dad23eb8f9ba1b2d0eab54e333568c",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_config_bytes_unchanged(case):
    make, kwargs = CASES[case]
    text = compile_baseline(make(), **kwargs).to_json()
    assert hashlib.sha256(text.encode()).hexdigest() == GOLDEN[case], f"{case}: the compiled config's bytes changed"


@pytest.mark.parametrize(
    "values",
    [
        [[0.5, 1e-05, -3e-300], [5e-324, -0.0, 2.0]],  # below msgspec's agreeing domain, subnormal, -0.0
        [[1e16, -2.5e17, 0.0], [0.0001, -9.999e-05, 7.0]],  # at and above its upper edge, at its lower edge
        [[float("nan"), 1.0, 2.0]],  # non-finite: the standard library refuses it
        [[float("inf"), 1.0, 2.0]],
        [],
    ],
)
@pytest.mark.parametrize("tier", ["", "gold", "t\u00e9\u00e9"])  # a non-ASCII tier name: escaped by the standard library
@pytest.mark.parametrize("rest", [[1.0, 0.5, {"x": "y"}], [1.0, 1e-07]])  # the rest in msgspec's domain, or not
def test_content_id_equals_the_configs_own(values, tier, rest, monkeypatch):
    """The compiler's content id (:mod:`deploysignal.calibration._content_id`) hashes the same bytes as
    ``CompiledConfig.content_id``, or refuses as it does; it falls back to it only where it must (finite
    ASCII payloads whose other parts are in msgspec's domain take the fast path)."""
    from deploysignal.calibration._config import CompiledConfig
    from deploysignal.calibration._content_id import content_id

    arr = np.array(values, dtype=float).reshape(-1, 3)
    payload = {"version_id": "", "a": rest, "reference": {tier: arr.tolist(), "z": [[3.0, 4.0, 5.0]]}}
    arrays = {"reference": {tier: arr, "z": np.array([[3.0, 4.0, 5.0]])}}
    try:
        want = CompiledConfig.content_id(payload)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc)):
            content_id(payload, arrays)
        return
    fast = np.isfinite(arr).all() and tier.isascii() and rest[1] == 0.5
    if fast:
        monkeypatch.setattr(CompiledConfig, "content_id", staticmethod(lambda payload: pytest.fail("fell back")))
    assert content_id(payload, arrays) == want
