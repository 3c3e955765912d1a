"""The split gate's evidence numbers, computed inside the compiled tick step, give the records the
families' own :meth:`evidence` gives; the kernels' shortcuts (:func:`best_slot`, the bounded mixture,
``ratio_cs``'s bound) return exactly what the full computation returns.

The shortcuts skip exponentials whose terms provably cannot change the answer. They are compared here,
bit for bit, with naive transcriptions of the definitions in plain Python floats (every term of every
slot, in the kernels' order, ``math.exp``/``math.log``: no compiled code) on random log-likelihood
tables with ties, flat stretches and terms at the 50-nat cut-off, and on the same tables with
infinite and NaN entries (which validated input never produces; the kernels then take the full
computation). ``test_compiled_evidence_equals_the_families_own`` checks the plumbing only (both paths
call the same kernels); the end-to-end anchor is the golden digests of the old code in
``tests/split/test_split_compiled.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploysignal.split import SplitGate
from deploysignal.split._kernels import NEGLIGIBLE, best_slot, mixture_log, mixture_log_bounded, ratio_cs, slot_bounds

from .test_split_compiled import stream


def _log(x: float) -> float:
    return -math.inf if x == 0.0 else math.log(x)  # the compiled kernels' log(0) (numpy error model)


def _lse_mean(terms: list[float]) -> float:
    """``log(mean(exp(terms)))``: max first (NaN terms never count), terms more than 50 nats below it
    left out, added one by one in order; ``-inf`` when no term is above ``-inf``."""
    m = -math.inf
    for v in terms:
        if v > m:
            m = v
    tot = 0.0
    for v in terms:
        if v - m > NEGLIGIBLE:
            tot += math.exp(v - m)
    return m + _log(tot) - math.log(len(terms))


def _naive_mixture(ell: list[list[float]], slot_k, idx, base) -> float:
    """The rollback mixture: every slot's every log-ratio ``ell[k][j] - ell[k][base]``."""
    return _lse_mean([ell[k][j] - ell[k][b] for k, row, b in zip(slot_k.tolist(), idx.tolist(), base.tolist()) for j in row])


def _naive_best_slot(ell: list[list[float]], slot_k, idx, base) -> int:
    """The first slot with the largest own mixture (numpy's argmax: a NaN counts as the largest)."""
    return int(np.argmax([_naive_mixture(ell, slot_k[s:s + 1], idx[s:s + 1], base[s:s + 1]) for s in range(len(slot_k))]))


def _naive_ratio_cs(row: list[float], thr: float) -> tuple[int, int, int]:
    """``ratio_cs`` from its definition: the equal-weight mixture of ``row[j] - row[i]`` over the grid
    points below (``hi``) and above (``lo``) every index ``i``."""
    R = len(row)
    hi = next((i for i in range(R - 1, 0, -1) if _lse_mean([row[j] - row[i] for j in range(i)]) < thr), 0)
    lo = next((i for i in range(R - 1) if _lse_mean([row[j] - row[i] for j in range(i + 1, R)]) < thr), R - 1)
    return lo, hi, int(np.argmax(row))


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


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


def _check_shortcuts(tables, thresholds) -> None:
    for ell, slot_k, idx, base in tables:
        rows = ell.tolist()
        bounds = slot_bounds(ell, slot_k, idx, base)
        assert best_slot(ell, slot_k, idx, base, bounds) == _naive_best_slot(rows, slot_k, idx, base), rows
        full = _naive_mixture(rows, slot_k, idx, base)
        assert _same(mixture_log(ell, slot_k, idx, base), full), rows
        assert _same(mixture_log_bounded(ell, slot_k, idx, base, bounds), full), rows
        for k, row in enumerate(rows):
            for thr in thresholds:
                assert ratio_cs(ell[k], thr) == _naive_ratio_cs(row, thr), (row, thr)


def test_kernel_shortcuts_equal_the_full_computation():
    """best_slot = the naive argmax of the slots' mixtures (ties to the first), mixture_log and the
    bounded mixture = the naive mixture, ratio_cs = the naive one, bit for bit, on 300 random tables."""
    _check_shortcuts(_tables(21, 300), (0.5, math.log(20.0), 5.3))


def test_kernel_shortcuts_on_non_finite_tables():
    """The same on 300 tables with 15% of the entries replaced by -inf, +inf or NaN (and finite
    extremes): the shortcuts' bounds need finite numbers, so the kernels take the full computation."""
    rng = np.random.default_rng(24)
    bad = []
    for ell, slot_k, idx, base in _tables(5, 300):
        hit = rng.random(ell.shape) < 0.15
        ell = np.where(hit, rng.choice([-np.inf, np.inf, np.nan, 1e300, -1e15], ell.shape), ell)
        bad.append((np.ascontiguousarray(ell), slot_k, idx, base))
    _check_shortcuts(bad, (0.5, 3.0))


@pytest.mark.parametrize("seed", [0, 7, 13, 22, 41, 58, 99, 130])
def test_compiled_evidence_equals_the_families_own(seed):
    """Records of ``update(data, t, evidence=True)`` (evidence numbers from the compiled step) equal
    those of the default ``update(data, t)`` (each family's ``evidence()`` at read) on golden streams,
    and a decision read after later ticks still shows its own tick's evidence. Both paths call the same
    kernels: this checks the plumbing (the golden digests anchor the numbers)."""
    specs, settings, data = stream(seed)
    fast, slow = SplitGate(specs, settings), SplitGate(specs, settings)
    held = []
    for t in range(data.n_ticks):
        d = fast.update(data, t, evidence=True)
        held.append(d)
        assert d.records() == slow.update(data, t).records(), t
    late = SplitGate(specs, settings)
    assert [d.records() for d in held] == [late.update(data, t).records() for t in range(data.n_ticks)]
