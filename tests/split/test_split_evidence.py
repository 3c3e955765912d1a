"""The split gate's evidence numbers, computed inside the compiled tick step, give the records the
families' own :meth:`evidence` gives; the kernels' shortcuts (:func:`best_slot`, the bounded mixture,
``ratio_cs``'s bound) return exactly what the full computation returns.

The shortcuts skip exponentials whose terms provably cannot change the answer; they are compared here
with naive transcriptions (every term, numpy) on random log-likelihood tables with ties, flat stretches
and terms at the 50-nat cut-off, and end to end on the golden streams of
``tests/split/test_split_compiled.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploysignal.split import SplitGate
from deploysignal.split._kernels import _mix_range, best_slot, mixture_log, mixture_log_bounded, ratio_cs, slot_bounds, slot_logs

from .test_split_compiled import stream


def _naive_ratio_cs(ell: np.ndarray, thr: float) -> tuple[int, int, int]:
    """``ratio_cs`` as written before its shortcut: the full mixture (``_mix_range``) at every index."""
    R = len(ell)
    hi = next((i for i in range(R - 1, 0, -1) if _mix_range(ell, i, 0, i) < thr), 0)
    lo = next((i for i in range(R - 1) if _mix_range(ell, i, i + 1, R) < thr), R - 1)
    return lo, hi, int(np.argmax(ell))


def _tables(seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Random (K, R) tables and mixture slots: smooth concave rows (as the likelihood ratios are),
    rows with exact ties and flat stretches, and rows whose terms straddle the 50-nat cut-off."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        K, R = int(rng.integers(1, 6)), int(rng.choice([5, 11, 27]))
        j0 = R // 2
        kind = rng.integers(3)
        x = np.arange(R) - j0
        if kind == 0:
            ell = -rng.uniform(0.01, 400.0, (K, 1)) * (x[None, :] - rng.normal(0, 2, (K, 1))) ** 2 / R
        elif kind == 1:
            ell = np.round(rng.normal(0, 3, (K, R)))  # many exact ties
            ell[:, : R // 3] = ell[:, :1]
        else:
            ell = rng.choice([0.0, -49.999999, -50.0, -50.000001, -3.0, 2.0], (K, R)) + rng.choice([0.0, 1e-12], (K, R))
        ell[:, j0] = np.where(rng.random(K) < 0.5, 0.0, ell[:, j0])
        sides = [(k, s) for k in range(K) for s in ((1,) if rng.random() < 0.4 else (1, -1))]
        slot_k = np.array([k for k, _ in sides], dtype=np.int64)
        idx = np.array([[j0 + s * j for j in range(1, j0 + 1)] for _, s in sides], dtype=np.int64)
        base = np.full(len(sides), j0, dtype=np.int64)
        out.append((np.ascontiguousarray(ell, dtype=np.float64), slot_k, idx, base))
    return out


def test_kernel_shortcuts_equal_the_full_computation():
    """best_slot = argmax(slot_logs) (ties to the first), the bounded mixture = mixture_log and the
    bounded ratio_cs = the naive one, bit for bit, on 600 random tables."""
    for ell, slot_k, idx, base in _tables(21, 600):
        bounds = slot_bounds(ell, slot_k, idx, base)
        assert best_slot(ell, slot_k, idx, base, bounds) == int(np.argmax(slot_logs(ell, slot_k, idx, base)))
        full = mixture_log(ell, slot_k, idx, base)
        assert mixture_log_bounded(ell, slot_k, idx, base, bounds) == full or (math.isnan(full))
        for k in range(ell.shape[0]):
            for thr in (0.5, math.log(20.0), 5.3):
                assert ratio_cs(ell[k], thr) == _naive_ratio_cs(ell[k], thr)


@pytest.mark.parametrize("seed", [0, 7, 13, 22, 41, 58, 99, 130])
def test_compiled_evidence_equals_the_families_own(seed):
    """Records of ``update(data, t)`` (evidence numbers from the compiled step) equal those of
    ``update(data, t, evidence=False)`` (each family's ``evidence()`` at read) on golden streams, and a
    decision read after later ticks still shows its own tick's evidence."""
    specs, settings, data = stream(seed)
    fast, slow = SplitGate(specs, settings), SplitGate(specs, settings)
    held = []
    for t in range(data.n_ticks):
        d = fast.update(data, t)
        held.append(d)
        assert d.records() == slow.update(data, t, evidence=False).records(), t
    late = SplitGate(specs, settings)
    assert [d.records() for d in held] == [late.update(data, t, evidence=False).records() for t in range(data.n_ticks)]
