"""Monte-Carlo runner: scenarios x methods x seeded replicates, and the summary table."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._exceptions import InputError
from ..gate import FAMILY_BUILDERS, GateSettings
from ..simulate._suite import NULL_SCENARIOS, SUITE, simulate_suite
from ._gate_method import GateMethod
from ._kayenta import KayentaJudge
from ._matched import KNOBS, MATCHED_SUFFIX, calibrate, matched_method
from ._method import Method
from ._parallel import ordered_map
from ._river import ADWINMethod, PageHinkleyMethod, river_available
from ._stats import clopper_pearson, cp_lower, cp_upper, quantile_or_none
from ._thresholds import FlaggerAnalysis, StaticThresholds
from ._ttest import PeekingTTest

__all__ = ["METHOD_NAMES", "EvalRun", "Outcome", "build_methods", "method_order", "outcome_dicts", "pooled", "replicate_seed", "run_suite", "summarise"]

log = logging.getLogger(__name__)

#: Methods the harness knows, in report order.
METHOD_NAMES: tuple[str, ...] = ("gate", "kayenta", "static", "flagger", "ttest_peek", "page_hinkley", "adwin")


def method_order(name: str) -> tuple[int, int]:
    """Sort key for report rows: the catalogue order, each calibrated baseline right after its default."""
    base = name.removesuffix(MATCHED_SUFFIX)
    return (METHOD_NAMES.index(base) if base in METHOD_NAMES else len(METHOD_NAMES), int(base != name))


def build_methods(names: Sequence[str], *, window: int, alpha: float = 0.05, seed: int = 0) -> list[Method]:
    """Instantiate methods by name, each configured with the planned ``window`` (ticks).

    Kayenta judges every ``window // 8`` ticks (8 canary runs per analysis); the gate gets
    ``GateSettings(alpha=alpha, window=window, runtime_check=0)`` (one extension allowed, its default;
    the one-sample run-time model check off: its holds cannot be shown in the evaluation's tables, and
    the simulated canaries follow the baseline's model, so on them it fires with probability at most its
    budget; the committed docs/eval figures were made without it); the peeking t-test
    uses level ``alpha`` (Bonferroni across signals). River methods are skipped with a warning when river
    is not installed.
    """
    out: list[Method] = []
    for name in names:
        if name == "gate":
            out.append(GateMethod(GateSettings(alpha=alpha, window=window, runtime_check=0.0), seed=seed))  # see the docstring
        elif name == "kayenta":
            out.append(KayentaJudge(window=window, interval=max(window // 8, 10)))
        elif name == "static":
            out.append(StaticThresholds(window=window))
        elif name == "flagger":
            out.append(FlaggerAnalysis(window=window))
        elif name == "ttest_peek":
            out.append(PeekingTTest(alpha=alpha, window=window))
        elif name in ("page_hinkley", "adwin"):
            if not river_available():
                log.warning("river is not installed: skipping %s (pip install 'deploysignal[eval]')", name)
                continue
            out.append(PageHinkleyMethod(window=window) if name == "page_hinkley" else ADWINMethod(window=window))
        else:
            raise InputError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
    return out


@dataclass(frozen=True)
class Outcome:
    """One (scenario, method, replicate) result."""

    scenario: str
    method: str
    rep: int
    seed: int
    expected: str
    onset: int | None
    first_alarm: int | None
    verdict: str
    decided_at: int | None


@dataclass
class EvalRun:
    """All outcomes of a run plus the traces kept for plots (first ``trace_reps`` replicates)."""

    outcomes: list[Outcome]
    traces: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)
    bounds: dict[str, float | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def replicate_seed(seed: int, scenario: str, rep: int) -> int:
    """Seed of one replicate: a function of the run seed, the scenario's suite position and the replicate."""
    idx = list(SUITE).index(scenario)
    return int(np.random.SeedSequence([seed, idx, rep]).generate_state(1)[0])


def _task(
    args: tuple[str, int, int, tuple[str, ...], float, str, bool, int | None, int | None, tuple[tuple[str, dict[str, Any]], ...]],
) -> tuple[list[Outcome], dict[str, tuple[np.ndarray | None, float | None, str]]]:
    scenario, rep, seed, names, alpha, mode, keep, canary_ticks, baseline_ticks, knobs = args
    rs = replicate_seed(seed, scenario, rep)
    sim = simulate_suite(scenario, rs, canary_ticks=canary_ticks, baseline_ticks=baseline_ticks)
    window = int(sim.truth["window"])
    control = sim.control if mode == "two-sample" else None
    outs, traces = [], {}
    cal_of = dict(knobs)
    for base in build_methods(names, window=window, alpha=alpha, seed=rs % (2**31)):
        group = [base] + ([matched_method(base, cal_of[base.name], rs)] if base.name in cal_of else [])
        results = KNOBS[base.name].results(group, sim.baseline, sim.canary, control) if len(group) > 1 else [base.run(sim.baseline, sim.canary, control)]
        for m, r in zip(group, results):
            outs.append(Outcome(scenario, m.name, rep, rs, sim.truth["expected"], sim.truth["onset_tick"], r.first_alarm, r.verdict, r.decided_at))
            if keep:
                traces[m.name] = (r.trace, r.bound, r.trace_label)
    return outs, traces


def run_suite(
    scenarios: Sequence[str],
    methods: Sequence[str] = METHOD_NAMES,
    *,
    reps: int = 20,
    seed: int = 0,
    alpha: float = 0.05,
    mode: str = "one-sample",
    trace_reps: int = 20,
    jobs: int = 1,
    canary_ticks: int | None = None,
    baseline_ticks: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    matched: bool = False,
    calibration_progress: Callable[[int, int], None] | None = None,
) -> EvalRun:
    """Run every method on ``reps`` seeded draws of every scenario.

    Deterministic given the arguments (``jobs`` changes only the speed): replicate ``r`` of scenario ``s``
    is drawn with :func:`replicate_seed` and results are collected in task order.

    With ``matched``, every baseline with a sensitivity knob is first calibrated to a pooled false-rollback
    rate of ``alpha`` on ``reps`` draws of every null scenario of the suite with seeds disjoint from the
    evaluation's (:func:`~deploysignal.evaluation._matched.calibrate`), and also evaluated at that setting
    (a randomised mixture of two neighbouring knob values) as ``<name>@matched``; the calibration is in
    ``run.settings["matched"]``.
    """
    for s in scenarios:
        if s not in SUITE:
            raise InputError(f"unknown scenario {s!r}; choose from {', '.join(SUITE)}")
    if mode not in ("one-sample", "two-sample"):
        raise InputError(f"mode must be one-sample or two-sample, got {mode!r}")
    if reps < 1:
        raise InputError(f"reps must be >= 1, got {reps}")
    fams = sorted(set(FAMILY_BUILDERS) & set(GateSettings().shares))
    run = EvalRun([], settings={"scenarios": list(scenarios), "methods": list(methods), "reps": reps, "seed": seed, "alpha": alpha, "mode": mode, "gate_families": fams})
    knobs: tuple[tuple[str, dict[str, Any]], ...] = ()
    if matched:  # always on every null of the suite, whichever scenarios this run evaluates
        cal = calibrate(methods, NULL_SCENARIOS, target=alpha, reps=reps, seed=seed, alpha=alpha, mode=mode, jobs=jobs,
                        canary_ticks=canary_ticks, baseline_ticks=baseline_ticks, progress=calibration_progress)
        run.settings["matched"] = cal
        knobs = tuple(cal.items())
    tasks = [(s, r, seed, tuple(methods), alpha, mode, r < trace_reps, canary_ticks, baseline_ticks, knobs) for s in scenarios for r in range(reps)]
    done = 0

    def collect(res: tuple[list[Outcome], dict[str, tuple[np.ndarray | None, float | None, str]]]) -> None:
        nonlocal done
        outs, traces = res
        run.outcomes.extend(outs)
        for name, (tr, bound, label) in traces.items():
            if tr is not None:
                run.traces.setdefault((outs[0].scenario, name), []).append(tr)
                run.bounds[name], run.labels[name] = bound, label
        done += 1
        if progress is not None:
            progress(done, len(tasks))

    for res in ordered_map(_task, tasks, jobs):
        collect(res)
    return run


def _rate(k: int, n: int) -> dict[str, float | int | None]:
    lo, hi = clopper_pearson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci_low": lo, "ci_high": hi, "cp_upper": cp_upper(k, n), "cp_lower": cp_lower(k, n)}


def summarise(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Per (scenario, method): rates with Clopper-Pearson 95% intervals and delay quantiles.

    * nulls: ``false_rollback`` = share of runs rolled back at any tick (continuous monitoring);
      ``proceed`` = share that proceeded; ``time_to_proceed`` median / p90 (ticks) over proceeding runs.
    * regressions: ``detection`` = share rolled back at or after the onset; ``pre_onset_alarm`` = share
      rolled back before the onset (a false alarm that happens to help); delay = alarm tick - onset,
      median / p90 over detected runs; ``missed`` runs proceeded or ended undecided.
    """
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.scenario, o.method), []).append(o)
    rows = []
    for (scenario, method), os_ in groups.items():
        n = len(os_)
        expected = os_[0].expected
        row: dict[str, Any] = {"scenario": scenario, "method": method, "expected": expected, "n": n}
        if expected == "proceed":
            fr = sum(o.verdict == "rollback" for o in os_)
            pr = [o.decided_at for o in os_ if o.verdict == "proceed" and o.decided_at is not None]
            row["false_rollback"] = _rate(fr, n)
            row["proceed"] = _rate(len(pr), n)
            row["time_to_proceed_median"] = quantile_or_none(pr, 0.5)
            row["time_to_proceed_p90"] = quantile_or_none(pr, 0.9)
        else:
            onset = os_[0].onset or 0
            det = [o.first_alarm - onset for o in os_ if o.first_alarm is not None and o.first_alarm >= onset]
            pre = sum(o.first_alarm is not None and o.first_alarm < onset for o in os_)
            row["detection"] = _rate(len(det), n)
            row["pre_onset_alarm"] = _rate(pre, n)
            row["delay_median"] = quantile_or_none(det, 0.5)
            row["delay_p90"] = quantile_or_none(det, 0.9)
            row["delays"] = sorted(det)
        rows.append(row)
    sc_order = {s: i for i, s in enumerate(SUITE)}
    rows.sort(key=lambda r: (sc_order.get(r["scenario"], 99), method_order(r["method"])))
    return rows


def pooled(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: false-rollback rate pooled over null scenarios and detection pooled over regressions."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = out.setdefault(r["method"], {"null_k": 0, "null_n": 0, "det_k": 0, "det_n": 0})
        if r["expected"] == "proceed":
            d["null_k"] += r["false_rollback"]["k"]
            d["null_n"] += r["n"]
        else:
            d["det_k"] += r["detection"]["k"]
            d["det_n"] += r["n"]
    for d in out.values():
        d["false_rollback"] = _rate(d["null_k"], d["null_n"]) if d["null_n"] else None
        d["detection"] = _rate(d["det_k"], d["det_n"]) if d["det_n"] else None
    return out


def outcome_dicts(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [asdict(o) for o in outcomes]
