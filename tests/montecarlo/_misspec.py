"""Healthy processes the one-sample model does not describe (issue 22), and the Monte Carlo that runs
the model check and the default gate on them.

Every path: a 7-day baseline (1-minute ticks, the 12-signal catalogue's levels, sds and diurnal
amplitudes) followed by a canary of the gate's whole horizon (960 ticks) from the *same* healthy
process, so any rollback is false. Per path the baseline is compiled with the model check; the canary
runs through the default gate (batch path). A path is *certified by the checks* when every check ran
and passed; the backtest only removes certifications, so the rate of (certified by the checks and
rolled back) bounds that of (certified and rolled back) from above.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gammaln

from deploysignal.calibration import compile_baseline
from deploysignal.gate import Gate, GateSettings
from deploysignal.gate._gate import ROLLBACK
from deploysignal.simulate._core import _PROFILE
from deploysignal.telemetry import CATALOGUE, Frame

SIGNALS = tuple(_PROFILE)
DAY = 1440
WEEK = 7 * DAY
HORIZON = 960
START = 1_700_006_400.0  # a Wednesday 00:00 UTC: baselines start at midnight
WORKERS = min(2, os.cpu_count() or 1)
BURN = 2000


def _ar(rng: np.random.Generator, shape: tuple[int, int, int], phi: float) -> np.ndarray:
    """Unit-variance stationary AR(1) along axis 1."""
    e = rng.standard_normal(shape)
    y = np.empty_like(e)
    y[:, 0] = e[:, 0]
    root = math.sqrt(1 - phi * phi)
    for t in range(1, shape[1]):
        y[:, t] = phi * y[:, t - 1] + root * e[:, t]
    return y


def _ar2(rng: np.random.Generator, shape: tuple[int, int, int], a1: float, a2: float) -> np.ndarray:
    e = rng.standard_normal((shape[0], shape[1] + BURN, shape[2]))
    y = np.zeros_like(e)
    for t in range(2, e.shape[1]):
        y[:, t] = a1 * y[:, t - 1] + a2 * y[:, t - 2] + e[:, t]
    y = y[:, BURN:]
    r1 = a1 / (1 - a2)
    var = 1.0 / (1 - a1 * r1 - a2 * (a1 * r1 + a2))
    return y / math.sqrt(var)


def _frac(rng: np.random.Generator, shape: tuple[int, int, int], d: float) -> np.ndarray:
    """Fractional noise ARFIMA(0, d, 0), MA(inf) truncated at n + BURN terms, unit variance."""
    n = shape[1] + BURN
    k = np.arange(n)
    psi = np.exp(gammaln(k + d) - gammaln(k + 1) - gammaln(d))
    e = rng.standard_normal((shape[0], n, shape[2]))
    y = fftconvolve(e, psi[None, :, None], axes=1)[:, :n][:, BURN:]
    return y / math.sqrt(float(np.sum(psi**2)))


def _diurnal(ts: np.ndarray, shift_from: int | None = None, shift_hours: float = 1.0) -> np.ndarray:
    """sin of the time of day; from tick ``shift_from`` on, the cycle runs ``shift_hours`` later (DST)."""
    sec = ts.copy()
    if shift_from is not None:
        sec[shift_from:] = sec[shift_from:] - 3600.0 * shift_hours
    return np.sin(2 * np.pi * (sec % 86400.0) / 86400.0)


def noise(name: str, rng: np.random.Generator, paths: int, n: int, ts: np.ndarray) -> tuple[np.ndarray, float]:
    """(noise (paths, n, k) in marginal sd units, diurnal multiplier) of one null."""
    k = len(SIGNALS)
    shape = (paths, n, k)
    if name in ("model_ar1", "model_ar1_2day"):
        return _ar(rng, shape, 0.85), 2.0
    if name == "ar2":
        return _ar2(rng, shape, 0.5, 0.3), 1.0
    if name in ("slow10", "slow30"):
        w = 0.1 if name == "slow10" else 0.3
        slow = _ar(rng, (paths, n + BURN, k), 0.995)[:, BURN:]
        return math.sqrt(1 - w) * _ar(rng, shape, 0.5) + math.sqrt(w) * slow, 1.0
    if name == "phi099":
        return _ar(rng, (paths, n + BURN, k), 0.99)[:, BURN:], 1.0
    if name == "frac03":
        return _frac(rng, shape, 0.3), 1.0
    if name == "regime":
        # two levels 1 sd apart, Markov switching with a mean stay of 6 hours, AR(0.5) noise around them
        stay = 1.0 / 360.0
        flips = rng.random((paths, n)) < stay
        state = (np.cumsum(flips, axis=1) + rng.integers(0, 2, size=(paths, 1))) % 2
        return 0.8 * _ar(rng, shape, 0.5) + (state[:, :, None] - 0.5), 1.0
    if name in ("dst_inside", "dst_after"):
        return _ar(rng, shape, 0.5), 2.0
    if name == "hetero_peak":
        y = _ar(rng, shape, 0.5)
        peak = _diurnal(ts) > 0.5  # a third of the day
        return y * np.where(peak, math.sqrt(2.0), 1.0)[None, :, None], 1.0
    if name == "var_growth":
        # the baseline's AR(0.5) noise; over the canary its sd grows linearly to 1.5x (variance 2.25x)
        grow = np.ones(n)
        grow[n - HORIZON:] = np.linspace(1.0, 1.5, HORIZON)
        return _ar(rng, shape, 0.5) * grow[None, :, None], 1.0
    if name == "regime_after":
        # a regime the baseline never showed: from the canary's first tick every signal's level moves by
        # 0.5 marginal sd, up or down (a fair coin per path), in natural units: harmful on some signals,
        # harmless on the others
        step = np.zeros(n)
        step[n - HORIZON:] = 0.5
        sign = np.where(rng.random(paths) < 0.5, -1.0, 1.0)
        return _ar(rng, shape, 0.5) + sign[:, None, None] * step[None, :, None], 1.0
    if name == "weekly":
        dow = ((ts // 86400 + 3) % 7).astype(int)
        offs = np.array([0.0, 0.1, 0.2, 0.1, 0.0, -0.8, -0.9])[dow]
        return _ar(rng, shape, 0.5) + offs[None, :, None], 1.0
    raise KeyError(name)


NULLS = ("model_ar1", "model_ar1_2day", "ar2", "slow10", "slow30", "phi099", "frac03", "regime", "dst_inside", "dst_after",
         "hetero_peak", "weekly", "var_growth", "regime_after")  # appended: a null's seed is 2200 + its index


def simulate_null(name: str, rng: np.random.Generator, paths: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(timestamps, values (paths, n, k), baseline ticks) of one null."""
    base = 2 * DAY if name == "model_ar1_2day" else WEEK
    n = base + HORIZON
    ts = START + 60.0 * np.arange(n)
    y, amp_mult = noise(name, rng, paths, n, ts)
    prof = np.array([_PROFILE[s] for s in SIGNALS])
    level, sd, amp = prof[:, 0], prof[:, 1], prof[:, 2]
    shift = {"dst_inside": base - 2 * DAY - DAY // 3, "dst_after": base}.get(name)
    di = amp_mult * amp[None, :] * _diurnal(ts, shift)[:, None]
    vals = level + sd * (di[None] + y)
    # a rate lives in [0, 1]; the gate reads it through arcsin(sqrt(clip(x, 0, 1))): no evidence changes
    rate = np.array([CATALOGUE[s].kind == "rate" for s in SIGNALS])
    vals[..., rate] = np.clip(vals[..., rate], 0.0, 1.0)
    return ts, vals, base


@dataclass
class Outcome:
    name: str
    flagged: np.ndarray  # (P,) any check failed or could not run
    failed: dict[str, np.ndarray]  # check -> (P,) failed on some signal
    rollback: np.ndarray  # (P,)
    decided_at: np.ndarray  # (P,) tick of the final decision or -1
    uncertified_at: np.ndarray  # (P,) tick at which the run-time model check fired, or -1

    @property
    def flagged_in_time(self) -> np.ndarray:
        """Flagged at compile time, or by the run-time check at or before the tick the gate decided
        (a rollback ends the canary: a flag after it comes too late to matter)."""
        rt = (self.uncertified_at >= 0) & ((self.decided_at < 0) | (self.uncertified_at <= self.decided_at))
        return self.flagged | rt


def _compile(args: tuple[np.ndarray, np.ndarray, int]) -> tuple[bool, dict[str, bool], object]:
    ts, vals, seed = args
    cfg = compile_baseline(Frame(ts, vals, SIGNALS), seed=seed, robust_covariance=False)
    rows = cfg.certification["checks"]
    failed: dict[str, bool] = {}
    for r in rows:
        failed[r["check"]] = failed.get(r["check"], False) or r["passed"] is False
    return any(r["passed"] is not True for r in rows), failed, cfg


def run_null(name: str, paths: int, seed: int, chunk: int = 250) -> Outcome:
    """Model check on every path's baseline and the default gate over the canary horizon."""
    rng = np.random.default_rng(seed)
    flagged, rollback, failed, decided, unc = [], [], {}, [], []
    with ProcessPoolExecutor(WORKERS) as pool:
        for start in range(0, paths, chunk):
            p = min(chunk, paths - start)
            ts, vals, base = simulate_null(name, rng, p)
            seeds = rng.integers(2**31 - 1, size=p)
            res = list(pool.map(_compile, [(ts[:base], vals[i, :base], int(seeds[i])) for i in range(p)], chunksize=10))
            flagged.append(np.array([r[0] for r in res]))
            for c in res[0][1]:
                failed.setdefault(c, []).append(np.array([r[1][c] for r in res]))
            out = Gate([r[2] for r in res], GateSettings()).run_batch(ts[base:], vals[:, base:])
            rollback.append(out.verdict == ROLLBACK)
            decided.append(out.decided_at)
            unc.append(out.uncertified_at)
    return Outcome(name, np.concatenate(flagged), {c: np.concatenate(v) for c, v in failed.items()}, np.concatenate(rollback),
                   np.concatenate(decided), np.concatenate(unc))
