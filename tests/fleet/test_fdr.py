"""Seeded Monte Carlo for shard FDR control.

Bound used: FDP <= 1{V >= 1}, so FDR <= P(at least one false flag). We count replications with a false
flag and require the one-sided 95% Clopper-Pearson upper bound of that probability to be <= q: a
bound on FDR that holds with 95% confidence. For the counterexample the *lower* CP bound must exceed q.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from deploysignal.fleet import (
    FleetEProcess,
    adjust_running_max,
    ebh,
    ebh_batch,
    running_max_counterexample,
)


def cp_upper(k: int, n: int, conf: float = 0.95) -> float:
    return 1.0 if k == n else float(beta.ppf(conf, k + 1, n - k))


def cp_lower(k: int, n: int, conf: float = 0.95) -> float:
    return 0.0 if k == 0 else float(beta.ppf(1 - conf, k, n - k + 1))


def naive_ebh(e: np.ndarray, q: float) -> set[int]:
    n = len(e)
    order = sorted(range(n), key=lambda i: -e[i])
    k_hat = 0
    for k in range(1, n + 1):
        if e[order[k - 1]] >= n / (q * k):
            k_hat = k
    return set(order[:k_hat])


def test_ebh_matches_naive_transcription():
    rng = np.random.default_rng(3)
    for _ in range(200):
        e = np.exp(rng.normal(0, 3, size=rng.integers(1, 30)))
        assert set(np.flatnonzero(ebh(np.log(e), 0.1))) == naive_ebh(e, 0.1)


def test_adjusted_running_max_flags_never_drop():
    rng = np.random.default_rng(4)
    m = np.zeros(40)
    prev = np.zeros(40, dtype=bool)
    for _ in range(300):
        m = np.maximum(m, m + rng.normal(0.05, 1.0, 40))
        rej = ebh(adjust_running_max(m, 0.5), 0.1)
        assert np.all(rej[prev])
        prev = rej


@pytest.mark.montecarlo
def test_counterexample_unadjusted_running_max_exceeds_q_adjusted_does_not():
    n, q, reps = 10, 0.1, 20_000
    paths = running_max_counterexample(n, q, reps, seed=11)
    # each shard is a test martingale: E[E_t] = 1 at every t (CLT band, 5 sigma)
    means = paths.mean(axis=0)
    sd = paths.std(axis=0) / np.sqrt(reps)
    assert np.all(np.abs(means - 1.0) <= 5 * sd + 1e-12)
    log_max = np.log(np.maximum(paths.max(axis=1), 1e-300))
    unadj = int(ebh_batch(log_max, q).any(axis=1).sum())  # all nulls: FDP = 1{any rejection}
    adj = int(ebh_batch(adjust_running_max(log_max, 0.5), q).any(axis=1).sum())
    print(f"running-max e-BH FDR: unadjusted {unadj / reps:.4f} (theory q*H_n = {q * sum(1 / k for k in range(1, n + 1)):.4f}), "
          f"adjusted {adj / reps:.4f}")
    assert cp_lower(unadj, reps) > q
    assert cp_upper(adj, reps) <= q


def _simulate_fleet(kind: str, seed: int, reps: int, n: int = 60, k: int = 2, t_max: int = 250,
                    n_alt: int = 6, delta: float = 0.8):
    """Yield per-rep (values over time generator, alt mask). Residual structure by ``kind``."""
    rng = np.random.default_rng(seed)
    for _ in range(reps):
        alt = np.zeros(n, dtype=bool)
        alt[rng.choice(n, n_alt, replace=False)] = True
        phi = 0.6 if kind == "ar1" else 0.0
        state = np.zeros((n, k))
        out = np.empty((t_max, n, k))
        for t in range(t_max):
            if kind == "heavy":
                eps = rng.standard_t(2, (n, k))
            else:
                eps = rng.standard_normal((n, k))
            if kind == "positive":  # racks of 10 share a strong common component
                eps = 0.5 * eps + np.repeat(rng.standard_normal((n // 10, k)), 10, axis=0)
            elif kind == "negative":  # pairs move in opposite directions
                a = rng.standard_normal((n // 2, k))
                eps = 0.5 * eps + np.repeat(a, 2, axis=0) * np.tile([[1.0], [-1.0]], (n // 2, 1))
            state = phi * state + eps
            x = state + 3.0 * rng.standard_normal(k)  # fleet-wide load move, cancels in the residuals
            # heavy tails widen the MAD scale and AR(1) prewhitening keeps only (1 - phi) of a step
            out[t] = x + delta * alt[:, None] * {"heavy": 2.0, "ar1": 3.0}.get(kind, 1.0)
        yield out, alt, phi


@pytest.mark.montecarlo
@pytest.mark.parametrize("kind", ["positive", "negative", "heavy", "ar1"])
def test_ebh_fdr_at_most_q_under_dependence(kind):
    q, reps = 0.1, 100
    any_false_fixed = any_false_max = 0
    tpr = []
    for out, alt, phi in _simulate_fleet(kind, seed=100 + len(kind), reps=reps):
        ep = FleetEProcess(out.shape[1], out.shape[2], phi=phi)
        ever = np.zeros(out.shape[1], dtype=bool)
        for x in out:
            tick = ep.update(x)
            ever |= ebh(adjust_running_max(tick.log_e_max, 0.5), q)
        fixed = ebh(tick.log_e, q)  # e-BH on e-values at the (fixed) stopping time
        any_false_fixed += bool((fixed & ~alt).any())
        any_false_max += bool((ever & ~alt).any())
        tpr.append(ever[alt].mean())
    print(f"{kind}: P(false flag) fixed-time {any_false_fixed / reps:.3f}, ever-flagged {any_false_max / reps:.3f}; "
          f"mean TPR {np.mean(tpr):.3f}")
    assert cp_upper(any_false_fixed, reps) <= q
    assert cp_upper(any_false_max, reps) <= q
    assert np.mean(tpr) > 0.5  # the procedure has power: the test is not vacuous
