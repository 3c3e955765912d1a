"""Fleet observations kept by the service: their spec, every tick with the observation it gave, events.

Three additive tables (``CREATE TABLE IF NOT EXISTS`` at start-up, like the integration tables; no
existing table or column changes)::

    fleet_observations (id, spec, created)                       topology, signals, observer settings
    fleet_ticks (fleet_id, tick, payload, observation)           values of one tick + the FleetObservation
    fleet_events (fleet_id, seq, at_tick, body)                  cluster events (deploy freezes), in order

The observer is deterministic, so its state is the replay of ``fleet_ticks`` with the events registered
before the tick they were added at (:meth:`FleetTables.history`); the stored observations are the
fleet's record (``GET /v1/fleets/{id}/observations``, readable by ``deploysignal ui --fleet``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._sql import SQLStore

__all__ = ["FLEET_SCHEMA", "FleetTables"]

FLEET_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS fleet_observations (id TEXT PRIMARY KEY, spec TEXT NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fleet_ticks (fleet_id TEXT NOT NULL, tick BIGINT NOT NULL, payload TEXT NOT NULL,"
    " observation TEXT NOT NULL, PRIMARY KEY (fleet_id, tick))",
    "CREATE TABLE IF NOT EXISTS fleet_events (fleet_id TEXT NOT NULL, seq BIGINT NOT NULL, at_tick BIGINT NOT NULL,"
    " body TEXT NOT NULL, PRIMARY KEY (fleet_id, seq))",
]


class FleetTables:
    """Fleet observations in the tables of one :class:`~deploysignal.store.SQLStore`."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    def create(self, fleet_id: str, spec: dict[str, Any], created: str) -> None:
        """Store a new fleet observation; :class:`~deploysignal.store.Conflict` if the id is taken."""
        from ._sql import Conflict

        s, c = self.store, self.store.conn
        with s._tx(c, write=True):
            if s._q(c, "SELECT 1 FROM fleet_observations WHERE id=?", (fleet_id,)).fetchone() is not None:
                raise Conflict(f"fleet observation {fleet_id!r} exists")
            s._q(c, "INSERT INTO fleet_observations (id, spec, created) VALUES (?, ?, ?)", (fleet_id, json.dumps(spec, sort_keys=True), created))

    def get(self, fleet_id: str) -> tuple[dict[str, Any], str, int]:
        """``(spec, created, number of ticks)``; :class:`~deploysignal.store.NotFound` if there is none."""
        from ._sql import NotFound

        s, c = self.store, self.store.conn
        with s._tx(c):
            r = s._q(c, "SELECT spec, created FROM fleet_observations WHERE id=?", (fleet_id,)).fetchone()
            n = s._q(c, "SELECT COUNT(*) FROM fleet_ticks WHERE fleet_id=?", (fleet_id,)).fetchone()
        if r is None:
            raise NotFound(f"no fleet observation {fleet_id!r}")
        return json.loads(r[0]), r[1], int(n[0])

    def list(self) -> list[tuple[str, str]]:
        """``(id, created)`` of every fleet observation, by id."""
        s, c = self.store, self.store.conn
        with s._tx(c):
            return [(r[0], r[1]) for r in s._q(c, "SELECT id, created FROM fleet_observations ORDER BY id").fetchall()]

    def append(self, fleet_id: str, first_tick: int, rows: list[tuple[str, str]]) -> None:
        """Append ticks ``first_tick, first_tick + 1, ...`` as ``(payload, observation)`` JSON, all or none.

        :class:`~deploysignal.store.Conflict` when the fleet does not have exactly ``first_tick`` ticks (another
        writer got there first: nothing is written)."""
        from ._sql import Conflict

        s, c = self.store, self.store.conn
        with s._tx(c, write=True):
            n = int(s._q(c, "SELECT COUNT(*) FROM fleet_ticks WHERE fleet_id=?", (fleet_id,)).fetchone()[0])
            if n != first_tick:
                raise Conflict(f"fleet observation {fleet_id!r} has {n} ticks, the batch starts at tick {first_tick}: retry")
            for k, (payload, obs) in enumerate(rows):
                s._q(c, "INSERT INTO fleet_ticks (fleet_id, tick, payload, observation) VALUES (?, ?, ?, ?)", (fleet_id, first_tick + k, payload, obs))

    def add_event(self, fleet_id: str, at_tick: int, body: dict[str, Any]) -> int:
        """Record a cluster event registered before tick ``at_tick``; returns its sequence number."""
        s, c = self.store, self.store.conn
        with s._tx(c, write=True):
            seq = int(s._q(c, "SELECT COUNT(*) FROM fleet_events WHERE fleet_id=?", (fleet_id,)).fetchone()[0])
            s._q(c, "INSERT INTO fleet_events (fleet_id, seq, at_tick, body) VALUES (?, ?, ?, ?)", (fleet_id, seq, at_tick, json.dumps(body, sort_keys=True)))
        return seq

    def history(self, fleet_id: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
        """Every tick's payload in order, and every event with the tick it was registered before."""
        s, c = self.store, self.store.conn
        with s._tx(c):
            ticks = [r[0] for r in s._q(c, "SELECT payload FROM fleet_ticks WHERE fleet_id=? ORDER BY tick", (fleet_id,)).fetchall()]
            events = [(int(r[0]), json.loads(r[1])) for r in s._q(c, "SELECT at_tick, body FROM fleet_events WHERE fleet_id=? ORDER BY seq", (fleet_id,)).fetchall()]
        return ticks, events

    def observations(self, fleet_id: str, start: int = 0, limit: int | None = None) -> list[str]:
        """The stored observations (JSON) from tick ``start``."""
        s, c = self.store, self.store.conn
        sql = "SELECT observation FROM fleet_ticks WHERE fleet_id=? AND tick >= ? ORDER BY tick"
        args: tuple[Any, ...] = (fleet_id, start)
        if limit is not None:
            sql += " LIMIT ?"
            args += (limit,)
        with s._tx(c):
            return [r[0] for r in s._q(c, sql, args).fetchall()]
