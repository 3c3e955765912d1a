"""Baselines at a matched false-rollback rate.

A detection rate means little beside a false-rollback rate: a baseline with library defaults that rolls
back 80% of healthy canaries "detects" most regressions too. To compare like for like, every baseline has
one sensitivity knob (:data:`KNOBS`), and :func:`calibrate` turns it, on healthy null draws whose seeds are
disjoint from the evaluation's (:func:`calibration_seed`), to the most sensitive grid value whose pooled
false-rollback rate over the null scenarios is at most a target (the gate's alpha). The evaluation then
runs each calibrated baseline (``<name>@matched``) beside its default on the same draws, so the report can
say whether the gate detects at least as much at a matched or lower false-rollback rate.

The calibration is in-sample for the null *family* (the same null scenario types) but out-of-sample for
the draws, as a user who tunes a threshold on past healthy deploys would do. A baseline whose least
sensitive grid value still exceeds the target is reported as not matched (``matched: False``) with that
value: it cannot reach the gate's false-rollback rate at any setting of the grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..simulate._suite import SUITE, simulate_suite
from ..telemetry import Frame
from ._kayenta import KayentaJudge
from ._method import Method, MethodResult
from ._parallel import ordered_map

__all__ = ["KNOBS", "MATCHED_SUFFIX", "Knob", "calibrate", "calibration_seed", "tuned"]

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
#: run far into the conservative side (a knob value at which a method could no longer fire on any
#: regression of the suite would be pointless, so grids stop well short of that).
KNOBS: dict[str, Knob] = {
    "kayenta": Knob(
        "pass / marginal score",
        ((95, 75), (90, 75), (85, 70), (80, 65), (75, 60), (70, 55), (65, 50), (60, 45), (50, 35), (40, 25), (30, 15), (20, 5)),
        _set(pass_score=0, marginal_score=1),
        _kayenta_many,
    ),
    "static": Knob("limit scale", (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0), _set(scale=None)),
    "flagger": Knob("failed-checks threshold", (5, 10, 15, 20, 30, 40, 60, 80, 120, 160, 240), _set(threshold=None)),
    "ttest_peek": Knob("level alpha", (0.05, 0.01, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-10, 1e-12), _set(alpha=None)),
    "page_hinkley": Knob("threshold", (50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 600.0, 800.0, 1200.0, 1600.0), _river("threshold")),
    "adwin": Knob("delta", (0.002, 1e-4, 1e-6, 1e-8, 1e-10, 1e-13, 1e-16, 1e-20, 1e-25, 1e-30), _river("delta")),
}


def calibration_seed(seed: int, scenario: str, rep: int) -> int:
    """Seed of one calibration draw: disjoint stream from the evaluation's ``replicate_seed`` (extra key 1)."""
    idx = list(SUITE).index(scenario)
    return int(np.random.SeedSequence([seed, idx, rep, 1]).generate_state(1)[0])


def tuned(method: Method, value: Any) -> Method:
    """``method`` with its knob set to ``value`` and named ``<name>@matched``."""
    m = KNOBS[method.name].apply(method, value)
    return dataclasses.replace(m, name=method.name + MATCHED_SUFFIX)  # type: ignore[type-var]


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

    Returns per method: ``value`` (the chosen grid value), ``index`` in the grid, ``matched`` (its pooled
    calibration false-rollback rate is <= ``target``), ``label`` and ``curve``: per grid value, false
    rollbacks ``k`` of ``n`` calibration runs. Deterministic given the arguments (``jobs`` changes only the
    speed).
    """
    names = [n for n in names if n in KNOBS]
    if not names or not nulls:
        return {}
    tasks = [(s, r, seed, tuple(names), alpha, mode, canary_ticks, baseline_ticks) for s in nulls for r in range(reps)]
    counts = {n: np.zeros(len(KNOBS[n].grid), dtype=int) for n in names}
    done = 0

    def collect(res: dict[str, list[bool]]) -> None:
        nonlocal done
        for n, flags in res.items():
            counts[n] += np.asarray(flags, dtype=int)
        done += 1
        if progress is not None:
            progress(done, len(tasks))

    for res in ordered_map(_cal_task, tasks, jobs):
        collect(res)
    n_runs = len(tasks)
    out: dict[str, dict[str, Any]] = {}
    for n in counts:
        knob, k = KNOBS[n], counts[n]
        ok = np.flatnonzero(k <= target * n_runs)
        idx = int(ok[0]) if ok.size else len(knob.grid) - 1
        value = knob.grid[idx]
        out[n] = {
            "label": knob.label,
            "value": list(value) if isinstance(value, tuple) else value,
            "index": idx,
            "matched": bool(ok.size),
            "curve": [{"value": list(v) if isinstance(v, tuple) else v, "k": int(c), "n": n_runs} for v, c in zip(knob.grid, k)],
        }
    return out
