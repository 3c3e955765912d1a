"""Compiled per-tick kernels of families A, C, D and E (numba).

Profiles of the gate (``deploysignal bench``, the Monte-Carlo harness) showed the families' numpy
``step`` spending its time in dozens of small array operations per tick, each allocating a temporary:
for one stream that is interpreter overhead, for thousands of streams memory traffic. Each kernel here
advances ``P`` streams by one tick **in place** on the detector's state arrays, in the order the
numpy code did it, with the same formulas; the classes keep their API and docstrings (which state what
is guaranteed). Differences from that code are in floating-point rounding only (summation order, tanh
through exp, family D's wealth held as a log scale times a linear factor); ``tests/test_kernels_reference.py``
compares the two on seeded streams.

The kernels are compiled on first use and cached on disk next to this module (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "EXP_ZERO", "ONS_C", "Z_BOUND", "as_rows", "check_cell", "check_cells", "decide_run", "decide_step", "family_a_run", "family_a_step", "family_b_run", "family_b_step",
    "family_c_run", "family_c_step", "family_d_run", "family_d_step", "family_e_run", "family_e_step", "in_domain_run", "ons_update",
    "scale_bounded",
]

#: Step constant of the online Newton step for betting (Cutkosky & Orabona 2018): 2 / (2 - log 3).
ONS_C = 2.0 / (2.0 - math.log(3.0))

#: Largest standardised innovation (and AR(1) regressor) the families are fed, in innovation standard
#: deviations: the gate's standardiser holds ``z`` and the regressors to ``[-Z_BOUND, Z_BOUND]``. Every
#: family clips its bets' data term at 6 sd or less, so the bound changes no such term (family A's AR
#: regressor ``r`` is not clipped at 6 sd: there the bound is the cap); it keeps a finite value that is
#: huge against its signal's scale (1e300, or one whose ratio to the scale overflows) out of the
#: families' sums as an infinity or a NaN. Family A does not learn cell bias or AR-error regression from
#: a tick at the bound (it still bets on it, at its clip): one spike cannot teach it that harm is bias.
#: (Spikes that would count for the canary never get here: the standardiser makes them missing.)
Z_BOUND = 1e6

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}
#: Entry points of the single-stream path keep the GIL: their work per call is microseconds, and in a
#: threaded server each release lets another thread take the GIL for up to the switch interval (5 ms).
_OPTS_GIL = {**_OPTS, "nogil": False}


def as_rows(values: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    """``values`` as a C-contiguous float array of exactly ``shape`` (the kernels do not bounds-check)."""
    arr = np.ascontiguousarray(values, dtype=float)
    if arr.shape != shape:
        raise ValueError(f"{what} must have shape {shape} (streams, signals), got {arr.shape}")
    return arr


def check_cell(cell: int, n_cells: int) -> int:
    """A calibration cell index in ``[0, n_cells)`` (the kernels do not bounds-check)."""
    c = int(cell)
    if not 0 <= c < n_cells:
        raise IndexError(f"cell {cell} is out of range: the config has {n_cells} cells")
    return c


def check_cells(cells: np.ndarray, n: int, n_cells: int) -> np.ndarray:
    """``n`` calibration cell indices in ``[0, n_cells)`` as int64 (the kernels do not bounds-check)."""
    c = np.ascontiguousarray(cells, dtype=np.int64)
    if c.shape != (n,):
        raise ValueError(f"cells must have shape ({n},), got {c.shape}")
    # two reductions instead of a mask and a search: the single-tick path calls this once per family
    if n and (int(c.min()) < 0 or int(c.max()) >= n_cells):
        bad = np.flatnonzero((c < 0) | (c >= n_cells))
        raise IndexError(f"cell {c[bad[0]]} is out of range: the config has {n_cells} cells")
    return c


@njit(**_OPTS)
def ons_update(lam: float, a_sum: float, payoff: float, lam_max: float) -> tuple[float, float, float]:
    r"""One betting round: return the wealth factor :math:`1 + \lambda g`, the next bet and the next sum.

    ``payoff`` :math:`g \in [-1, 1]`; the bet :math:`\lambda \in [0, \lambda_{max}]` used here was
    fixed before ``payoff`` was seen (predictable). The next bet follows the online Newton step

    .. math:: \zeta = g / (1 + \lambda g), \quad A' = A + \zeta^2, \quad
              \lambda' = \mathrm{clip}(\lambda + c\,\zeta / A', 0, \lambda_{max}).
    """
    f = 1.0 + lam * payoff
    zeta = payoff / f
    a_sum = a_sum + zeta * zeta
    lam = lam + ONS_C * zeta / a_sum
    if lam < 0.0:
        lam = 0.0
    elif lam > lam_max:
        lam = lam_max
    return f, lam, a_sum


#: At or below this argument ``exp`` is +0.0: exp(-746) ~ 1.1e-324 is under half the smallest subnormal
#: (2.5e-324) and libm's ``exp`` is within 0.51 ulp there (glibc; ``test_exp_underflow_premise``).
EXP_ZERO = -746.0


@njit(**_OPTS)
def _exp_term(d: float) -> float:
    """``math.exp(d)`` for a term of a sum of exponentials: +0.0 without calling ``exp`` where it would
    return +0.0 anyway (the call's underflow path costs ~5x a normal call, and a long-running family A
    has about 40% of its terms there). NaN and +inf go to ``exp``; -inf gives +0.0 as ``exp`` does."""
    if d <= EXP_ZERO:
        return 0.0
    return math.exp(d)


@njit(**_OPTS)
def _logsumexp_row(x: np.ndarray, w: np.ndarray) -> float:
    top = -np.inf
    for i in range(x.size):
        v = x[i] + w[i]
        if v > top:
            top = v
    if top == -np.inf:
        return top
    s = 0.0
    for i in range(x.size):
        s += _exp_term(x[i] + w[i] - top)
    return top + math.log(s)


@njit(**_OPTS)
def _clip(v: float, lo: float, hi: float) -> float:
    """``np.clip`` of a scalar: NaN stays NaN."""
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


@njit(**_OPTS)
def _tanh(x: float) -> float:
    """``tanh`` as ``1 - 2 / (exp(2x) + 1)``: libm's ``tanh`` and ``expm1`` cost ~5x an ``exp`` here.
    In [-1, 1]; absolute error ~1e-16 (relative error larger near 0, which a payoff does not feel);
    NaN stays NaN."""
    if x > 20.0:
        return 1.0
    if x < -20.0:
        return -1.0
    return 1.0 - 2.0 / (math.exp(2.0 * x) + 1.0)


@njit(**_OPTS)
def _logaddexp(a: float, b: float) -> float:
    if a == b:
        return a + math.log(2.0)
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


# ---------------------------------------------------------------------------------------- family D
@njit(**_OPTS)
def family_d_step(
    z, control_z, two_sample, center, b, n0, clip,
    rot_re, rot_im, inv_gscale, inv_mu_scale, inv_kappa, half_prec, half_logvar, hazard, weight,
    Zr, Zi, msum, mcnt, rl_w, rl_sum, lam, asum, wealth, log_scale, out_lw,
):  # pragma: no cover - compiled
    """Channel wealth is kept as ``log_scale[p] + log(wealth[p, c])``: each tick multiplies ``wealth``
    by ``1 + lam g`` (no logarithm per channel) and, when the largest channel leaves [1e-100, 1e100],
    rescales every channel by the same power of two (exact), so nothing overflows. A channel more than
    about 500 nats below the best one can underflow to 0 and stays 0: the average then uses a process
    that is pointwise no larger than the channel's wealth, a non-negative supermartingale too, so the
    Ville bound holds (it costs that channel's power, not validity)."""
    P, k = z.shape
    Q = rot_re.size
    R = inv_kappa.size
    kq = k * Q
    joint = np.empty(R)
    for p in range(P):
        for j in range(k):
            # ---- input e in [-1, 1] (0 when missing)
            if two_sample:
                v = (z[p, j] - control_z[p, j]) / math.sqrt(2.0)
            else:
                v = z[p, j] - center[p, b, j]
            ok = not math.isnan(v)
            if ok:
                v = _clip(v, -clip, clip) / clip
            else:
                v = 0.0
            if two_sample:
                e = v
            else:
                e = 0.5 * (v - msum[p, j] / (n0 + mcnt[p, j])) if ok else 0.0
                msum[p, j] += v
                mcnt[p, j] += 1.0 if ok else 0.0
            # ---- BOCPD predictive mean (from past ticks)
            mu = 0.0
            for r in range(R):
                mu += rl_w[p, j, r] * rl_sum[p, j, r] * inv_kappa[r]
            # ---- filter bank: bet on the one-step filter output, then advance the resonators
            for q in range(Q):
                c = j * Q + q
                zr, zi = Zr[p, j, q], Zi[p, j, q]
                g = rot_re[q] * zr - rot_im[q] * zi
                f, lam[p, c], asum[p, c] = ons_update(lam[p, c], asum[p, c], _tanh(g * inv_gscale[q]) * e, 0.5)
                wealth[p, c] *= f
                Zi[p, j, q] = rot_im[q] * zr + rot_re[q] * zi
                Zr[p, j, q] = g + e
            c = kq + j
            f, lam[p, c], asum[p, c] = ons_update(lam[p, c], asum[p, c], _tanh(mu * inv_mu_scale) * e, 0.5)
            wealth[p, c] *= f
            # ---- BOCPD posterior update (Gaussian regime mean, known noise variance)
            if ok:
                top = -np.inf
                for r in range(R):
                    d = e - rl_sum[p, j, r] * inv_kappa[r]
                    joint[r] = -(d * d) * half_prec[r] - half_logvar[r]
                    if joint[r] > top:
                        top = joint[r]
                tot = 0.0
                for r in range(R):
                    joint[r] = rl_w[p, j, r] * math.exp(joint[r] - top)
                    tot += joint[r]
                w0 = hazard * tot
                norm = w0
                for r in range(R - 1, 0, -1):
                    wr = (1.0 - hazard) * joint[r - 1]
                    if r == R - 1:
                        wr += (1.0 - hazard) * joint[R - 1]
                    rl_w[p, j, r] = wr
                    norm += wr
                    rl_sum[p, j, r] = rl_sum[p, j, r - 1] + e
                rl_w[p, j, 0] = w0
                rl_sum[p, j, 0] = 0.0
                for r in range(R):
                    rl_w[p, j, r] /= norm
        top = 0.0
        tot = 0.0
        for c in range(wealth.shape[1]):
            top = max(top, wealth[p, c])
            tot += weight[c] * wealth[p, c]
        if top > 1e100 or top < 1e-100:  # rescale by a power of two (exact)
            e = math.frexp(top)[1]
            for c in range(wealth.shape[1]):
                wealth[p, c] = math.ldexp(wealth[p, c], -e)
            log_scale[p] += e * math.log(2.0)
            tot = math.ldexp(tot, -e)
        out_lw[p] = log_scale[p] + math.log(tot)


# ---------------------------------------------------------------------------------------- family E
@njit(**_OPTS)
def family_e_step(z, control_z, two_sample, c_hi, b, chol_inv, cal, cal_n, table, log_kappas, kappas_m1,
                  log_n_kappas, log_offset, logR, last_p, last_s, out_lw):  # pragma: no cover - compiled
    P, k = z.shape
    x = np.empty(k)
    for p in range(P):
        for j in range(k):
            v = _clip(z[p, j], -c_hi, c_hi)
            if two_sample:
                v = (v - _clip(control_z[p, j], -c_hi, c_hi)) / math.sqrt(2.0)
            x[j] = v
        s = 0.0
        for i in range(k):
            acc = 0.0
            for j in range(k):
                acc += chol_inv[p, b, i, j] * x[j]
            s += acc * acc
        if math.isnan(s):  # a missing value: the tick is skipped
            last_p[p] = 1.0
            last_s[p] = math.nan
        else:
            below = np.searchsorted(cal[p, b], s)  # #{calibration scores < s}; sorted, +inf padded
            pv = table[p, b, cal_n[p, b] - below]
            last_p[p] = pv
            last_s[p] = s
            lp = math.log(pv)
            top = -np.inf
            for i in range(log_kappas.size):
                top = max(top, log_kappas[i] + kappas_m1[i] * lp)
            tot = 0.0
            for i in range(log_kappas.size):
                tot += math.exp(log_kappas[i] + kappas_m1[i] * lp - top)
            logR[p] = _logaddexp(0.0, logR[p]) + top + math.log(tot) - log_n_kappas
        out_lw[p] = logR[p] + log_offset


# ---------------------------------------------------------------------------------------- family A
@njit(**_OPTS)
def _band_score(z, cz, sg, r, has_lag, two_sample, c_lo, c_pair, top, sdi, cen, a_lvl, k_phi, r_cap):  # pragma: no cover - compiled
    """Family A's centred rollback score against the nuisance band, divided by its lower bound (>= -1).

    The band's upper edge ``a = a_lvl + k_phi * min(|r|, r_cap)`` is subtracted *before* the clip, the
    lower clip sits at the band's widest point and the upper one at ``top`` innovation sd, so the score
    is a nondecreasing function of ``s z / sd - a`` (the oriented innovation minus the band) and its
    lower bound does not depend on the data. No regressor (``has_lag`` false): ``|r|`` is taken at its
    cap. NaN in, 0 out (no bet)."""
    ar = r_cap if not has_lag else min(abs(r), r_cap)
    a = a_lvl + k_phi * ar
    a_max = a_lvl + k_phi * r_cap
    if two_sample:
        lo = c_pair + a_max
        u = min(max(sg * (z - cz) / math.sqrt(2.0) - a, -lo), top)
    else:
        lo = c_lo / sdi + cen + a_max
        u = min(max(sg * z / sdi - cen - a, -lo), top / sdi - cen)
    if math.isnan(u) or not lo > 0.0:
        return 0.0
    return u / lo


@njit(**_OPTS)
def _capped_score(x_raw, pred, two_sample, lo_base, top_u, a_lvl, tail, k_phi, r_cap, r, has_lag):  # pragma: no cover - compiled
    """Family A's rollback score centred on the learned prediction capped at the band's upper edge
    (``nuisance="capped"``), divided by the band's data-free lower bound. NaN in, 0 out."""
    ar = r_cap if not has_lag else min(abs(r), r_cap)
    edge = a_lvl - tail + k_phi * ar
    c = min(pred, edge) + tail
    lo = lo_base + a_lvl + k_phi * r_cap
    u = min(max(x_raw - c, -lo), top_u)
    if math.isnan(u) or not lo > 0.0:
        return 0.0
    return u / lo


@njit(**_OPTS)
def family_a_step(
    z, control_z, lag, control_lag, has_lag, two_sample, cell, sig, sign, c_lo, c_hi, c_pair, gammas, tau,
    sd, center, bias_var, phi_var, inv_g2, logw, thr, thr_w, thr_r, thr_p, band, a_lvl, tail, k_phi, r_cap, top,
    S, N, U, A, logW, logR, logP, n_obs, Qzr, Qrr, S2, U2, Qzr2, out_lw, out_logw, out_logr, out_harm,
):  # pragma: no cover - compiled
    """``S2, U2, Qzr2``: the predictor's sums fed with ``x - tau`` (the early-proceed test's boundary
    null, 'harm exactly tau'); ``N, A, Qrr`` do not depend on the data and are shared. NaN there
    (a state saved before this predictor existed) switches the proceed test off: no bet, never rejects.

    ``band``: 0 centres the rollback bets on the learned prediction (``nuisance="learned"``); 1 tests
    against the nuisance band (:mod:`~deploysignal.detectors._family_a`, ``nuisance="band"``), and the
    learned rollback predictor (``S, U, Qzr``) is then neither used nor updated; 2 centres on the
    learned prediction capped at the band's upper edge (``nuisance="capped"``). ``a_lvl`` (P, cells, m)
    the level bands and tail margin, ``tail`` (P, cells, m) that margin alone, ``k_phi`` (P, m) the
    AR-error band, ``r_cap`` (P, m) the regressor's band, ``top`` the bets' upper clip."""
    P = z.shape[0]
    m = sig.size
    G = gammas.size
    rt2 = math.sqrt(2.0)
    for p in range(P):
        for i in range(m):
            s, sg = sig[i], sign[i]
            beta = Qzr[p, i] / (1.0 / phi_var[p, i] + Qrr[p, i])
            beta2 = Qzr2[p, i] / (1.0 / phi_var[p, i] + Qrr[p, i])
            if two_sample:
                x = _clip(sg * (z[p, s] - control_z[p, s]) / rt2, -c_pair, c_pair)
                r = sg * (lag[p, s] - control_lag[p, s]) / rt2 if has_lag else 0.0
                bhat = 0.0
                bhat2 = 0.0
                pred = beta * r
                lo = c_pair + pred
                hi = c_pair - pred
                top_x = c_pair
                v = 0.0
            else:
                sdi = sd[p, i]
                cen = center[p, cell, i]
                x = _clip(sg * z[p, s], -c_lo, c_hi) / sdi - cen
                v = bias_var[p, cell, i]
                Sc, Nc = S[p, cell, i], N[p, cell, i]
                kc = Nc / (1.0 / v + Nc)
                bhat = (U[p, i] / (inv_g2[p, i] + A[p, i])) * (1.0 - kc) + Sc / (1.0 / v + Nc)
                bhat2 = (U2[p, i] / (inv_g2[p, i] + A[p, i])) * (1.0 - kc) + S2[p, cell, i] / (1.0 / v + Nc)
                r = sg * lag[p, s] / sdi if has_lag else 0.0
                pred = bhat + beta * r
                lo = c_lo / sdi + cen + pred
                hi = c_hi / sdi - cen - pred
                top_x = c_hi / sdi - cen
            xc = x - pred
            ok = (not math.isnan(xc)) and lo > 0.0
            xi = xc / lo if ok else 0.0
            if band == 2:
                if two_sample:
                    xr, lb, tu = sg * (z[p, s] - control_z[p, s]) / rt2, c_pair, top
                else:
                    xr, lb, tu = sg * z[p, s] / sd[p, i] - center[p, cell, i], c_lo / sd[p, i] + center[p, cell, i], top / sd[p, i] - center[p, cell, i]
                xi = _capped_score(xr, pred, two_sample, lb, tu, a_lvl[p, cell, i], tail[p, cell, i], k_phi[p, i], r_cap[p, i], r, has_lag)
            elif band:
                xi = _band_score(z[p, s], control_z[p, s], sg, r, has_lag, two_sample, c_lo, c_pair, top, sd[p, i],
                                 center[p, cell, i], a_lvl[p, cell, i], k_phi[p, i], r_cap[p, i])
            # early proceed bets that x lies below its predicted mean under 'harm exactly tau': tau plus
            # the same predictor fed with x - tau (fed with x, it would absorb part of the harm)
            pred2 = tau + bhat2 + beta2 * r
            hi_p = top_x - pred2  # x <= top_x, so the bet's factor 1 + g (pred2 - x) / hi_p stays >= 1 - g
            xip = (pred2 - x) / hi_p if ok and hi_p > 0.0 else 0.0
            top_p = -np.inf
            for g in range(G):
                lf = math.log1p(gammas[g] * xi)
                logW[p, i, g] += lf
                logR[p, i, g] = _logaddexp(0.0, logR[p, i, g]) + lf
                logP[p, i, g] += math.log1p(gammas[g] * xip)
                top_p = max(top_p, logP[p, i, g])
            tot_p = 0.0
            for g in range(G):
                tot_p += _exp_term(logP[p, i, g] - top_p)
            out_harm[p, i] = top_p + math.log(tot_p) - math.log(G) >= thr_p  # 'harm >= tau' rejected
            # a spike (|z| at Z_BOUND) is bet on, at the clip, but not learnt from as bias or regression
            if ok and abs(z[p, s]) < Z_BOUND and (not two_sample or abs(control_z[p, s]) < Z_BOUND):
                n_obs[p, i] += 1.0
                if band != 1:
                    Qzr[p, i] += (x - bhat) * r
                Qzr2[p, i] += (x - tau - bhat2) * r
                Qrr[p, i] += r * r
                if not two_sample:
                    Sc, Nc, S2c = S[p, cell, i], N[p, cell, i], S2[p, cell, i]
                    old_a, old_u, old_u2 = Nc / (1.0 + Nc * v), Sc / (1.0 + Nc * v), S2c / (1.0 + Nc * v)
                    if band != 1:
                        Sc += x - beta * r
                    S2c += x - tau - beta2 * r
                    Nc += 1.0
                    S[p, cell, i], N[p, cell, i], S2[p, cell, i] = Sc, Nc, S2c
                    A[p, i] += Nc / (1.0 + Nc * v) - old_a
                    if band != 1:
                        U[p, i] += Sc / (1.0 + Nc * v) - old_u
                    U2[p, i] += S2c / (1.0 + Nc * v) - old_u2
        lw = _logsumexp_row(logW[p].ravel(), logw.ravel())
        lr = _logsumexp_row(logR[p].ravel(), logw.ravel())
        out_logw[p] = lw
        out_logr[p] = lr
        out_lw[p] = max(lw - thr_w, lr - thr_r) + thr


# ---------------------------------------------------------------------------------------- family C
@njit(**_OPTS)
def family_c_step(
    z, control_z, two_sample, c_hi, u, b, chol_inv, ref, ref_n, ref_mean, min_ref_mmd, gain, radius,
    omega, phase, feat_scale,
    S, A, logdet, bias, G, lam, asum, logW, dsum, d2, out_lw, out_logm, out_quad,
):  # pragma: no cover - compiled
    P, k = z.shape
    D = phase.size
    rt2 = math.sqrt(2.0)
    y = np.empty(k)
    xm = np.empty(k)
    d = np.empty(k)
    x = np.empty(k)
    ax = np.empty(k)
    fd = np.empty(D)
    for p in range(P):
        n_miss = 0
        if two_sample:
            for j in range(k):
                zc = _clip(z[p, j], -c_hi, c_hi)
                yc = _clip(control_z[p, j], -c_hi, c_hi)
                if math.isnan(zc) or math.isnan(yc):
                    n_miss += 1
                    y[j], xm[j] = 0.0, 0.0
                else:
                    y[j], xm[j] = yc, zc
                d[j] = (xm[j] - y[j]) / rt2
        else:
            n = ref_n[p, b]
            idx = min(int(u[p] * n), n - 1)
            for j in range(k):
                y[j] = ref[p, b, idx, j]
                zc = _clip(z[p, j], -c_hi, c_hi)
                if math.isnan(zc):
                    n_miss += 1
                    xm[j], d[j] = y[j], 0.0
                else:
                    xm[j], d[j] = zc, zc - ref_mean[p, b, j]
            valid = n_miss < k
            for j in range(k):  # predictable bias: tested with the estimate from ticks before this one
                b0 = bias[p, j]
                zc = _clip(z[p, j], -c_hi, c_hi)
                miss = math.isnan(zc)
                d_raw = d[j]
                d[j] = d_raw - b0 if valid else 0.0
                xm[j] = y[j] if miss else zc - b0
                if not miss:
                    bias[p, j] = b0 + gain * (d_raw - b0)
        # ---- sequential Hotelling (Sherman-Morrison)
        nrm2 = 0.0
        for i in range(k):
            acc = 0.0
            for j in range(k):
                acc += chol_inv[p, b, i, j] * d[j]
            x[i] = acc
            nrm2 += acc * acc
        f = min(1.0, radius / max(math.sqrt(nrm2), 1e-300))
        q = 0.0
        for i in range(k):
            x[i] *= f
        for i in range(k):
            acc = 0.0
            for j in range(k):
                acc += A[p, i, j] * x[j]
            ax[i] = acc
            q += x[i] * acc
        q = max(q, 0.0)
        logdet[p] += math.log1p(q)
        for i in range(k):
            for j in range(k):
                A[p, i, j] -= ax[i] * ax[j] / (1.0 + q)
            S[p, i] += x[i]
        # ---- MMD by betting with random Fourier features
        gn2 = 0.0
        wit = 0.0
        for e in range(D):
            ax_ = 0.0
            ay_ = 0.0
            for j in range(k):
                ax_ += omega[p, e, j] * xm[j]
                ay_ += omega[p, e, j] * y[j]
            fd[e] = feat_scale * math.cos(ax_ + phase[e]) - feat_scale * math.cos(ay_ + phase[e])
            gn2 += G[p, e] * G[p, e]
            wit += G[p, e] * fd[e]
        gn = math.sqrt(gn2)
        scale = 1.0 / (2.0 * rt2 * max(gn, 1e-300)) if gn > 0.0 else 0.0
        payoff = _clip(wit * scale, -1.0, 1.0)
        if not two_sample and ref_n[p, b] < min_ref_mmd:
            payoff = 0.0
        f, lam[p], asum[p] = ons_update(lam[p], asum[p], payoff, 0.5)
        logW[p] += math.log(f)
        for e in range(D):
            G[p, e] += fd[e]
        for j in range(k):
            df = xm[j] - y[j]
            dsum[p, j] += df
            d2[p, j] += df * df
        # ---- family evidence
        quad = 0.0
        for i in range(k):
            acc = 0.0
            for j in range(k):
                acc += A[p, i, j] * S[p, j]
            quad += S[p, i] * acc
        log_m = 0.5 * quad - 0.5 * logdet[p]
        out_quad[p] = quad
        out_logm[p] = log_m
        out_lw[p] = _logaddexp(log_m, logW[p]) - math.log(2.0)


# ---------------------------------------------------------------------------------------- family B
@njit(**_OPTS)
def _nan_max(a: float, b: float) -> float:
    """``np.maximum`` of two scalars: NaN if either is NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a >= b else b


@njit(**_OPTS)
def family_b_step(
    z, raw, control_z, control_raw, cell, two_sample, c_hi, bleed_on, bleed_idx, bleed_two, lam, bleed_thr, bleed_min,
    slo_on, err, lat, succ, err_res, error_floor, error_increase, latency_multiplier, min_success, consecutive,
    raw_location, ewma, streak, bleed_fired, slo_fired, out_drift, out_newly,
):  # pragma: no cover - compiled
    """Family B's rules for ``P`` streams, one tick, in place (``err``/``lat``/``succ`` = -1 when the
    signal is absent). ``out_newly[p]``: 1 slowbleed fired at this tick, 2 SLO checks fired, 3 both."""
    P = z.shape[0]
    nb = bleed_idx.size
    rt2 = math.sqrt(2.0)
    for p in range(P):
        out_newly[p] = 0
        out_drift[p] = 0
        if bleed_on:
            cnt = 0
            for i in range(nb):
                j = bleed_idx[i]
                v = z[p, j]
                if two_sample:
                    v = (v - control_z[p, j]) / rt2
                v = _clip(v, -c_hi, c_hi)
                if not math.isnan(v):
                    ewma[p, i] = (1.0 - lam) * ewma[p, i] + lam * v
                e = abs(ewma[p, i]) if bleed_two[i] else ewma[p, i]
                if e >= bleed_thr:
                    cnt += 1
            out_drift[p] = cnt
            if not bleed_fired[p] and cnt >= bleed_min:
                bleed_fired[p] = True
                out_newly[p] += 1
        if slo_on:
            fail = False
            seen = False
            if err >= 0:
                v = raw[p, err]
                ref = control_raw[p, err] if two_sample else raw_location[p, cell, err]
                r = _nan_max(_nan_max(ref, error_floor), err_res[p])
                fail = fail or v > (1.0 + error_increase) * r
                seen = seen or not (math.isnan(v) or math.isnan(r))
            if lat >= 0:
                v = raw[p, lat]
                r = control_raw[p, lat] if two_sample else raw_location[p, cell, lat]
                fail = fail or v > latency_multiplier * r
                seen = seen or not (math.isnan(v) or math.isnan(r))
            if succ >= 0:
                v = raw[p, succ]
                fail = fail or v < min_success
                seen = seen or not math.isnan(v)
            if fail:
                streak[p] += 1
            elif seen:
                streak[p] = 0
            if not slo_fired[p] and streak[p] >= consecutive:
                slo_fired[p] = True
                out_newly[p] += 2


# ---------------------------------------------------------------------------------------- verdict
PENDING, PROCEED, EXTEND, ROLLBACK = 0, 1, 2, 3


@njit(**_OPTS)
def decide_step(
    t, lw, fired, b_fired, valid, harm, log_thr, window, horizon, min_valid_fraction, suggestive_fraction,
    early_proceed, min_proceed_fraction, n_valid, max_lw, verdict, final, decided_at, first_fire, b_warn, closed, hold,
):  # pragma: no cover - compiled
    """The gate's verdict update for ``P`` streams at tick ``t`` (0-based), in place; see ``Gate``.

    ``lw``/``fired``: (P, F) log-wealth and rollback-fires per family; ``b_fired``: any rule fired;
    ``valid``: enough signals present; ``harm``: early-proceed test rejected 'harm >= tau' everywhere.

    Fail closed: at a tick where a family with alpha (finite ``log_thr``) reports a NaN log-wealth,
    an open verdict becomes a final ``extend`` unless a rollback fires at the same tick. (-inf is a
    legitimate value, a Shiryaev-Roberts statistic at 0 before any evidence; +inf fires.) The stream
    is then *closed* (``closed[p]``, also set by an operator's void): it never proceeds, but a rollback
    stays live: a later fire of any family still turns the final ``extend`` into a ``rollback`` (failing
    closed must not fail open on harm). On valid input ``closed`` stays False and nothing changes.

    ``hold`` (P,): the run-time model check has fired (:mod:`deploysignal.gate._runtime_check`): the
    stream does not proceed (early or at a window end; the verdict extends instead), a rollback is
    unchanged. All False: the verdicts are those without the check, bit for bit."""
    P, F = lw.shape
    n = t + 1
    at_end = n % window == 0
    for p in range(P):
        n_valid[p] += 1 if valid[p] else 0
        for f in range(F):
            a, b = max_lw[p, f], lw[p, f]
            if math.isnan(a) or (not math.isnan(b) and b > a):
                max_lw[p, f] = b  # np.fmax: NaN only when both are NaN
        open_ = not final[p]
        live = open_ or (closed[p] and verdict[p] != ROLLBACK)  # a closed stream can still roll back
        if b_fired[p] and open_:
            b_warn[p] = True
        roll = False
        for f in range(F):
            if fired[p, f]:
                roll = True
                if live and first_fire[p, f] < 0:
                    first_fire[p, f] = t
        if live and roll:
            verdict[p], final[p], decided_at[p] = ROLLBACK, True, t
            continue
        if not open_:
            continue
        broken = False  # fail closed: a family with alpha whose evidence is NaN can no longer be trusted
        for f in range(F):
            if log_thr[f] < math.inf and math.isnan(lw[p, f]):
                broken = True
        if broken:
            verdict[p], final[p], decided_at[p], closed[p] = EXTEND, True, t, True
            continue
        valid_ok = n_valid[p] >= min_valid_fraction * n
        suggestive = b_warn[p]
        for f in range(F):
            if max_lw[p, f] >= suggestive_fraction * log_thr[f]:
                suggestive = True
        early = early_proceed and (not at_end) and n >= min_proceed_fraction * window and valid_ok and not suggestive and harm[p]
        if (early or (at_end and valid_ok and not suggestive)) and not hold[p]:
            verdict[p], final[p], decided_at[p] = PROCEED, True, t
        elif at_end:
            verdict[p] = EXTEND
            if n >= horizon:
                final[p], decided_at[p] = True, t
        else:
            verdict[p] = PENDING


# ---------------------------------------------------------------------------------------- many ticks, one stream
# Each ``*_run`` kernel advances a single stream (P = 1) over ticks ``start .. T-1`` with the family's
# one-tick kernel, writes per tick ``out[t] = (log-wealth, statistic, component 1, component 2)`` and the
# sticky fire flag, and returns after the first tick at which the family newly fires (so the caller can
# explain the fire from the state of that tick), as ``(ticks done, newly fired)``.


@njit(**_OPTS)
def _sticky(lw: float, thr: float, fired: np.ndarray, out_fired: np.ndarray, t: int) -> bool:
    """Sticky fire of a single stream at tick ``t``: record it, return whether it is new."""
    newly = (not fired[0]) and lw >= thr
    if newly:
        fired[0] = True
    out_fired[t] = fired[0]
    return newly


@njit(**_OPTS_GIL)
def family_a_run(
    z, control_z, lag, control_lag, has_lag, two_sample, cells, sig, sign, c_lo, c_hi, c_pair, gammas, tau,
    sd, center, bias_var, phi_var, inv_g2, logw, thr, thr_w, thr_r, thr_p, band, a_lvl, tail, k_phi, r_cap, top,
    S, N, U, A, logW, logR, logP, n_obs, Qzr, Qrr, S2, U2, Qzr2, harm, fired, log_horizon, start, out, out_fired, out_harm,
):  # pragma: no cover - compiled
    lw, lwv, lrv = np.empty(1), np.empty(1), np.empty(1)
    for t in range(start, z.shape[0]):
        family_a_step(
            z[t:t + 1], control_z[t:t + 1], lag[t:t + 1], control_lag[t:t + 1], has_lag, two_sample, cells[t], sig, sign,
            c_lo, c_hi, c_pair, gammas, tau, sd, center, bias_var, phi_var, inv_g2, logw, thr, thr_w, thr_r, thr_p,
            band, a_lvl, tail, k_phi, r_cap, top, S, N, U, A, logW, logR, logP, n_obs, Qzr, Qrr, S2, U2, Qzr2, lw, lwv, lrv, harm,
        )
        out[t, 0], out[t, 1], out[t, 2], out[t, 3] = lw[0], lrv[0] - log_horizon, lwv[0], lrv[0]
        h = True
        for i in range(harm.shape[1]):
            h = h and harm[0, i]
        out_harm[t] = h
        if _sticky(lw[0], thr, fired, out_fired, t):
            return t + 1, True
    return z.shape[0], False


@njit(**_OPTS_GIL)
def family_c_run(
    z, control_z, two_sample, c_hi, us, cells, cell_block, chol_inv, ref, ref_n, ref_mean, min_ref_mmd, gain, radius,
    omega, phase, feat_scale, S, A, logdet, bias, G, lam, asum, logW, dsum, d2, log_m, quad, thr, fired, start, out, out_fired,
):  # pragma: no cover - compiled
    lw = np.empty(1)
    for t in range(start, z.shape[0]):
        family_c_step(
            z[t:t + 1], control_z[t:t + 1], two_sample, c_hi, us[t:t + 1], cell_block[cells[t]], chol_inv, ref, ref_n,
            ref_mean, min_ref_mmd, gain, radius, omega, phase, feat_scale, S, A, logdet, bias, G, lam, asum, logW, dsum,
            d2, lw, log_m, quad,
        )
        out[t, 0], out[t, 1], out[t, 2], out[t, 3] = lw[0], quad[0], log_m[0], logW[0]
        if _sticky(lw[0], thr, fired, out_fired, t):
            return t + 1, True
    return z.shape[0], False


@njit(**_OPTS_GIL)
def family_d_run(
    z, control_z, two_sample, center, cells, cell_block, n0, clip, rot_re, rot_im, inv_gscale, inv_mu_scale, inv_kappa,
    half_prec, half_logvar, hazard, weight, kq, Zr, Zi, msum, mcnt, rl_w, rl_sum, lam, asum, wealth, log_scale,
    thr, fired, start, out, out_fired,
):  # pragma: no cover - compiled
    lw = np.empty(1)
    n_ch = wealth.shape[1]
    for t in range(start, z.shape[0]):
        family_d_step(
            z[t:t + 1], control_z[t:t + 1], two_sample, center, cell_block[cells[t]], n0, clip, rot_re, rot_im,
            inv_gscale, inv_mu_scale, inv_kappa, half_prec, half_logvar, hazard, weight, Zr, Zi, msum, mcnt, rl_w,
            rl_sum, lam, asum, wealth, log_scale, lw,
        )
        top = wealth[0, 0]
        f_sum = 0.0
        b_sum = 0.0
        for c in range(n_ch):
            top = max(top, wealth[0, c])
            if c < kq:
                f_sum += wealth[0, c] * weight[c]
            else:
                b_sum += wealth[0, c] * weight[c]
        out[t, 0] = lw[0]
        out[t, 1] = log_scale[0] + (math.log(top) if top > 0.0 else -np.inf)
        out[t, 2] = log_scale[0] + (math.log(f_sum) if f_sum > 0.0 else -np.inf) + math.log(2.0)
        out[t, 3] = log_scale[0] + (math.log(b_sum) if b_sum > 0.0 else -np.inf) + math.log(2.0)
        if _sticky(lw[0], thr, fired, out_fired, t):
            return t + 1, True
    return z.shape[0], False


@njit(**_OPTS_GIL)
def family_e_run(
    z, control_z, two_sample, c_hi, cells, cell_block, chol_inv, cal, cal_n, table, log_kappas, kappas_m1,
    log_n_kappas, log_offset, logR, last_p, last_s, thr, fired, start, out, out_fired,
):  # pragma: no cover - compiled
    lw = np.empty(1)
    for t in range(start, z.shape[0]):
        family_e_step(
            z[t:t + 1], control_z[t:t + 1], two_sample, c_hi, cell_block[cells[t]], chol_inv, cal, cal_n, table,
            log_kappas, kappas_m1, log_n_kappas, log_offset, logR, last_p, last_s, lw,
        )
        out[t, 0], out[t, 1], out[t, 2], out[t, 3] = lw[0], last_s[0], logR[0], last_p[0]
        if _sticky(lw[0], thr, fired, out_fired, t):
            return t + 1, True
    return z.shape[0], False


@njit(**_OPTS_GIL)
def family_b_run(
    z, raw, control_z, control_raw, cells, two_sample, c_hi, bleed_on, bleed_idx, bleed_two, lam, bleed_thr, bleed_min,
    slo_on, err, lat, succ, err_res, error_floor, error_increase, latency_multiplier, min_success, consecutive,
    raw_location, ewma, streak, bleed_fired, slo_fired, start, out_drift, out_fired, out_ewma,
):  # pragma: no cover - compiled
    """Family B over ticks ``start..``: per tick the drifting count, whether any rule has fired and the
    slowbleed EWMAs; returns after a tick where a rule newly fires, as ``(ticks done, newly code)``."""
    drift = np.empty(1, dtype=np.int64)
    newly = np.empty(1, dtype=np.int64)
    for t in range(start, z.shape[0]):
        family_b_step(
            z[t:t + 1], raw[t:t + 1], control_z[t:t + 1], control_raw[t:t + 1], cells[t], two_sample, c_hi, bleed_on,
            bleed_idx, bleed_two, lam, bleed_thr, bleed_min, slo_on, err, lat, succ, err_res, error_floor,
            error_increase, latency_multiplier, min_success, consecutive, raw_location, ewma, streak, bleed_fired,
            slo_fired, drift, newly,
        )
        out_drift[t] = drift[0]
        out_fired[t] = bleed_fired[0] or slo_fired[0]
        for i in range(ewma.shape[1]):
            out_ewma[t, i] = ewma[0, i]
        if newly[0] != 0:
            return t + 1, newly[0]
    return z.shape[0], 0


@njit(**_OPTS_GIL)
def decide_run(
    tick0, lw, fired, b_fired, valid, harm, log_thr, window, horizon, min_valid_fraction, suggestive_fraction,
    early_proceed, min_proceed_fraction, n_valid, max_lw, verdict, final, decided_at, first_fire, b_warn, closed, hold,
    out_verdict, out_final, out_decided, out_first, out_max_lw, out_n_valid,
):  # pragma: no cover - compiled
    """:func:`decide_step` for one stream over ticks ``tick0, tick0 + 1, ...`` (inputs (T, F) / (T,),
    ``hold`` (T,)), recording the verdict state after every tick."""
    for t in range(lw.shape[0]):
        decide_step(
            tick0 + t, lw[t:t + 1], fired[t:t + 1], b_fired[t:t + 1], valid[t:t + 1], harm[t:t + 1], log_thr, window,
            horizon, min_valid_fraction, suggestive_fraction, early_proceed, min_proceed_fraction, n_valid, max_lw,
            verdict, final, decided_at, first_fire, b_warn, closed, hold[t:t + 1],
        )
        out_verdict[t], out_final[t], out_decided[t], out_n_valid[t] = verdict[0], final[0], decided_at[0], n_valid[0]
        for f in range(lw.shape[1]):
            out_first[t, f] = first_fire[0, f]
            out_max_lw[t, f] = max_lw[0, f]


@njit(**_OPTS_GIL)
def scale_bounded(v, orient, scale, bound, out):  # pragma: no cover - compiled
    """``out = clip(orient * v / scale, -bound, bound)`` elementwise, the same IEEE operations as the
    numpy expression; NaN stays NaN and an overflow to infinity becomes the bound (no warning).
    ``v``, ``out``: (n, k); ``orient``, ``scale``: (n, k) or (1, k) (broadcast over rows)."""
    n, k = v.shape
    one = orient.shape[0] == 1
    for i in range(n):
        r = 0 if one else i
        for j in range(k):
            x = orient[r, j] * v[i, j] / scale[r, j]
            out[i, j] = bound if x > bound else (-bound if x < -bound else x)


@njit(**_OPTS_GIL)
def in_domain_run(stamps, out, max_lw, n_valid, tick, static_ok, lo, hi, max_log_wealth, min_fraction, fast):  # pragma: no cover - compiled
    """Per tick ``i`` of a batch: whether every float its records carry lies where msgspec and the
    standard library write alike (see ``Gate._in_domain``): the timestamp and every finite output of
    ``out[i]`` (non-finite ones are recorded as null) are 0 or ``lo <= |x| < hi``; no family's
    running maximum log-wealth (last column excluded: family B) exceeds ``max_log_wealth``; the valid
    fraction ``n_valid[i] / (tick + 1 + i)`` is 0 or at least ``min_fraction``. Comparisons only, plus
    one correctly rounded division: the same answer as the numpy expression it replaces."""
    n = stamps.shape[0]
    for i in range(n):
        ok = static_ok
        v = stamps[i]
        if math.isfinite(v):
            a = abs(v)
            ok = ok and (a == 0.0 or (a >= lo and a < hi))
        for f in range(out.shape[1]):
            for c in range(out.shape[2]):
                v = out[i, f, c]
                if math.isfinite(v):
                    a = abs(v)
                    ok = ok and (a == 0.0 or (a >= lo and a < hi))
        for f in range(max_lw.shape[1] - 1):
            ok = ok and not (max_lw[i, f] > max_log_wealth)
        frac = n_valid[i] / (tick + 1.0 + i)
        ok = ok and (frac == 0.0 or frac >= min_fraction)
        fast[i] = ok
