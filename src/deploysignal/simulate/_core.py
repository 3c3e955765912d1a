"""Seeded telemetry simulator for the 12-signal catalogue, with canned regression scenarios.

Each signal is ``level + sd * (diurnal + AR(1) noise)`` on its own scale (rates stay inside [0, 1]).
A regression moves chosen signals in their harmful direction by a number of *marginal* standard
deviations, as a step or a ramp starting at ``onset`` (a canary tick index). The control stream of
two-sample mode is an independent draw of the same process (optionally sharing a common load shock)
without the regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._exceptions import InputError
from ..telemetry import CATALOGUE, Frame, signal_domains
from ._patterns import PATTERN_SCENARIOS, Pattern, apply_pattern

__all__ = ["SCENARIOS", "NoiseSpec", "Regression", "Simulation", "simulate", "simulate_streams"]

# level, marginal sd, diurnal amplitude (in sd), AR(1) phi of the default process
_PROFILE: dict[str, tuple[float, float, float, float]] = {
    "p99_latency_ms": (850.0, 40.0, 0.8, 0.3),
    "ttft_ms": (220.0, 12.0, 0.8, 0.3),
    "eval_score": (0.82, 0.015, 0.2, 0.2),
    "tool_success_rate": (0.95, 0.008, 0.2, 0.2),
    "refusal_rate": (0.03, 0.004, 0.3, 0.2),
    "downstream_error_rate": (0.01, 0.002, 0.3, 0.3),
    "cost_per_request": (0.0042, 0.0002, 0.5, 0.3),
    "tokens_per_turn": (410.0, 25.0, 0.6, 0.3),
    "kv_cache_util": (0.62, 0.03, 0.8, 0.4),
    "mfu": (0.41, 0.015, 0.5, 0.4),
    "hbm_spill_rate": (0.02, 0.003, 0.3, 0.3),
    "collective_ops_ms": (14.0, 0.8, 0.4, 0.3),
}


@dataclass(frozen=True)
class NoiseSpec:
    """Noise of the simulated process.

    ``kind``: ``gaussian`` or ``t3`` (Student t with 3 dof, scaled to unit variance) innovations.
    ``phi``: AR(1) coefficient for every signal, or ``None`` for the per-signal defaults.
    ``diurnal``: multiply the default diurnal amplitudes. ``missing``: probability a cell is missing.
    ``correlation``: equicorrelation of the innovations across signals. ``missing_burst``: mean length
    (ticks) of outages in which whole rows are missing (a two-state Markov chain whose stationary
    missing share is ``missing``); 0 = cells missing independently. ``day_effect``: sd (marginal sd
    units) of a level offset drawn independently per signal and calendar day (day-to-day drift).
    """

    kind: Literal["gaussian", "t3"] = "gaussian"
    phi: float | None = None
    diurnal: float = 1.0
    missing: float = 0.0
    correlation: float = 0.0
    missing_burst: float = 0.0
    day_effect: float = 0.0


@dataclass(frozen=True)
class Regression:
    """A harmful change: ``signals`` move by ``magnitude`` marginal sd, as a ``step`` or a ``ramp``.

    A ramp grows linearly from 0 at ``onset`` to ``magnitude`` after ``ramp_ticks`` and stays there.
    ``signs`` overrides the harmful direction per signal (+1 up, -1 down).
    """

    signals: tuple[str, ...]
    magnitude: float | tuple[float, ...]
    shape: Literal["step", "ramp"] = "step"
    onset: int = 0
    ramp_ticks: int = 480
    signs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Simulation:
    baseline: Frame
    canary: Frame
    control: Frame
    truth: dict[str, Any] = field(default_factory=dict)


def _harm_sign(name: str) -> float:
    spec = CATALOGUE.get(name)
    return -1.0 if spec is not None and spec.direction == "down" else 1.0


def _clip_to_domain(vals: np.ndarray, signals: tuple[str, ...]) -> np.ndarray:
    """Hold each catalogue signal inside its declared range (rates and ``eval_score`` in [0, 1]): the
    Gaussian noise of a small rate, or heavy-tailed noise on a score near 1, leaves it, and a real source
    never sends such a value (the gate would refuse it or take it as missing). The gate reads a rate
    through ``arcsin(sqrt(clip(x, 0, 1)))``, so a clipped rate changes no evidence; a score clips only
    under heavy-tailed noise (about 12 sd above its level under the Gaussian processes)."""
    known = [j for j, s in enumerate(signals) if s in CATALOGUE]
    d = signal_domains([CATALOGUE[signals[j]] for j in known])
    for i, j in enumerate(known):
        if np.isfinite(d.lo[i]) or np.isfinite(d.hi[i]):
            vals[..., j] = np.clip(vals[..., j], d.lo[i], d.hi[i])
    return vals


def simulate_streams(
    rng: np.random.Generator,
    n_streams: int,
    n: int,
    *,
    start: float = 1_700_000_000.0,
    tick_seconds: float = 60.0,
    noise: NoiseSpec = NoiseSpec(),
    signals: tuple[str, ...] = tuple(_PROFILE),
    burn_in: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_streams`` independent draws of the process: timestamps (n,), values (n_streams, n, k).

    Vectorised over streams; the AR(1) noise starts from its stationary law (after ``burn_in``).
    """
    k = len(signals)
    prof = np.array([_PROFILE.get(s, (0.0, 1.0, 0.0, 0.0)) for s in signals])
    level, sd, amp, phi_d = prof.T
    phi = phi_d if noise.phi is None else np.full(k, float(noise.phi))
    ts = start + tick_seconds * np.arange(n)
    total = n + burn_in
    if noise.correlation > 0:
        common = rng.standard_normal((n_streams, total, 1))
        own = rng.standard_normal((n_streams, total, k))
        e = math.sqrt(noise.correlation) * common + math.sqrt(1 - noise.correlation) * own
    else:
        e = rng.standard_normal((n_streams, total, k))
    if noise.kind == "t3":
        chi = rng.chisquare(3, size=(n_streams, total, k))
        e = e / np.sqrt(chi / 3.0) / math.sqrt(3.0)  # t3 has variance 3
    y = np.empty_like(e)
    y[:, 0] = e[:, 0]
    root = np.sqrt(1 - phi**2)
    for t in range(1, total):
        y[:, t] = phi * y[:, t - 1] + root * e[:, t]
    y = y[:, burn_in:]
    phase = 2 * np.pi * (ts % 86400.0) / 86400.0
    di = noise.diurnal * amp[None, :] * np.sin(phase)[:, None]
    if noise.day_effect > 0:
        day = ((ts - ts[0]) // 86400.0).astype(int)
        y = y + noise.day_effect * rng.standard_normal((n_streams, int(day[-1]) + 1, k))[:, day]
    vals = level + sd * (di[None] + y)
    vals = _clip_to_domain(vals, signals)
    if noise.missing > 0 and noise.missing_burst > 1:
        # two-state Markov chain per stream: outages of mean length L, stationary share `missing`
        p_end = 1.0 / noise.missing_burst
        p_start = noise.missing * p_end / (1.0 - noise.missing)
        u = rng.random((n_streams, n))
        out = np.empty((n_streams, n), dtype=bool)
        out[:, 0] = u[:, 0] < noise.missing
        for t in range(1, n):
            out[:, t] = np.where(out[:, t - 1], u[:, t] >= p_end, u[:, t] < p_start)
        vals = np.where(out[:, :, None], np.nan, vals)
    elif noise.missing > 0:
        vals = np.where(rng.random(vals.shape) < noise.missing, np.nan, vals)
    return ts, vals


def _apply(vals: np.ndarray, signals: tuple[str, ...], reg: Regression | None) -> np.ndarray:
    if reg is None:
        return vals
    out = vals.copy()
    n = vals.shape[-2]
    t = np.arange(n)
    if reg.shape == "step":
        prof = (t >= reg.onset).astype(float)
    else:
        prof = np.clip((t - reg.onset) / max(reg.ramp_ticks, 1), 0.0, 1.0)
    mags = reg.magnitude if isinstance(reg.magnitude, tuple) else (reg.magnitude,) * len(reg.signals)
    for i, (name, mag) in enumerate(zip(reg.signals, mags)):
        if name not in signals:
            raise InputError(f"regression names unknown signal {name!r}")
        j = signals.index(name)
        sd = _PROFILE.get(name, (0.0, 1.0, 0.0, 0.0))[1]
        sign = reg.signs[i] if reg.signs is not None else _harm_sign(name)
        out[..., j] = out[..., j] + sign * mag * sd * prof
    return out


_SCEN: dict[str, tuple[str, NoiseSpec, Regression | None, int]] = {
    "healthy": ("no regression", NoiseSpec(), None, 480),
    "healthy_ar1": ("no regression; AR(1) phi=0.85 with strong diurnal", NoiseSpec(phi=0.85, diurnal=2.0), None, 480),
    "healthy_heavy": ("no regression; Student-t(3) innovations", NoiseSpec(kind="t3"), None, 480),
    "healthy_gappy": ("no regression; 5% of values missing", NoiseSpec(missing=0.05), None, 480),
    "step": ("p99 latency steps up 0.5 sd at tick 60", NoiseSpec(), Regression(("p99_latency_ms",), 0.5, "step", 60), 480),
    "slow_drift": (
        "eval score ramps down to 0.6 sd over 480 ticks, then stays",
        NoiseSpec(),
        Regression(("eval_score",), 0.6, "ramp", 0, 480),
        960,
    ),
    "slowbleed": (
        "five infrastructure signals drift 0.45 sd together from tick 40",
        NoiseSpec(),
        Regression(("ttft_ms", "cost_per_request", "hbm_spill_rate", "collective_ops_ms", "mfu"), 0.45, "ramp", 40, 120),
        480,
    ),
}
SCENARIOS: tuple[str, ...] = tuple(_SCEN) + tuple(PATTERN_SCENARIOS)


def simulate(
    scenario: str,
    *,
    seed: int = 0,
    baseline_ticks: int = 4320,
    canary_ticks: int | None = None,
    tick_seconds: float = 60.0,
    noise: NoiseSpec | None = None,
    regression: Regression | None = None,
) -> Simulation:
    """Simulate a baseline, a canary and a control stream for a named scenario.

    Parameters
    ----------
    scenario : str
        One of :data:`SCENARIOS` (``noise``/``regression`` override its parts).
    seed : int
        Everything random flows from ``numpy.random.default_rng(seed)``.

    Examples
    --------
    >>> sim = simulate("step", seed=1)
    >>> len(sim.baseline), len(sim.canary), sim.truth["expected"]
    (4320, 480, 'rollback')
    """
    pattern: Pattern | None = None
    if scenario in PATTERN_SCENARIOS:
        desc, corr, pattern, default_len = PATTERN_SCENARIOS[scenario]
        nz, reg = NoiseSpec(correlation=corr), None
    elif scenario in _SCEN:
        desc, nz, reg, default_len = _SCEN[scenario]
    else:
        raise InputError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    nz = noise or nz
    reg = regression if regression is not None else reg
    m = canary_ticks or default_len
    rng = np.random.default_rng(seed)
    signals = tuple(_PROFILE)
    # one continuous series: baseline, then canary; control is a second independent stream
    ts, vals = simulate_streams(rng, 2, baseline_ticks + m, tick_seconds=tick_seconds, noise=nz, signals=signals)
    base = Frame(ts[:baseline_ticks], vals[0, :baseline_ticks], signals)
    canary_vals = _apply(vals[0, baseline_ticks:], signals, reg)
    if pattern is not None:
        canary_vals = apply_pattern(ts[baseline_ticks:], canary_vals, signals, pattern, _PROFILE, nz.diurnal)
    canary_vals = _clip_to_domain(canary_vals, signals)
    canary = Frame(ts[baseline_ticks:], canary_vals, signals)
    control = Frame(ts[baseline_ticks:], vals[1, baseline_ticks:], signals)
    truth = {
        "scenario": scenario,
        "description": desc,
        "seed": seed,
        "expected": "rollback" if reg is not None or pattern is not None else "proceed",
        "onset_tick": pattern.onset if pattern is not None else (None if reg is None else reg.onset),
        "pattern": None if pattern is None else {"kind": pattern.kind, "signals": list(pattern.signals)},
        "regression": None
        if reg is None
        else {"signals": list(reg.signals), "magnitude_sd": reg.magnitude if isinstance(reg.magnitude, float) else list(reg.magnitude), "shape": reg.shape, "ramp_ticks": reg.ramp_ticks},
        "noise": {"kind": nz.kind, "phi": nz.phi, "diurnal": nz.diurnal, "missing": nz.missing, "correlation": nz.correlation},
        "baseline_ticks": baseline_ticks,
        "canary_ticks": m,
        "tick_seconds": tick_seconds,
    }
    return Simulation(base, canary, control, truth)
