"""The split gate: metric families and the sample-ratio check under one alpha budget, and the verdict."""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .._exceptions import InputError
from ._data import SplitData
from ._metric import SplitMetric
from ._protocol import Family, FamilyEvidence, FamilyStep
from ._spec import MetricSpec, SplitSettings
from ._srm import SampleRatio
from ._step import FIRED_ROLLBACK, FIRED_VOID, PROCEED_ALL, TickStep

__all__ = ["SplitBatch", "SplitDecision", "SplitGate"]

VERDICTS = ("pending", "extend", "proceed", "rollback")


class _LazyEvidence:
    """:attr:`SplitDecision.evidence`: the stored tuple, or, for a decision made with a source (the live
    path), the source's answer on first read. A source that another read already replaced is not
    stored again (the first stored tuple stays)."""

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return ()  # the field's default
        d = obj.__dict__
        src = d.get("_source")
        if src is not None:
            ev = src()
            if d.get("_source") is src:
                d["_evidence"] = ev
                d.pop("_source", None)
        return d["_evidence"]

    def __set__(self, obj: Any, value: Any) -> None:  # dataclass __init__ only (frozen: setattr raises before this)
        obj.__dict__["_evidence"] = value
        obj.__dict__.pop("_source", None)


@dataclass(frozen=True)
class SplitDecision:
    """The gate after one tick. ``final``: the verdict can no longer change; ``fired``: metrics whose
    rollback e-process crossed; ``reason``: why (rollback, extend) in words; ``evidence``: every
    family's record at this tick (single-tick path only).

    A frozen dataclass (equality and hash ignore ``evidence``). On the live path (:meth:`SplitGate.update`)
    ``evidence`` is built on first read (the gate computes the numbers of a tick but formats its records
    only when a caller reads them): a decision still referenced when its gate's state is about to change
    (the next ``update``/``run_batch``, a family stepped, restored or given a new layout, a copy or
    pickle of the gate) gets its evidence built then, so it is always that of its own tick. Copying,
    pickling and :func:`dataclasses.asdict` build it first, so copies hold plain values. Not
    thread-safe: read a decision in the thread that drives its gate (or under the same lock).
    """

    tick: int
    timestamp: float
    verdict: str
    final: bool
    decided_at_tick: int | None
    fired: tuple[str, ...]
    reason: str
    evidence: tuple[FamilyEvidence, ...] = field(default=(), compare=False)

    @classmethod
    def _lazy(cls, source: Callable[[], tuple[FamilyEvidence, ...]], *values: Any) -> SplitDecision:
        """A decision whose ``evidence`` is ``source()``, called on first read."""
        d = cls(*values)
        d.__dict__["_source"] = source
        return d

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))

    def records(self) -> list[dict[str, Any]]:
        """Audit records of this tick: one per family, then the gate's."""
        ts = float(self.timestamp)
        recs = [dict(ev.record(), tick=self.tick, timestamp=ts) for ev in self.evidence]
        recs.append({"family": "gate", "tick": self.tick, "timestamp": ts, "verdict": self.verdict, "final": self.final,
                     "decided_at_tick": self.decided_at_tick, "fired": list(self.fired), "reason": self.reason})
        return recs


SplitDecision.evidence = _LazyEvidence()  # type: ignore[assignment,misc]  # after @dataclass: its __init__ default stays ()


@dataclass(frozen=True)
class SplitBatch:
    """The batch path's per-tick outcome: verdict codes (index into ``VERDICTS``), final flags, the
    decided tick (or -1) and, per family (``families`` order), its first firing tick (1-based, -1 never)."""

    verdict: np.ndarray
    final: np.ndarray
    decided_at: np.ndarray
    first_fire: np.ndarray
    families: tuple[str, ...]

    @property
    def verdicts(self) -> list[str]:
        return [VERDICTS[v] for v in self.verdict]


class SplitGate:
    """Proceed, extend or roll back a canary from randomised-split telemetry.

    Rollback when any metric's e-process crosses ``1 / alpha_m`` with ``alpha_m = alpha * share_m``,
    at any tick of the data given, also after a final proceed or extend (the e-processes are valid over
    all time; the reason then says when the planned window had ended and how)
    (Bonferroni over metrics: ``P(false rollback) <= alpha`` under the split null, see
    :class:`SplitMetric`). Early proceed (``early_proceed``) once every metric's non-inferiority test
    passes (every edge-event's ratio shown within tolerance) after ``min_proceed_fraction`` of the
    window. At each window end: proceed when no metric's running e-value reached the suggestive level
    and every metric had units in both arms in at least ``min_valid_fraction`` of the ticks; else
    extend, final after ``max_extensions``. A sample-ratio mismatch (``canary_share`` configured)
    forbids proceed: the verdict is then rollback (if a metric fires) or extend.

    .. math::

        \\text{rollback at } t \\iff \\max_m E_{m,t}\\,\\alpha_m \\ge 1, \\qquad
        P_0\\bigl(\\exists t: \\text{rollback at } t\\bigr) \\le \\sum_m \\alpha_m = \\alpha

    under the split null (:class:`SplitMetric`), by Ville's inequality per metric and a union bound.

    Notes
    -----
    Not thread-safe: one gate per thread (as River's estimators), or every call on it and every read of
    its decisions under one lock (the service holds its per-analysis lock around ``update`` and the
    records' read). :func:`copy.copy`, :func:`copy.deepcopy` and :mod:`pickle` give an independent gate
    that continues exactly as the original would (the families' state arrays are views of the compiled
    step's arrays; the copy joins them again). The gate reads a run's data through its packed form,
    packed once per run (:func:`~deploysignal.split._step.packed`): a :class:`SplitData` (or a cut of
    it, :meth:`SplitData.ticks`) must not be edited after its first use.

    References
    ----------
    Ville, J. (1939). Etude critique de la notion de collectif.

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.split import BlockBuilder, SplitData
    >>> gate = SplitGate([MetricSpec("errors")], SplitSettings(window=20, max_extensions=0))
    >>> bb = BlockBuilder(1)
    >>> for t in range(20):
    ...     bb.add_block(50, 100, [1], [2]); bb.end_tick()
    >>> d = gate.run(SplitData(np.arange(20.0), np.full(20, 50), np.full(20, 100), {"errors": bb.build()}))[-1]
    >>> d.verdict, d.final, d.decided_at_tick
    ('proceed', True, 20)
    """

    def __init__(self, specs: list[MetricSpec], settings: SplitSettings | None = None) -> None:
        if not specs:
            raise InputError("a split gate needs at least one metric")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise InputError(f"duplicate metric names: {sorted({n for n in names if names.count(n) > 1})}")
        self.specs = list(specs)
        self.settings = settings or SplitSettings()
        st = self.settings
        total = sum(s.alpha_share for s in specs)
        self.families: list[Family] = [
            SplitMetric(s, alpha=st.alpha * s.alpha_share / total, proceed_alpha=st.proceed_alpha, early_proceed=st.early_proceed,
                        suggestive_fraction=st.suggestive_fraction, ratio_label=st.ratio_label)
            for s in specs
        ]
        srm = SampleRatio(st.canary_share, alpha=st.srm_alpha) if st.canary_share is not None else None
        if srm is not None:
            self.families.append(srm)
        self._step = TickStep(self.families[:len(specs)], srm)  # type: ignore[arg-type]
        self._last: weakref.ref[SplitDecision] | None = None
        self._watch()
        self._reset()

    def _watch(self) -> None:
        for f in self.families:
            f.watch_changes(self._settle)  # type: ignore[attr-defined]  # a family about to change: the held decision's evidence first

    # ------------------------------------------------------------------ copy and pickle
    def __getstate__(self) -> dict[str, Any]:
        """The gate's attributes without the held decision (its evidence is built first)."""
        self._settle()
        d = self.__dict__.copy()
        d["_last"] = None
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        """A copy or an unpickled gate: its families' state arrays and ``_measured`` were copied as
        independent arrays; make them views of the copied compiled step's arrays again."""
        self.__dict__.update(d)
        self._step.bind()
        self._measured = self._step.measured
        self._watch()

    def __copy__(self) -> SplitGate:
        """A deep copy: a gate's families and compiled step share their state arrays, so a copy that
        shared them with the original would move both."""
        return copy.deepcopy(self)

    def _reset(self) -> None:
        self._tick = 0
        self._verdict = "pending"
        self._final = False
        self._decided: int | None = None
        self._fired: tuple[str, ...] = ()
        self._reason = ""
        self._extensions = 0
        self._void = ""
        self._measured = self._step.measured  # per family: ticks with units in both arms (a view the compiled step counts in)

    # ------------------------------------------------------------------ paths
    def update(self, data: SplitData, at: int | None = None) -> SplitDecision:
        """One tick: ``data`` itself (``data.n_ticks == 1``) or, with ``at``, tick ``at`` of ``data``
        (the same as ``update(data.ticks(at, at + 1))`` without building the cut). One compiled call
        advances every family (:class:`~deploysignal.split._step.TickStep`); the verdict logic runs in
        Python only at a tick where it can change more than the counters (a fire, a possible early
        proceed, a window end). The decision's evidence records are built when first read
        (:class:`SplitDecision`)."""
        if at is None and data.n_ticks != 1:
            raise ValueError(f"update takes one tick, got {data.n_ticks}")
        if at is not None and not 0 <= at < data.n_ticks:
            raise ValueError(f"tick {at} of a run of {data.n_ticks}")
        self._settle()
        out, bits = self._step.run(data, at)
        st = self.settings
        tick = self._tick + 1
        if (bits & (FIRED_ROLLBACK | FIRED_VOID) or tick % st.window == 0
                or (bits & PROCEED_ALL and st.early_proceed and tick >= st.min_proceed_fraction * st.window)):
            self._decide(TickStep.steps(out), 0)
        else:  # what _decide does at a quiet tick
            self._tick = tick
            if not self._final and self._verdict == "pending" and self._void:
                self._reason = self._void
        d = SplitDecision._lazy(self._evidence_now, self._tick, float(data.timestamps[at or 0]), self._verdict, self._final, self._decided,
                                self._fired, self._reason)
        self._last = weakref.ref(d)
        return d

    def _evidence_now(self) -> tuple[FamilyEvidence, ...]:
        return tuple(f.evidence() for f in self.families)

    def _settle(self) -> None:
        """Before the state moves on: the last decision, if still referenced, gets its evidence now."""
        d = None if self._last is None else self._last()
        self._last = None  # first: a family that moves while the evidence is built does not come back here
        if d is not None:
            d.evidence  # noqa: B018 - built on first use

    def run(self, data: SplitData) -> list[SplitDecision]:
        """Every tick of ``data`` through :meth:`update` (with records)."""
        return [self.update(data, t) for t in range(data.n_ticks)]

    def run_batch(self, data: SplitData) -> SplitBatch:
        """All ticks at once: each family steps over the whole run, then the verdict tick by tick.
        The same compiled call as :meth:`update` over all ticks (the same bits), without records."""
        self._settle()
        base = self._measured.copy()
        out = self._step.run(data)[0]
        steps = TickStep.steps(out)
        seen = np.cumsum(out[:, 2, :], axis=1)  # ticks measured so far in this run, per family
        T = data.n_ticks
        verdict, final, decided = np.zeros(T, dtype=np.int64), np.zeros(T, dtype=bool), np.full(T, -1, dtype=np.int64)
        t = 0
        for e in [*np.flatnonzero(self._events(steps, T)).tolist(), T]:
            # ticks t .. e-1 are quiet (no fire, no possible proceed, no window end): only the counters move
            # (the data counters moved in the compiled step)
            self._tick += e - t
            verdict[t:e], final[t:e], decided[t:e] = VERDICTS.index(self._verdict), self._final, -1 if self._decided is None else self._decided
            if e == T or (self._final and self._verdict == "rollback"):
                if e < T:  # nothing changes any more but the data counters
                    self._tick += T - e
                    verdict[e:], final[e:], decided[e:] = VERDICTS.index(self._verdict), True, -1 if self._decided is None else self._decided
                break
            self._measured[:] = base + seen[:, e]  # the counts _decide sees at tick e (the step counted the whole run)
            self._decide(steps, e)
            self._measured[:] = base + seen[:, -1]
            verdict[e], final[e], decided[e] = VERDICTS.index(self._verdict), self._final, -1 if self._decided is None else self._decided
            t = e + 1
        first = np.array([int(np.argmax(s.fired)) + 1 + self._tick - T if s.fired.any() else -1 for s in steps], dtype=np.int64)
        return SplitBatch(verdict, final, decided, first, tuple(f.name for f in self.families))

    def _events(self, steps: list[FamilyStep], T: int) -> np.ndarray:
        """Ticks where :meth:`_decide` can change more than the data counters: a family fires, an early
        proceed is possible, a window ends."""
        st = self.settings
        ticks = self._tick + 1 + np.arange(T)
        ev = ticks % st.window == 0
        for s in steps:
            ev |= s.fired & ~np.r_[False, s.fired[:-1]]  # the first tick of each run of fires
        if st.early_proceed:
            ev |= np.logical_and.reduce([s.proceed_ok for s in steps]) & (ticks >= st.min_proceed_fraction * st.window)
        return ev

    # ------------------------------------------------------------------ verdict
    def _decide(self, steps: list[FamilyStep], t: int) -> None:
        st = self.settings
        self._tick += 1
        tick = self._tick
        fired = tuple(f.name for f, s in zip(self.families, steps) if f.role == "rollback" and s.fired[t])
        if self._final:
            # the rollback e-processes are anytime-valid over all time: a crossing after a final proceed or
            # extend is valid evidence of harm and turns the verdict into a rollback (never the reverse)
            if fired and self._verdict != "rollback":
                ended = f"the planned window had ended with {self._verdict} at tick {self._decided}"
                self._set("rollback", True, tick, fired, "harm: " + ", ".join(fired) + f" ({ended})")
            return
        for f, s in zip(self.families, steps):
            if f.role == "void" and s.fired[t] and not self._void:
                self._void = f"{f.name} fired at tick {tick}: the split is not the configured one, the guarantee does not hold; never proceed"
        if fired:
            self._set("rollback", True, tick, fired, "harm: " + ", ".join(fired))
            return
        metrics = [(f, s) for f, s in zip(self.families, steps) if f.role == "rollback"]
        if (st.early_proceed and not self._void and tick >= st.min_proceed_fraction * st.window
                and all(s.proceed_ok[t] for _, s in metrics) and all(s.proceed_ok[t] for f, s in zip(self.families, steps) if f.role == "void")):
            self._set("proceed", True, tick, (), "every metric's harm shown below its tolerance")
            return
        if tick % st.window == 0:
            why = []
            if self._void:
                why.append(self._void)
            sugg = [f.name for f, s in metrics if s.suggestive[t]]
            if sugg:
                why.append("suggestive evidence of harm: " + ", ".join(sugg))
            short = [f.name for i, (f, _) in enumerate(zip(self.families, steps)) if f.role == "rollback" and self._measured[i] < st.min_valid_fraction * tick]
            if short:
                why.append(f"too little data (units in both arms in < {st.min_valid_fraction:g} of ticks): " + ", ".join(short))
            if not why:
                self._set("proceed", True, tick, (), "window complete, no evidence of harm")
            elif self._extensions < st.max_extensions:
                self._extensions += 1
                self._set("extend", False, None, (), "; ".join(why))
            else:
                self._set("extend", True, tick, (), "; ".join(why))
            return
        if self._verdict == "pending" and self._void:
            self._reason = self._void

    def _set(self, verdict: str, final: bool, decided: int | None, fired: tuple[str, ...], reason: str) -> None:
        self._verdict, self._final, self._decided, self._fired, self._reason = verdict, final, decided, fired, reason

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """JSON-able state; :meth:`from_state` with the same specs and settings continues exactly."""
        return {"tick": self._tick, "verdict": self._verdict, "final": self._final, "decided": self._decided, "fired": list(self._fired),
                "reason": self._reason, "extensions": self._extensions, "void": self._void, "measured": self._measured.tolist(),
                "families": [f.state() for f in self.families]}

    @classmethod
    def from_state(cls, specs: list[MetricSpec], settings: SplitSettings, state: dict[str, Any]) -> SplitGate:
        g = cls(specs, settings)
        if len(state["families"]) != len(g.families):
            raise ValueError(f"state holds {len(state['families'])} families, the gate has {len(g.families)}")
        g._tick, g._verdict, g._final, g._decided = int(state["tick"]), state["verdict"], bool(state["final"]), state["decided"]
        g._fired, g._reason, g._extensions, g._void = tuple(state["fired"]), state["reason"], int(state["extensions"]), state["void"]
        measured = np.array(state["measured"], dtype=np.int64)
        if measured.shape != g._measured.shape:
            raise ValueError(f"state's measured holds {measured.size} counts, the gate has {len(g.families)} families")
        g._measured[:] = measured
        for f, s in zip(g.families, state["families"]):
            f.load_state(s)
        return g

    def summary(self) -> dict[str, Any]:
        """The verdict, the decided tick, fired metrics and every metric's effect with its confidence sequence."""
        effects = {}
        for f in self.families:
            ev = f.evidence()
            effects[f.name] = {"effect": ev.effect, "log_evidence": _num(ev.log_evidence), "peak_log_evidence": _num(ev.peak_log_evidence),
                               "threshold": ev.threshold, "alpha": ev.alpha, "fired": ev.fired, "role": ev.role, "explain": ev.reason}
        verdict = "extend" if self._verdict == "pending" else self._verdict
        decided = self._decided if self._verdict in ("rollback", "proceed") or self._final else None
        return {"mode": "split", "verdict": verdict, "decided_at_tick": decided, "final": self._final, "fired": list(self._fired),
                "fired_families": list(self._fired), "ticks": self._tick, "reason": self._reason, "effects": effects}


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
