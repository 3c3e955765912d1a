"""Simulated streams stay inside each catalogue signal's declared range, under heavy-tailed noise too
(the t3 nulls of tests/montecarlo left eval_score's [0, 1], and compiling such a baseline is refused)."""

from __future__ import annotations

import numpy as np

from deploysignal.calibration import compile_baseline
from deploysignal.simulate import NoiseSpec, simulate_streams
from deploysignal.telemetry import CATALOGUE, Frame


def test_heavy_tailed_streams_stay_in_their_declared_ranges_and_compile() -> None:
    signals = tuple(CATALOGUE)
    ts, vals = simulate_streams(np.random.default_rng(1003), 40, 2880, noise=NoiseSpec(kind="t3"), signals=signals)
    j = signals.index("eval_score")
    assert vals[..., j].max() <= 1.0 and vals[..., j].min() >= 0.0
    for k, s in enumerate(signals):
        if CATALOGUE[s].kind == "rate":
            assert 0.0 <= vals[..., k].min() and vals[..., k].max() <= 1.0, s
    worst = int(np.argmax(vals[..., j].max(axis=1)))  # the stream whose score reached the top
    compile_baseline(Frame(ts, vals[worst], signals), seed=0, robust_covariance=False, check_model=False)
