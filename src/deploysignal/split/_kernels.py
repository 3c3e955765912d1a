"""Compiled kernels of the randomised-split e-processes (numba).

One kernel advances one metric's state over a run of ticks; the single-tick path calls it with one
tick, so the batch path and the live path are the same code and give the same bits. The state of a
metric is its cumulative conditional log-likelihood ratio on a fixed grid of rate ratios
(:class:`~deploysignal.split.SplitMetric` states the construction and what it guarantees).

Per block (the units of one tick sharing one randomisation share, see
:class:`~deploysignal.split.MetricBlocks`) with canary share ``q = n_c / n`` and, per edge-event ``k``,
canary count ``a_k``, ``c_k`` units with exactly one event and extra units with ``y >= 2`` events:

.. math::

    \\ell_k(\\rho) \\mathrel{+}= a_k \\log\\rho - c_k \\log(1 - q + q\\rho)
        - \\sum_{\\text{units } y \\ge 2} \\log(1 - q + q\\rho^{y}).

A block with ``n_c = 0`` or ``n_c = n`` (or no measured unit) carries no information and adds exactly 0.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["NEGLIGIBLE", "advance", "block_logs", "edge_effect", "evidence_summary", "log_unit_term", "mixture_log", "proceed_ok", "ratio_cs",
           "rollback_log_e", "run_metric", "slot_logs"]

_OPTS = {"cache": True, "nogil": False, "error_model": "numpy"}
#: a log-sum-exp term this far below the maximum is left out (exp(-50) ~ 2e-22)
NEGLIGIBLE = -50.0


@njit(**_OPTS)
def log_unit_term(q: float, lrho: float, y: int) -> float:
    """``log(1 - q + q * rho**y)`` without overflow (``lrho = log rho``).

    For ``rho > 1`` it is written as ``y log rho + log(q + (1 - q) rho**-y)``; otherwise as
    ``log1p(q * expm1(y log rho))``; both are exact rewritings.
    """
    t = y * lrho
    if t > 0.0:
        return t + math.log(q + (1.0 - q) * math.exp(-t))
    return math.log1p(q * math.expm1(t))


@njit(**_OPTS)
def block_logs(rm1: np.ndarray, nc: int, n: int, hc: np.ndarray, key: int) -> np.ndarray:
    """``log(1 - q + q rho) = log1p(q (rho - 1))`` on the grid for ``q = nc / n``, in ``hc[3:3 + R]``.

    ``hc[:3]`` remembers ``(nc, n, key)`` of the values held: a call with the same three (``key >= 0``
    names the grid ``rm1``, equal keys for equal grids) returns them without recomputing, so the
    metrics of one tick that share their units and grid take the logarithms once (the same values).
    """
    R = rm1.shape[0]
    h = hc[3:3 + R]
    if key >= 0 and hc[0] == nc and hc[1] == n and hc[2] == key:
        return h
    q = nc / n
    for i in range(R):
        h[i] = math.log1p(q * rm1[i])
    hc[0], hc[1], hc[2] = nc, n, key
    return h


@njit(**_OPTS)
def advance(ell: np.ndarray, acc: np.ndarray, lrho: np.ndarray, h: np.ndarray, nc: int, n: int, a: np.ndarray, c1: np.ndarray,
            xk: np.ndarray, xy: np.ndarray, xc: np.ndarray, lo: int, hi: int) -> None:
    """Add one block to ``ell`` (K, R) in place; ``acc`` (K, 2) accumulates canary and total events.
    ``h = log(1 - q + q rho)`` on the grid (:func:`block_logs`).

    ``a``, ``c1``: (K,) canary event count and units with exactly one event; ``xk, xy, xc`` rows
    ``lo:hi``: units with ``xy >= 2`` events at edge-event ``xk``, ``xc`` of them.
    """
    K, R = ell.shape
    if n <= 0 or nc <= 0 or nc >= n:
        return
    q = nc / n
    for k in range(K):
        ak = a[k]
        ck = c1[k]
        if ak == 0 and ck == 0:
            continue
        row = ell[k]
        for i in range(R):
            row[i] += ak * lrho[i] - ck * h[i]
        acc[k, 0] += ak
        acc[k, 1] += ck
    for e in range(lo, hi):
        k = xk[e]
        y = xy[e]
        c = xc[e]
        row = ell[k]
        for i in range(R):
            row[i] -= c * log_unit_term(q, lrho[i], y)
        acc[k, 1] += c * y


@njit(**_OPTS)
def mixture_log(ell: np.ndarray, slot_k: np.ndarray, idx: np.ndarray, base: np.ndarray) -> float:
    """``log`` of the average over slots ``s`` and alternatives ``j`` of
    ``exp(ell[slot_k[s], idx[s, j]] - ell[slot_k[s], base[s]])`` (log-sum-exp, max first; terms more
    than 50 nats below the largest are left out: together below ``2e-20`` of the sum for up to
    ``10**3`` terms, under a tenth of a rounding step)."""
    S, J = idx.shape
    m = -np.inf
    for s in range(S):
        k = slot_k[s]
        b = ell[k, base[s]]
        for j in range(J):
            v = ell[k, idx[s, j]] - b
            if v > m:
                m = v
    if m == -np.inf:
        return -np.inf
    tot = 0.0
    for s in range(S):
        k = slot_k[s]
        b = ell[k, base[s]]
        for j in range(J):
            v = ell[k, idx[s, j]] - b - m
            if v > NEGLIGIBLE:
                tot += math.exp(v)
    return m + math.log(tot) - math.log(S * J)


@njit(**_OPTS)
def _bound(ell: np.ndarray, slot_k: np.ndarray, idx: np.ndarray, base: np.ndarray, s: int) -> float:
    k = slot_k[s]
    b = ell[k, base[s]]
    m = -np.inf
    for j in range(idx.shape[1]):
        v = ell[k, idx[s, j]] - b
        if v > m:
            m = v
    return m


@njit(**_OPTS)
def rollback_log_e(ell: np.ndarray, slot_k: np.ndarray, idx: np.ndarray, base: np.ndarray, floor: float) -> float:
    """The metric's log e-value when it can reach ``floor``, else ``-inf``.

    Every term of the average is at most ``exp(max)``, so when the largest log-ratio is below ``floor``
    the average is too and no exponential is taken; otherwise the exact :func:`mixture_log`.
    """
    m = -np.inf
    for s in range(idx.shape[0]):
        v = _bound(ell, slot_k, idx, base, s)
        if v > m:
            m = v
    if m < floor:
        return -np.inf
    return mixture_log(ell, slot_k, idx, base)


@njit(**_OPTS)
def proceed_ok(ell: np.ndarray, slot_k: np.ndarray, idx: np.ndarray, base: np.ndarray, thr: float) -> bool:
    """True when every slot's non-inferiority mixture reaches ``thr`` (log scale); stops at the first
    slot that cannot (its largest log-ratio is below ``thr``) or does not; a slot whose largest term
    alone reaches it (``max - log J >= thr``) passes without exponentials."""
    lj = math.log(idx.shape[1])
    for s in range(idx.shape[0]):
        m = _bound(ell, slot_k, idx, base, s)
        if m < thr:
            return False
        if m - lj >= thr:  # the largest term alone carries the average over the threshold
            continue
        if mixture_log(ell, slot_k[s:s + 1], idx[s:s + 1], base[s:s + 1]) < thr:
            return False
    return True


@njit(**_OPTS)
def run_metric(state: tuple, blocks: tuple, plan: tuple, out: tuple) -> None:
    """Advance one metric over ``T = len(tptr) - 1`` ticks (blocks ``tptr[t]:tptr[t+1]``).

    Four small typed records (tuples):

    * ``state = (ell, acc, runmax, hc)``: the (K, R) log-likelihood ratios, the (K, 2) event counts,
      ``runmax[0]`` the running maximum of the values written to ``current`` across calls, and
      :func:`block_logs`' scratch;
    * ``blocks = (tptr, nc, n, a, c1, xptr, xk, xy, xc)``: a :class:`~deploysignal.split.MetricBlocks`;
    * ``plan = (lrho, rm1, rb, pr, thr, sugg, pr_thr, with_proceed, key)``: the grid, the
      ``(slot_k, idx, base)`` triples of the rollback and proceed mixtures, the thresholds and
      :func:`block_logs`' grid key (``-1``: no reuse);
    * ``out = (fired, proceed, measured, current)``.

    Per tick it writes ``fired[t]`` (log e-value >= ``thr``), ``proceed[t]`` (every non-inferiority
    slot passes ``pr_thr``; only when ``with_proceed``), ``measured[t]`` (some block had units in both
    arms) and ``current[t]``, the log e-value when it is at least ``min(thr, sugg)`` (the suggestive
    level), else ``-inf``: a tick whose bound is below that level takes no exponentials.
    """
    ell, acc, runmax, hc = state
    tptr, nc, n, a, c1, xptr, xk, xy, xc = blocks
    lrho, rm1, rb, pr, thr, sugg, pr_thr, with_proceed, key = plan
    fired, proceed, measured, current = out
    T = tptr.shape[0] - 1
    rb_k, rb_idx, rb_base = rb
    pr_k, pr_idx, pr_base = pr
    for t in range(T):
        meas = False
        for b in range(tptr[t], tptr[t + 1]):
            if nc[b] > 0 and nc[b] < n[b]:
                meas = True
                advance(ell, acc, lrho, block_logs(rm1, nc[b], n[b], hc, key), nc[b], n[b], a[b], c1[b], xk, xy, xc, xptr[b], xptr[b + 1])
        measured[t] = meas
        v = rollback_log_e(ell, rb_k, rb_idx, rb_base, min(thr, sugg))
        if v > runmax[0]:
            runmax[0] = v
        current[t] = v
        fired[t] = v >= thr
        proceed[t] = with_proceed and proceed_ok(ell, pr_k, pr_idx, pr_base, pr_thr)


@njit(**_OPTS)
def ratio_cs(ell: np.ndarray, thr: float) -> tuple[int, int, int]:
    """Confidence-sequence grid indices of one edge-event: ``(lo, hi, argmax)``.

    ``hi``: the largest grid index ``i`` whose mixture over the grid points below it (equal weights)
    stays under ``thr``; ``lo``: the smallest whose mixture over the points above it does; ``argmax``:
    the grid maximiser of ``ell``.
    """
    R = ell.shape[0]
    hi = 0
    for i in range(R - 1, 0, -1):
        if _mix_range(ell, i, 0, i) < thr:
            hi = i
            break
    lo = R - 1
    for i in range(0, R - 1):
        if _mix_range(ell, i, i + 1, R) < thr:
            lo = i
            break
    return lo, hi, int(np.argmax(ell))


@njit(**_OPTS)
def _mix_range(ell: np.ndarray, i: int, a: int, b: int) -> float:
    m = -np.inf
    for j in range(a, b):
        if ell[j] - ell[i] > m:
            m = ell[j] - ell[i]
    tot = 0.0
    for j in range(a, b):
        v = ell[j] - ell[i] - m
        if v > NEGLIGIBLE:
            tot += math.exp(v)
    return m + math.log(tot) - math.log(b - a)


@njit(**_OPTS)
def slot_logs(ell: np.ndarray, slot_k: np.ndarray, idx: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Each slot's own :func:`mixture_log` (which edge-event and side carries the evidence)."""
    S = idx.shape[0]
    out = np.empty(S)
    for s in range(S):
        out[s] = mixture_log(ell, slot_k[s:s + 1], idx[s:s + 1], base[s:s + 1])
    return out


@njit(**_OPTS)
def edge_effect(ell: np.ndarray, lrho: np.ndarray, thr: float) -> tuple[int, bool, float, int, int]:
    """One edge-event's effect on the grid: ``(argmax, refined, log_estimate, lo, hi)``.

    ``log_estimate``: the grid maximiser of ``ell`` refined by the parabola through it and its
    neighbours in ``log rho`` (when the maximum is interior and the parabola concave; uniform grid step
    ``lrho[1] - lrho[0]``; ``refined`` says so), else the grid point; ``lo, hi`` as :func:`ratio_cs`.
    """
    R = ell.shape[0]
    i = int(np.argmax(ell))
    est = lrho[i]
    refined = False
    if 0 < i < R - 1:
        d2 = ell[i - 1] - 2 * ell[i] + ell[i + 1]
        if d2 < 0:
            ls = lrho[1] - lrho[0]
            est = lrho[i] + 0.5 * ls * (ell[i - 1] - ell[i + 1]) / d2
            refined = True
    lo, hi, _ = ratio_cs(ell, thr)
    return i, refined, est, lo, hi


@njit(**_OPTS)
def evidence_summary(ell: np.ndarray, slot_k: np.ndarray, idx: np.ndarray, base: np.ndarray, lrho: np.ndarray,
                     thr: float) -> tuple[float, int, int, bool, float, int, int]:
    """Everything a metric's evidence record needs in one call: ``(log_e, k, *edge_effect)``.

    ``log_e``: the rollback :func:`mixture_log`; ``k``: the edge-event of the first slot with the
    largest own mixture (:func:`slot_logs`, ties to the first); then :func:`edge_effect` of that edge-event.
    """
    logs = slot_logs(ell, slot_k, idx, base)
    k = slot_k[int(np.argmax(logs))]
    i, refined, est, lo, hi = edge_effect(ell[k], lrho, thr)
    return mixture_log(ell, slot_k, idx, base), k, i, refined, est, lo, hi
