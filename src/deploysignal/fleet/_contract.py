"""Contract between the deploy gate and the fleet observer (pydantic models, ``extra='forbid'``).

The gate sends :class:`ClusterEvent` (kind ``deploy`` with its scope) so the observer freezes
per-shard attribution in that scope; the observer returns :class:`FleetObservation` per tick.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Attribution", "ClusterEvent", "FleetObservation", "NodeEvidence"]

EventKind = Literal["deploy", "firmware_push", "driver_update", "maintenance", "other"]
ScopeLevel = Literal["fleet", "zone", "switch", "rack", "nvlink", "host", "shard"]


class ClusterEvent(BaseModel):
    """A cluster event that freezes per-shard attribution in ``scope`` for ``window`` ticks.

    ``start_tick`` is the first frozen tick; the freeze covers ``[start_tick, start_tick + window)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EventKind
    start_tick: int = Field(ge=0)
    window: int = Field(ge=1, le=1_000_000)
    scope_level: ScopeLevel = "fleet"
    scope: tuple[str, ...] = ()
    source: str = ""
    note: str = ""

    @model_validator(mode="after")
    def _scope_given(self) -> ClusterEvent:
        if self.scope_level != "fleet" and not self.scope:
            raise ValueError(f"scope_level {self.scope_level!r} needs at least one node name in 'scope'")
        return self

    def active(self, tick: int) -> bool:
        return self.start_tick <= tick < self.start_tick + self.window


class NodeEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: str
    node: str
    log_e: float
    members: int
    flagged: int


class Attribution(BaseModel):
    """Common-mode attribution of flagged shards: ``fleet``, a topology node, or single shards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["fleet_event", "node_fault", "shard_fault"]
    level: str
    node: str
    shards: tuple[str, ...]
    log_e: float


class FleetObservation(BaseModel):
    """What the fleet observer reports for one tick."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick: int
    q: float
    flagged: tuple[str, ...]
    newly_flagged: tuple[str, ...]
    frozen: tuple[str, ...] = ()
    fleet_log_e: float
    fleet_fired: bool
    attributions: tuple[Attribution, ...] = ()
    top_nodes: tuple[NodeEvidence, ...] = ()
    active_events: tuple[str, ...] = ()
