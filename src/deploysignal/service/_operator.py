"""Operator endpoints: acts on an analysis that change its course by hand, each recorded in its audit chain.

``POST /v1/analyses/{id}/void`` (write token) voids an analysis, e.g. one wedged by a tick stamped in the
future before ``--max-clock-skew`` existed, or fed from a misconfigured source: one chained audit tick
without telemetry, a final verdict that never promotes (``extend``, also in place of a ``proceed``
already given; a rollback already decided stays),
``fail_closed = "voided by operator: <reason>"`` in the gate record of that tick and every later one.
The void is stored in the analysis' tick sequence, so ``replay`` reproduces it byte for byte and
``audit verify`` passes. Start a new analysis for the canary afterwards.

``POST /v1/analyses/{id}/cut`` (write token) cuts an analysis back to where it stood before its tick
``to_tick`` (a wedged clock, a bad batch): the later ticks stay stored, marked superseded by a chained
``cut`` record, and the analysis continues from the ticks kept (:mod:`deploysignal.service._cut`). A
rolled-back or voided analysis, one whose verdict was final without proceeding, and one that had
``max_cuts`` cuts refuse it (409): a cut-back never takes back a rollback, a void or a refused promotion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ._manager import AnalysisManager

__all__ = ["CutRequest", "VoidRequest", "add_operator_routes"]


class VoidRequest(BaseModel):
    """Why the analysis is voided (recorded in the audit chain)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000, pattern=r"\S")


class CutRequest(BaseModel):
    """The first tick to drop (the gate's tick number, as in the audit records) and why (recorded in the audit chain)."""

    model_config = ConfigDict(extra="forbid")
    to_tick: int = Field(ge=0, le=2**62, strict=True)
    reason: str = Field(min_length=1, max_length=1000, pattern=r"\S")


def add_operator_routes(app: FastAPI, manager: AnalysisManager, write: list[Any], notify: Callable[[], None]) -> None:
    """Register the operator endpoints on ``app`` (``write``: the write-token dependency)."""

    @app.post("/v1/analyses/{aid}/void", dependencies=write, tags=["analyses"])
    async def void(aid: str, body: VoidRequest) -> dict[str, Any]:
        """Void the analysis: a chained audit record and a final verdict that never promotes (see the module)."""
        out = await run_in_threadpool(manager.void, aid, body.reason)
        notify()
        return out

    @app.post("/v1/analyses/{aid}/cut", dependencies=write, tags=["analyses"])
    async def cut(aid: str, body: CutRequest) -> dict[str, Any]:
        """Cut the analysis back to before tick ``to_tick``: later ticks kept and marked superseded in a chained
        ``cut`` record, the engine rebuilt from the ticks kept; 409 when refused (a rollback, a void, a final verdict that
        refused promotion, ``max_cuts`` reached; see the module); a retried identical cut answers the first (``duplicate``)."""
        out = await run_in_threadpool(manager.cut, aid, body.to_tick, body.reason)
        notify()
        return out
