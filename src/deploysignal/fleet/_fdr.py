"""e-BH false-discovery-rate control over shards, and the adjuster for "once flagged, stays flagged".

e-BH (Wang & Ramdas 2022)
-------------------------
Given e-values :math:`e_1,\\dots,e_n` (:math:`E[e_i]\\le 1` for every null :math:`i`), reject the
:math:`\\hat k` largest, where

.. math::

    \\hat k = \\max\\Bigl\\{k : e_{(k)} \\ge \\frac{n}{q\\,k}\\Bigr\\}.

Then :math:`\\mathrm{FDR} \\le q\\,n_0/n \\le q` under **arbitrary dependence** between the e-values.
Shard e-processes evaluated at a stopping time are e-values (optional stopping), so e-BH at the time
the operator looks is valid.

Running maximum
---------------
"Once flagged, stays flagged" amounts to e-BH on the running maxima :math:`M_i=\\sup_{s\\le t}E_{s,i}`,
which are **not** e-values: Ville only gives :math:`P(M_i\\ge c)\\le 1/c`, so :math:`1/M_i` is a
p-value and e-BH on :math:`M_i` is BH on p-values, whose FDR under arbitrary dependence can reach
:math:`q\\sum_{k\\le n}1/k` (:func:`running_max_counterexample` builds the martingales). The fix is an
**adjuster** (Shafer et al. 2011; Dawid et al. 2011; Vovk & Wang 2021):

.. math::

    F_\\kappa(m) = \\kappa\\, m^{1-\\kappa},\\qquad 0<\\kappa<1,

for which :math:`E[F_\\kappa(\\sup_t E_t)]\\le \\int_0^\\infty P(\\kappa M^{1-\\kappa}\\ge v)\\,dv
\\le \\kappa\\bigl(1 + \\tfrac{1-\\kappa}{\\kappa}\\bigr) = 1` for any test supermartingale. So
:math:`F_\\kappa(M_{t,i})` is an e-value for every (even random, non-stopping) :math:`t`, it is
non-decreasing in :math:`t`, and e-BH on it gives a non-decreasing rejection set: a flag never
drops and the FDR of the set of everything ever flagged is :math:`\\le q` under any dependence.

References
----------
Wang, R. & Ramdas, A. (2022). False discovery rate control with e-values. JRSS-B 84(3).
Shafer, G., Shen, A., Vereshchagin, N. & Vovk, V. (2011). Test martingales, Bayes factors and
p-values. Statistical Science 26(1).
Dawid, A. P., de Rooij, S., Shafer, G., Shen, A., Vereshchagin, N. & Vovk, V. (2011). Insuring
against loss of evidence in game-theoretic probability. Statist. Probab. Lett. 81.
Benjamini, Y. & Yekutieli, D. (2001). The control of the false discovery rate under dependency.
Guo, W. & Rao, M. B. (2008). On control of the false discovery rate under no assumption of dependency.
"""

from __future__ import annotations

import math

import numpy as np

from .._exceptions import InputError

__all__ = ["adjust_running_max", "ebh", "ebh_batch", "running_max_counterexample"]


def _check_q(q: float) -> None:
    if not 0.0 < q < 1.0:
        raise InputError(f"q must lie in (0, 1), got {q}")


def ebh_batch(log_e: np.ndarray, q: float) -> np.ndarray:
    """e-BH on the last axis of ``log_e`` (shape (..., n)); returns a boolean rejection mask.

    Examples
    --------
    >>> ebh_batch(np.log(np.array([[50.0, 30.0, 1.0, 0.5]])), 0.1).tolist()
    [[True, True, False, False]]
    """
    _check_q(q)
    le = np.asarray(log_e, dtype=float)
    n = le.shape[-1]
    order = np.argsort(-le, axis=-1, kind="stable")
    srt = np.take_along_axis(le, order, axis=-1)
    k = np.arange(1, n + 1)
    ok = srt >= np.log(n / (q * k))
    kk = np.where(ok.any(axis=-1), n - np.argmax(ok[..., ::-1], axis=-1), 0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape).copy(), axis=-1)
    return rank < kk[..., None]


def ebh(log_e: np.ndarray, q: float) -> np.ndarray:
    """e-BH over one vector of log e-values, shape (n,); boolean rejection mask (ties broken stably)."""
    le = np.asarray(log_e, dtype=float)
    if le.ndim != 1:
        raise InputError(f"ebh expects a 1-D vector of log e-values, got shape {le.shape}")
    return ebh_batch(le[None, :], q)[0]


def adjust_running_max(log_e_max: np.ndarray, kappa: float = 0.5) -> np.ndarray:
    """Log of the adjusted running maximum :math:`\\log F_\\kappa(M) = \\log\\kappa + (1-\\kappa)\\log M`.

    Valid (an e-value) whenever ``exp(log_e_max)`` is the running maximum of a test supermartingale
    started at 1 (so ``log_e_max >= 0``).

    Examples
    --------
    >>> float(np.exp(adjust_running_max(np.log(np.array([100.0])), 0.5))[0])
    5.000000000000001
    """
    if not 0.0 < kappa < 1.0:
        raise InputError(f"kappa must lie in (0, 1), got {kappa}")
    return math.log(kappa) + (1.0 - kappa) * np.maximum(np.asarray(log_e_max, dtype=float), 0.0)


def running_max_counterexample(n: int, q: float, n_paths: int, seed: int) -> np.ndarray:
    """Paths of ``n`` null test martingales whose running maxima break e-BH (FDR = q * H_n).

    Construction (Guo & Rao 2008 worst case for BH, realised by martingales): levels
    :math:`c_k = n/(qk)`. A global index :math:`K` takes value :math:`k\\in\\{1..n\\}` with probability
    :math:`q/k` (else 0) and a uniformly random set :math:`S` of :math:`K` shards is drawn. Every shard
    starts at 1; at step 1 it moves to :math:`c_n = 1/q` if in :math:`S`, else to 0; at each later step a
    shard at :math:`c_{m+1}` moves to :math:`c_m` if :math:`m \\ge K`, else to 0. Each shard alone is a
    test martingale in its own filtration (it continues from :math:`c_{m+1}` with probability
    :math:`m/(m+1) = c_{m+1}/c_m`), yet at the end exactly :math:`K` shards have running max
    :math:`n/(qK)`, so e-BH on running maxima rejects whenever :math:`K>0`:
    :math:`\\mathrm{FDR} = P(K>0) = q H_n`.

    Returns
    -------
    ndarray, shape (n_paths, n + 1, n): the martingale values at times 0..n (all nulls).
    """
    _check_q(q)
    h = sum(1.0 / k for k in range(1, n + 1))
    if q * h > 1:
        raise InputError(f"q * H_n = {q * h:.3f} > 1: choose smaller q or n")
    rng = np.random.default_rng(seed)
    probs = np.array([1.0 - q * h] + [q / k for k in range(1, n + 1)])
    kk = rng.choice(n + 1, size=n_paths, p=probs)
    # random subset of size K: shards whose random rank < K
    ranks = np.argsort(rng.random((n_paths, n)), axis=1).argsort(axis=1)
    in_s = ranks < kk[:, None]
    levels = n / (q * np.arange(1, n + 1))  # c_1..c_n
    paths = np.zeros((n_paths, n + 1, n))
    paths[:, 0, :] = 1.0
    for step in range(1, n + 1):
        m = n - step + 1  # level index reached at this step: c_n at step 1, ..., c_1 at step n
        alive = in_s & (m >= kk[:, None])
        paths[:, step, :] = np.where(alive, levels[m - 1], 0.0)
    return paths
