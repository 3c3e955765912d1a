"""Regressions that change the *shape* of telemetry rather than its level (families C, D, E).

Each pattern acts on the deviations of chosen signals from their level and diurnal profile, so it can
keep every marginal mean and variance unchanged:

* ``decouple`` (joint shift): from ``onset`` the deviations of the chosen signals change sign. Their
  marginal laws are unchanged (the simulated noise is symmetric) but their correlation with every other
  signal flips, e.g. from +0.6 to -0.6.
* ``oscillate``: a period-``period`` wave of ``amplitude`` marginal sd is added and the noise is shrunk
  by :math:`\\sqrt{1 - a^2/2}`, so mean and variance stay the same.
* ``excursion`` (novel pattern): for ``duration`` ticks the chosen signals move by ``magnitude`` sd in the
  given signs (default: their benign direction), a combination the baseline never shows when it goes
  against the signals' correlation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._exceptions import InputError
from ..telemetry import CATALOGUE

__all__ = ["PATTERN_SCENARIOS", "Pattern", "apply_pattern"]


@dataclass(frozen=True)
class Pattern:
    kind: Literal["decouple", "oscillate", "excursion"]
    signals: tuple[str, ...]
    onset: int = 0
    period: int = 3
    amplitude: float = 0.9
    magnitude: float = 2.0
    duration: int = 30
    signs: tuple[float, ...] | None = None


def apply_pattern(
    ts: np.ndarray, vals: np.ndarray, signals: tuple[str, ...], pattern: Pattern, profile: dict, diurnal: float
) -> np.ndarray:
    """Apply ``pattern`` to canary values ``vals`` (n, k) or (P, n, k) with timestamps ``ts`` (n,)."""
    out = np.array(vals, dtype=float, copy=True)
    n = out.shape[-2]
    t = np.arange(n)
    phase = 2 * np.pi * (np.asarray(ts) % 86400.0) / 86400.0
    for i, name in enumerate(pattern.signals):
        if name not in signals:
            raise InputError(f"pattern names unknown signal {name!r}")
        j = signals.index(name)
        level, sd, amp, _phi = profile.get(name, (0.0, 1.0, 0.0, 0.0))
        base = level + sd * diurnal * amp * np.sin(phase)
        dev = out[..., j] - base
        on = t >= pattern.onset
        if pattern.kind == "decouple":
            out[..., j] = np.where(on, base - dev, out[..., j])
        elif pattern.kind == "oscillate":
            wave = pattern.amplitude * sd * np.cos(2 * np.pi * (t - pattern.onset) / pattern.period)
            shrink = math.sqrt(max(1.0 - pattern.amplitude**2 / 2.0, 0.0))
            out[..., j] = np.where(on, base + shrink * dev + wave, out[..., j])
        else:
            spec = CATALOGUE.get(name)
            benign = 1.0 if spec is not None and spec.direction == "down" else -1.0
            sign = pattern.signs[i] if pattern.signs is not None else benign
            live = on & (t < pattern.onset + pattern.duration)
            out[..., j] = out[..., j] + np.where(live, sign * pattern.magnitude * sd, 0.0)
    return out


#: name -> (description, noise correlation, pattern, canary ticks)
PATTERN_SCENARIOS: dict[str, tuple[str, float, Pattern, int]] = {
    "joint_shift": (
        "ttft, tokens/turn, kv-cache, mfu, hbm spill, collective ops decouple from the other six signals at tick 0 "
        "(correlation +0.6 -> -0.6); every marginal mean and sd unchanged",
        0.6,
        Pattern("decouple", ("ttft_ms", "tokens_per_turn", "kv_cache_util", "mfu", "hbm_spill_rate", "collective_ops_ms")),
        480,
    ),
    "oscillation": (
        "kv-cache utilisation oscillates with period 3 ticks (0.9 sd) from tick 60; mean and variance unchanged",
        0.0,
        Pattern("oscillate", ("kv_cache_util",), onset=60, period=3, amplitude=0.9),
        480,
    ),
    "novel_pattern": (
        "for 30 ticks from tick 200, p99 latency drops 2 sd while eval score rises 2 sd, against their baseline "
        "correlation of 0.8: each move is benign, the combination was never seen",
        0.8,
        Pattern("excursion", ("p99_latency_ms", "eval_score"), onset=200, magnitude=2.0, duration=30),
        480,
    ),
}
