"""Baselines at a matched false-rollback rate.

A detection rate means little beside a false-rollback rate: a baseline with library defaults that rolls
back 80% of healthy canaries "detects" most regressions too. To compare like for like, every baseline has
one sensitivity knob (:data:`KNOBS`), and :func:`calibrate` runs every grid value of it on healthy draws of
*every* null scenario of the suite, with seeds disjoint from the evaluation's (:func:`calibration_seed`).
The calibrated baseline (``<name>@matched``) is the randomised mixture of the two neighbouring grid values
that brackets the target rate: on each evaluation draw it uses the more sensitive value ``lo`` with
probability ``p`` (a seeded coin per draw, :func:`mixture_coin`) and ``hi`` otherwise, with ``p`` chosen so
that its pooled calibration false-rollback rate equals the target (the gate's alpha) exactly; this is the
classical randomised test of exact size, and its operating point lies on the segment between the two
settings' (false-rollback, detection) points, so a coarse grid neither favours nor penalises a baseline.

The calibration is in-sample for the null *family* (the same null scenario types) but out-of-sample for
the draws, as a user who tunes a threshold on past healthy deploys would do. A baseline whose least
sensitive grid value still exceeds the target is reported as not matched (``matched: False``) and runs at
that value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .._exceptions import InputError
from ..simulate._suite import SUITE, simulate_suite
from ..telemetry import Frame
from ._kayenta import KayentaJudge
from ._method import Method, MethodResult
from ._parallel import ordered_map

__all__ = ["KNOBS", "MATCHED_SUFFIX", "Knob", "calibrate", "calibration_seed", "matched_method", "mixture_coin", "tuned"]

#: Suffix of a calibrated baseline's method name.
MATCHED_SUFFIX = "@matched"


@dataclass(frozen=True)
class Knob:
    """A baseline's sensitivity knob: the field(s) it sets and the grid, most sensitive (the default) first.

    ``run_many`` (optional) runs several settings of one method on one draw faster than one run each (it
    must agree with running them one by one, which a test checks).
    """

    label: str
    grid: tuple[Any, ...]
    apply: Callable[[Method, Any], Method]
    run_many: Callable[[Sequence[Method], Frame, Frame, Frame | None], list[MethodResult]] | None = None

    def results(self, methods: Sequence[Method], baseline: Frame, canary: Frame, control: Frame | None = None) -> list[MethodResult]:
        """Results of ``methods`` (settings of this knob's method) on one draw."""
        if self.run_many is not None:
            return self.run_many(methods, baseline, canary, control)
        return [m.run(baseline, canary, control) for m in methods]

    def verdicts(self, method: Method, baseline: Frame, canary: Frame, control: Frame | None = None) -> list[str]:
        """Final verdict of ``method`` at every grid value on one draw."""
        return [r.verdict for r in self.results([self.apply(method, v) for v in self.grid], baseline, canary, control)]


def _kayenta_many(methods: Sequence[Method], baseline: Frame, canary: Frame, control: Frame | None) -> list[MethodResult]:
    """Kayenta's judgements do not depend on the score thresholds: score once, decide per threshold pair."""
    judges = [cast(KayentaJudge, m) for m in methods]
    js = judges[0].judgements(baseline, canary, control, stop_below=min(j.marginal_score for j in judges))
    return [j.decide(js, len(canary)) for j in judges]


def _set(**fields: Any) -> Callable[[Method, Any], Method]:
    def apply(m: Method, v: Any) -> Method:
        return dataclasses.replace(m, **{f: (v if src is None else v[src]) for f, src in fields.items()})  # type: ignore[type-var]

    return apply


def _river(param: str) -> Callable[[Method, Any], Method]:
    def apply(m: Method, v: Any) -> Method:
        return dataclasses.replace(m, params={**m.params, param: v})  # type: ignore[attr-defined,type-var]

    return apply


#: Per baseline: the knob turned to match a false-rollback rate. Grids start at the method's default and
#: run far into the conservative side; neighbouring values are close enough that the randomised mixture
#: between two of them is a fair stand-in for the continuous knob.
KNOBS: dict[str, Knob] = {
    "kayenta": Knob(
        "pass / marginal score",
        ((95, 75), (90, 75), (85, 75), (85, 70), (80, 70), (80, 65), (75, 65), (75, 60), (70, 60), (70, 55), (65, 55),
         (65, 50), (60, 50), (60, 45), (55, 45), (55, 40), (50, 40), (50, 35), (45, 30), (40, 25), (30, 15), (20, 5)),
        _set(pass_score=0, marginal_score=1),
        _kayenta_many,
    ),
    "static": Knob("limit scale", (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0), _set(scale=None)),
    "flagger": Knob("failed-checks threshold", (5, 6, 7, 8, 10, 12, 15, 18, 20, 25, 30, 35, 40, 50, 60, 80, 100, 120, 160, 240), _set(threshold=None)),
    "ttest_peek": Knob(
        "level alpha",
        (0.05, 0.02, 0.01, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10, 1e-12, 1e-15, 1e-20, 1e-30, 1e-50, 1e-80, 1e-120, 1e-200, 1e-300),
        _set(alpha=None),
    ),
    "page_hinkley": Knob(
        "threshold",
        (50.0, 75.0, 100.0, 125.0, 150.0, 200.0, 250.0, 300.0, 350.0, 400.0, 450.0, 500.0, 600.0, 700.0, 800.0, 1000.0, 1200.0, 1600.0, 2400.0, 3200.0),
        _river("threshold"),
    ),
    "adwin": Knob(
        "delta",
        (0.002, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8, 1e-10, 1e-13, 1e-16, 1e-20, 1e-25, 1e-30, 1e-40, 1e-60, 1e-80, 1e-120, 1e-160, 1e-200, 1e-250, 1e-300),
        _river("delta"),
    ),
}


def calibration_seed(seed: int, scenario: str, rep: int) -> int:
    """Seed of one calibration draw: disjoint stream from the evaluation's ``replicate_seed`` (extra key 1)."""
    idx = list(SUITE).index(scenario)
    return int(np.random.SeedSequence([seed, idx, rep, 1]).generate_state(1)[0])


def tuned(method: Method, value: Any) -> Method:
    """``method`` with its knob set to ``value`` and named ``<name>@matched``."""
    m = KNOBS[method.name].apply(method, value)
    return dataclasses.replace(m, name=method.name + MATCHED_SUFFIX)  # type: ignore[type-var]


def mixture_coin(replicate_seed: int, name: str) -> float:
    """Uniform [0, 1) coin of the randomised matched baseline ``name`` on the draw with ``replicate_seed``."""
    return float(np.random.default_rng([replicate_seed, 2, list(KNOBS).index(name)]).random())


def matched_method(method: Method, cal: dict[str, Any], replicate_seed: int) -> Method:
    """The calibrated baseline on one draw: grid value ``lo`` with probability ``p_lo``, else ``hi``."""
    grid = KNOBS[method.name].grid
    use_lo = cal["p_lo"] > 0.0 and mixture_coin(replicate_seed, method.name) < cal["p_lo"]
    return tuned(method, grid[cal["lo_index"]] if use_lo else grid[cal["index"]])


def _cal_task(args: tuple[str, int, int, tuple[str, ...], float, str, int | None, int | None]) -> dict[str, list[bool]]:
    from ._runner import build_methods

    scenario, rep, seed, names, alpha, mode, canary_ticks, baseline_ticks = args
    cs = calibration_seed(seed, scenario, rep)
    sim = simulate_suite(scenario, cs, canary_ticks=canary_ticks, baseline_ticks=baseline_ticks)
    control = sim.control if mode == "two-sample" else None
    out: dict[str, list[bool]] = {}
    for base in build_methods(names, window=int(sim.truth["window"]), alpha=alpha, seed=cs % (2**31)):
        out[base.name] = [v == "rollback" for v in KNOBS[base.name].verdicts(base, sim.baseline, sim.canary, control)]
    return out


def calibrate(
    names: Sequence[str],
    nulls: Sequence[str],
    *,
    target: float,
    reps: int,
    seed: int = 0,
    alpha: float = 0.05,
    mode: str = "one-sample",
    jobs: int = 1,
    canary_ticks: int | None = None,
    baseline_ticks: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Calibrate each baseline in ``names`` (those with a :data:`KNOBS` entry) on ``reps`` draws of every
    null scenario in ``nulls``.

    Returns per method: ``index`` of the most sensitive grid value whose pooled calibration false-rollback
    rate is <= ``target`` (``matched``; else the last value, ``matched`` False), ``lo_index`` (the grid
    value before it, or ``index`` itself when there is nothing to mix) and ``p_lo``, the probability of
    using that more sensitive value so that the mixture's calibration rate equals ``target`` (0 when
    ``index`` is 0 or the target is not reached); ``value`` / ``lo_value``, ``calibration_rate`` (the
    mixture's), ``label`` and ``curve``: per grid value, false rollbacks ``k`` of ``n`` calibration runs.
    Deterministic given the arguments (``jobs`` changes only the speed).
    """
    if reps < 1:
        raise InputError(f"calibration needs reps >= 1, got {reps}")
    if not 0.0 < target < 1.0:
        raise InputError(f"target false-rollback rate must lie in (0, 1), got {target}")
    names = [n for n in names if n in KNOBS]
    if not names or not nulls:
        return {}
    tasks = [(s, r, seed, tuple(names), alpha, mode, canary_ticks, baseline_ticks) for s in nulls for r in range(reps)]
    counts = {n: np.zeros(len(KNOBS[n].grid), dtype=int) for n in names}
    for done, res in enumerate(ordered_map(_cal_task, tasks, jobs), start=1):
        for n, flags in res.items():
            counts[n] += np.asarray(flags, dtype=int)
        if progress is not None:
            progress(done, len(tasks))
    n_runs = len(tasks)

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    out: dict[str, dict[str, Any]] = {}
    for n in counts:
        knob, k = KNOBS[n], counts[n]
        rate = k / n_runs
        ok = np.flatnonzero(rate <= target)
        idx = int(ok[0]) if ok.size else len(knob.grid) - 1
        mix = bool(ok.size) and idx > 0  # no mixture at the default or when alpha is not reached
        lo = idx - 1 if mix else idx
        p_lo = float((target - rate[idx]) / (rate[lo] - rate[idx])) if mix else 0.0
        out[n] = {
            "label": knob.label,
            "nulls": list(nulls),
            "index": idx,
            "value": plain(knob.grid[idx]),
            "lo_index": lo,
            "lo_value": plain(knob.grid[lo]),
            "p_lo": round(p_lo, 6),
            "calibration_rate": round(float(p_lo * rate[lo] + (1 - p_lo) * rate[idx]), 6),
            "matched": bool(ok.size),
            "curve": [{"value": plain(v), "k": int(c), "n": n_runs} for v, c in zip(knob.grid, k)],
        }
    return out
