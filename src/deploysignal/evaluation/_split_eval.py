"""The split-mode evaluation: the split gate against its peers on the same generated per-request logs.

Design (``deploysignal split-eval``):

* **Null cells**: every world of :data:`~deploysignal.simulate._split.SPLIT_WORLDS` with no effect, at each
  volume (requests per tick) and canary share. Any rollback is a false rollback.
* **Power cells**: every effect of :data:`~deploysignal.simulate._split.SPLIT_EFFECTS` at each volume and
  share; replicate ``r`` draws its world as the ``r mod W``-th null world (the share-stepping and session
  worlds included), so each effect is measured on the same scenarios as the validity nulls, pooled.
* **Methods** (same log, same window of ``ticks`` ticks): the split gate (when ``deploysignal.split`` is
  installed), today's two-sample gate on per-tick aggregates, Kayenta's judge on the same aggregates, the
  fixed-n test on all requests at the window's end, and the same test at half the window
  (:mod:`~deploysignal.evaluation._split_peers`).
* **Seeds**: replicate seeds derive from ``numpy.random.SeedSequence([seed, cell index, replicate])``;
  the two-sample gate's config of a cell is compiled from an A/A log of the cell's world (and of the
  first world for power cells) drawn from ``SeedSequence([seed, cell index, 2**31 - 1])``. Results do not
  depend on the number of worker processes.

Reported per (cell, method): rollbacks / runs with a two-sided 95% Clopper-Pearson interval, the one-sided
99% upper bound for nulls, and the median delay in ticks (first alarm tick + 1) over detecting runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._exceptions import DeploySignalError, InputError
from ..simulate._split import SPLIT_EFFECTS, SPLIT_WORLDS, SplitRequests, simulate_split
from ._parallel import ordered_map
from ._split_peers import FixedNTest, KayentaSplit, PeerResult, TwoSampleAggregateGate, calibrate_two_sample, tick_aggregates
from ._stats import clopper_pearson, cp_upper

__all__ = [
    "AZURE_DESIGN",
    "SPLIT_METHODS",
    "SplitCell",
    "SplitEvalSettings",
    "split_cells",
    "run_azure_eval",
    "run_split_eval",
    "summarise_split",
]

log = logging.getLogger(__name__)

#: Methods in report order ("split" only when the split gate is installed).
SPLIT_METHODS: tuple[str, ...] = ("split", "two_sample", "kayenta", "fixed_n", "fixed_n_half")
_AA_TICKS = 480  # A/A calibration log for the two-sample gate: 8 hours of 1-minute ticks (240 left some
# covariance blocks of family E without calibration rows in half the cells tried)


@dataclass(frozen=True)
class SplitCell:
    """One cell of the design: a null world or an effect, at a volume and a share."""

    kind: str  # "null" or "power"
    name: str  # world (null) or effect (power)
    volume: float
    share: float

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}:{self.volume:g}:{self.share:g}"


@dataclass(frozen=True)
class SplitEvalSettings:
    """Size and shape of a run."""

    reps_null: int = 20
    reps_power: int = 11
    volumes: tuple[float, ...] = (50.0, 500.0, 5000.0)
    shares: tuple[float, ...] = (0.05, 0.5)
    worlds: tuple[str, ...] = tuple(SPLIT_WORLDS)
    effects: tuple[str, ...] = tuple(e for e in SPLIT_EFFECTS if e != "none")
    ticks: int = 60
    alpha: float = 0.05
    kayenta_interval: int = 10
    seed: int = 0
    methods: tuple[str, ...] = SPLIT_METHODS

    def __post_init__(self) -> None:
        bad = [w for w in self.worlds if w not in SPLIT_WORLDS] + [e for e in self.effects if e not in SPLIT_EFFECTS or e == "none"]
        if bad:
            raise InputError(f"unknown worlds/effects: {', '.join(bad)}")
        badm = [m for m in self.methods if m not in SPLIT_METHODS]
        if badm:
            raise InputError(f"unknown methods: {', '.join(badm)}; choose from {', '.join(SPLIT_METHODS)}")
        if self.reps_null < 0 or self.reps_power < 0 or self.ticks < 2 or not 0 < self.alpha < 1:
            raise InputError("reps must be >= 0, ticks >= 2 and alpha in (0, 1)")
        if any(not 0 < s < 1 for s in self.shares) or any(v <= 0 for v in self.volumes):
            raise InputError("shares must lie in (0, 1) and volumes be positive")


def split_cells(s: SplitEvalSettings) -> list[SplitCell]:
    """The design's cells in report order (share_step's share is its own schedule: one cell per volume)."""
    cells = []
    for w in s.worlds:
        for v in s.volumes:
            for sh in s.shares[:1] if w == "share_step" else s.shares:
                cells.append(SplitCell("null", w, v, sh))
    for e in s.effects:
        for v in s.volumes:
            for sh in s.shares:
                cells.append(SplitCell("power", e, v, sh))
    return cells


def split_gate_method(alpha: float, window: int) -> Callable[[SplitRequests], PeerResult] | None:
    """The split gate as an evaluated method, or ``None`` when ``deploysignal.split`` is not installed."""
    try:
        from ._split_gate import make_split_method
    except ImportError:
        return None
    return make_split_method(alpha=alpha, window=window)


def _run_cell(task: tuple[SplitEvalSettings, int, SplitCell]) -> list[tuple[str, int, int | None, str]]:
    s, index, cell = task
    reps = s.reps_null if cell.kind == "null" else s.reps_power
    worlds = [cell.name] if cell.kind == "null" else list(s.worlds)
    effect = "none" if cell.kind == "null" else cell.name
    rows: list[tuple[str, int, int | None, str]] = []
    if reps == 0:
        return rows
    split = split_gate_method(s.alpha, s.ticks) if "split" in s.methods else None
    two = None
    if "two_sample" in s.methods:
        aa_seed = int(np.random.SeedSequence([s.seed, index, 2**31 - 1]).generate_state(1)[0])
        aa = simulate_split(worlds[0], volume=cell.volume, share=cell.share, ticks=_AA_TICKS, seed=aa_seed)
        try:
            two = TwoSampleAggregateGate(calibrate_two_sample(aa, seed=aa_seed), alpha=s.alpha, window=s.ticks)
            two.check()
        except (DeploySignalError, ValueError) as exc:  # e.g. aggregates too sparse to calibrate every family
            log.warning("%s: two-sample gate cannot be built from the A/A log (%s); reported as extend", cell.key, exc)
            two = None
    kay = KayentaSplit(window=s.ticks, interval=s.kayenta_interval)
    fixed, half = FixedNTest(alpha=s.alpha), FixedNTest(alpha=s.alpha, at=s.ticks // 2 - 1)
    aggs = []
    for r in range(reps):
        seed = int(np.random.SeedSequence([s.seed, index, r]).generate_state(1)[0])
        req = simulate_split(worlds[r % len(worlds)], effect, volume=cell.volume, share=cell.share, ticks=s.ticks, seed=seed)
        agg = tick_aggregates(req)
        aggs.append(agg)
        if split is not None:
            res = split(req)
            rows.append(("split", r, res.first_alarm, res.verdict))
        if "kayenta" in s.methods:
            res = kay.run(req, agg)
            rows.append(("kayenta", r, res.first_alarm, res.verdict))
        if "fixed_n" in s.methods:
            res = fixed.run(req)
            rows.append(("fixed_n", r, res.first_alarm, res.verdict))
        if "fixed_n_half" in s.methods:
            res = half.run(req)
            rows.append(("fixed_n_half", r, res.first_alarm, res.verdict))
    if "two_sample" in s.methods:
        results = two.run_many(aggs) if two is not None else [PeerResult(None, "extend")] * reps
        rows.extend(("two_sample", r, res.first_alarm, res.verdict) for r, res in enumerate(results))
    return rows


def run_split_eval(s: SplitEvalSettings, *, jobs: int = 1, progress: Callable[[int, int], None] | None = None) -> dict[str, list[tuple[str, int, int | None, str]]]:
    """Run every cell; returns ``{cell key: [(method, rep, first_alarm, verdict), ...]}`` in cell order."""
    cells = split_cells(s)
    out: dict[str, list[tuple[str, int, int | None, str]]] = {}
    tasks = [(s, i, c) for i, c in enumerate(cells)]
    for i, rows in enumerate(ordered_map(_run_cell, tasks, jobs)):
        out[cells[i].key] = sorted(rows, key=lambda t: (SPLIT_METHODS.index(t[0]), t[1]))
        if progress:
            progress(i + 1, len(cells))
    return out


def _rate(k: int, n: int, null: bool) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n, 0.95)
    d: dict[str, Any] = {"k": k, "n": n, "rate": (k / n) if n else None, "ci95": [lo, hi] if n else None}
    if null:
        d["cp99_upper"] = cp_upper(k, n, 0.99) if n else None
    return d


def summarise_split(s: SplitEvalSettings, raw: dict[str, list[tuple[str, int, int | None, str]]]) -> list[dict[str, Any]]:
    """One row per (cell, method): rollbacks with CP intervals, median delay (ticks) of the detecting runs,
    and for the split gate the ratio of its detection rate to the half-sample fixed-n test's."""
    rows = []
    for cell in split_cells(s):
        per: dict[str, list[tuple[int | None, str]]] = {}
        for m, _, first, verdict in raw.get(cell.key, []):
            per.setdefault(m, []).append((first, verdict))
        for m in SPLIT_METHODS:
            if m not in per:
                continue
            res = per[m]
            delays = [f + 1 for f, v in res if v == "rollback" and f is not None]
            k = len(delays)
            row: dict[str, Any] = {
                "kind": cell.kind,
                "name": cell.name,
                "volume": cell.volume,
                "share": "step" if cell.name == "share_step" else cell.share,
                "method": m,
                "rollback": _rate(k, len(res), cell.kind == "null"),
                "median_delay_ticks": float(np.median(delays)) if delays else None,
                "verdicts": {v: sum(1 for _, x in res if x == v) for v in ("proceed", "extend", "rollback")},
            }
            rows.append(row)
    by = {(r["kind"], r["name"], r["volume"], r["share"], r["method"]): r for r in rows}
    for r in rows:
        if r["method"] != "split":
            continue
        key = (r["kind"], r["name"], r["volume"], r["share"])
        half = by.get((*key, "fixed_n_half"))
        two = by.get((*key, "two_sample"))
        if half is not None and half["rollback"]["rate"]:
            r["vs_fixed_n_half"] = r["rollback"]["rate"] / half["rollback"]["rate"]
        elif half is not None:
            r["vs_fixed_n_half"] = None  # the half-sample test detected nothing: no ratio
        if two is not None and two["median_delay_ticks"] and r["median_delay_ticks"]:
            r["delay_vs_two_sample"] = r["median_delay_ticks"] / two["median_delay_ticks"]
    return rows


#: (effect, routing, share, runs) of the Azure trace evaluation at full size (``--quick`` runs its own smaller design).
AZURE_DESIGN: tuple[tuple[str, str, float, int], ...] = (
    ("none", "request", 0.5, 1000),
    ("none", "request", 0.05, 200),
    ("none", "session", 0.5, 200),
    ("truncate", "request", 0.5, 50),
    ("truncate", "request", 0.05, 50),
    ("error_bursts", "request", 0.5, 50),
    ("error_bursts", "request", 0.05, 50),
    ("context_tail", "request", 0.5, 50),
    ("context_tail", "request", 0.05, 50),
    ("context_tail", "session", 0.5, 50),
)


@functools.lru_cache(maxsize=2)
def _trace(data_dir: str | None) -> Any:
    from ._azure_split import load_azure_trace

    return load_azure_trace(data_dir)


def _azure_task(task: tuple[str | None, str, str, float, int, int, int, float, tuple[str, ...], bool]) -> list[tuple[str, int | None, str]]:
    data_dir, effect, routing, share, index, rep, seed, alpha, methods, peers = task
    from ._azure_split import azure_split

    trace = _trace(data_dir)
    rs = int(np.random.SeedSequence([seed, index, rep]).generate_state(1)[0])
    req = azure_split(trace, effect=effect, share=share, routing=routing, seed=rs)
    out: list[tuple[str, int | None, str]] = []
    split = split_gate_method(alpha, req.n_ticks) if "split" in methods else None
    if split is not None:
        r = split(req)
        out.append(("split", r.first_alarm, r.verdict))
    if not peers:
        return out
    agg = tick_aggregates(req)
    if "kayenta" in methods:
        r = KayentaSplit(window=req.n_ticks, interval=10).run(req, agg)
        out.append(("kayenta", r.first_alarm, r.verdict))
    if "fixed_n" in methods:
        r = FixedNTest(alpha=alpha).run(req)
        out.append(("fixed_n", r.first_alarm, r.verdict))
    if "fixed_n_half" in methods:
        r = FixedNTest(alpha=alpha, at=req.n_ticks // 2 - 1).run(req)
        out.append(("fixed_n_half", r.first_alarm, r.verdict))
    return out


def run_azure_eval(
    design: Sequence[tuple[str, str, float, int]],
    *,
    seed: int = 0,
    alpha: float = 0.05,
    methods: Sequence[str] = SPLIT_METHODS,
    peer_runs: int = 200,
    data_dir: Any = None,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Random splits of the Azure trace per design row ``(effect, routing, share, runs)``; the peers (Kayenta,
    fixed-n; the two-sample gate has no A/A history here) run on the first ``peer_runs`` splits of each row.
    Returns ``{"methods": [...], "rows": [...]}`` with rollback rates, CP bounds and median delays."""
    dd = None if data_dir is None else str(data_dir)
    _trace(dd)  # fail early on a missing or malformed trace
    used = tuple(m for m in methods if m != "two_sample")
    tasks = []
    for i, (effect, routing, share, runs) in enumerate(design):
        tasks.extend((dd, effect, routing, share, i, r, seed, alpha, used, r < peer_runs) for r in range(runs))
    res: list[list[tuple[str, int | None, str]]] = []
    for j, rows in enumerate(ordered_map(_azure_task, tasks, jobs)):
        res.append(rows)
        if progress:
            progress(j + 1, len(tasks))
    out_rows = []
    pos = 0
    for effect, routing, share, runs in design:
        per: dict[str, list[tuple[int | None, str]]] = {}
        for rows in res[pos : pos + runs]:
            for m, first, verdict in rows:
                per.setdefault(m, []).append((first, verdict))
        pos += runs
        mdict = {}
        for m, lst in per.items():
            delays = [f + 1 for f, v in lst if v == "rollback" and f is not None]
            mdict[m] = {"rollback": _rate(len(delays), len(lst), effect == "none"), "median_delay_ticks": float(np.median(delays)) if delays else None}
        out_rows.append({"effect": effect, "routing": routing, "share": share, "runs": runs, "methods": mdict})
    present = [m for m in SPLIT_METHODS if any(m in r["methods"] for r in out_rows)]
    return {"methods": present, "rows": out_rows, "peer_runs": peer_runs, "seed": seed}
