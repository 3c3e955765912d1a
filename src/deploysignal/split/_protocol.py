"""The family protocol: what a gate asks of every evidence family, with no ``isinstance`` branches.

A family advances over a run of ticks (:meth:`Family.step`, one tick or many: the same code), answers
with per-tick flags (:class:`FamilyStep`), reports its current evidence as one record
(:meth:`Family.evidence`) and says in words what it found (:meth:`Family.explain`). Its ``role`` tells
the gate what firing means: ``rollback`` (its alpha share is spent rejecting "no harm") or ``void``
(a check of the design: when it fires the guarantee no longer holds and the gate may not proceed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ._data import SplitData

__all__ = ["Family", "FamilyEvidence", "FamilyStep", "LayoutWatch", "StateSlot"]


@dataclass(frozen=True)
class FamilyStep:
    """Per-tick answers of a family over a run of ``T`` ticks (bool arrays of length ``T``).

    ``fired``: the e-value crossed the threshold at that tick; ``proceed_ok``: the family allows an
    early proceed at that tick; ``measured``: it had data in both arms; ``suggestive``: its e-value at
    that tick is at or above the suggestive level.
    """

    fired: np.ndarray
    proceed_ok: np.ndarray
    measured: np.ndarray
    suggestive: np.ndarray


@dataclass(frozen=True)
class FamilyEvidence:
    """A family's evidence after the last tick: one audit record's worth. ``peak_log_evidence``: the
    running maximum of ``log_evidence`` once it reached the suggestive level (``-inf`` before)."""

    family: str
    role: Literal["rollback", "void"]
    log_evidence: float
    peak_log_evidence: float
    threshold: float
    alpha: float
    fired: bool
    reason: str
    effect: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """The audit record fields (natural logs; non-finite numbers as ``None``)."""

        def num(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {"family": self.family, "role": self.role, "log_evidence": num(self.log_evidence),
                "peak_log_evidence": num(self.peak_log_evidence), "threshold": num(self.threshold), "alpha": self.alpha,
                "fire": self.fired, "reason": self.reason, "effect": self.effect}


class LayoutWatch:
    """Mixin: setting one of the attributes named in ``_LAYOUT`` calls the watcher registered with
    :meth:`watch_layout` (a gate's compiled step reads them once and must read them again).

    Before the family's state or layout changes (``step``, ``load_state``, a layout attribute set) it
    calls the callback registered with :meth:`watch_changes` (:meth:`_changing`): a gate builds the
    evidence of a decision it still holds then, so that a decision never shows a later state."""

    _LAYOUT: frozenset[str] = frozenset()

    def watch_layout(self, watcher: Any) -> None:
        object.__setattr__(self, "_layout_watcher", watcher)

    def watch_changes(self, before: Any) -> None:
        object.__setattr__(self, "_change_watcher", before)

    def _changing(self) -> None:
        before = self.__dict__.get("_change_watcher")
        if before is not None:
            before()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._LAYOUT:
            self._changing()
        object.__setattr__(self, name, value)
        if name in self._LAYOUT:
            watcher = self.__dict__.get("_layout_watcher")
            if watcher is not None:
                watcher()


class StateSlot:
    """An attribute stored in one element of a family's state array ``array`` (so that the array can be a
    view into a gate's contiguous state): an ``int`` (``kind="int"``), an ``int`` or ``None`` stored as
    ``-1`` (``kind="tick"``) or a ``float`` (``kind="float"``)."""

    def __init__(self, array: str, index: int, kind: Literal["int", "tick", "float"] = "int") -> None:
        self.array, self.index, self.kind = array, index, kind

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        v = getattr(obj, self.array)[self.index]
        if self.kind == "float":
            return float(v)
        return None if self.kind == "tick" and v < 0 else int(v)

    def __set__(self, obj: Any, value: Any) -> None:
        getattr(obj, self.array)[self.index] = -1 if value is None else value


@runtime_checkable
class Family(Protocol):
    """What a gate needs from an evidence family."""

    name: str
    role: Literal["rollback", "void"]

    def step(self, data: SplitData) -> FamilyStep:
        """Advance over every tick of ``data``; per-tick flags."""

    def evidence(self) -> FamilyEvidence:
        """Current evidence (after the last tick stepped)."""

    def explain(self) -> str:
        """One line for people: what the family found, with its effect size."""

    def state(self) -> dict[str, Any]:
        """JSON-able state; :meth:`load_state` of a fresh family restores it exactly."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
