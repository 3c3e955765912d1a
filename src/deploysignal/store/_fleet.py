"""Fleet observations kept by the service: their spec, every tick with the observation it gave, events.

Three additive tables (``CREATE TABLE IF NOT EXISTS`` at start-up, like the integration tables; no
existing table or column changes)::

    fleet_observations (id, spec, created)                       topology, signals, observer settings
    fleet_ticks (fleet_id, tick, payload, observation)           values of one tick + the FleetObservation
    fleet_events (fleet_id, seq, at_tick, body)                  cluster events (deploy freezes), in order

The observer is deterministic, so its state is the replay of ``fleet_ticks`` with the events registered
before the tick they were added at (:meth:`FleetTables.history`); the stored observations are the
fleet's record (``GET /v1/fleets/{id}/observations``, readable by ``deploysignal ui --fleet``).

``fleet_events`` is append-only: a row's body is ``{"op": "add", "event": ..., "principal": ...}`` (a cluster
event and the token that registered it) or ``{"op": "end", "seq": k, "principal": ...}`` (event ``k`` ends
before tick ``at_tick``); a body without ``op`` is an event registered before principals were recorded.
Writers of several processes serialise on the fleet's row (:meth:`FleetTables.locked`: ``BEGIN
IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL) and catch up with the rows other
processes appended before they write.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ._sql import SQLStore

__all__ = ["FLEET_SCHEMA", "FleetTables", "LockedFleet"]

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

    @contextmanager
    def locked(self, fleet_id: str) -> Iterator[LockedFleet]:
        """One write transaction holding the fleet's lock (commits on normal exit, rolls back on error);
        :class:`~deploysignal.store.NotFound` if there is no such fleet."""
        from ._sql import NotFound

        s, c = self.store, self.store.conn
        with s._tx(c, write=True):
            if s._q(c, "SELECT 1 FROM fleet_observations WHERE id=?" + s._for_update, (fleet_id,)).fetchone() is None:
                raise NotFound(f"no fleet observation {fleet_id!r}")
            yield LockedFleet(s, c, fleet_id)

    def since(self, fleet_id: str, tick: int = 0, seq: int = 0) -> tuple[list[str], list[tuple[int, int, dict[str, Any]]]]:
        """In one read transaction: the payloads of the ticks from ``tick`` on, in order, and the event rows
        ``(seq, at_tick, body)`` from sequence number ``seq`` on (``since(fid)``: the whole history)."""
        s, c = self.store, self.store.conn
        with s._tx(c):
            return _ticks(s, c, fleet_id, tick), _events(s, c, fleet_id, seq)

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


class LockedFleet:
    """A fleet's rows inside the transaction of :meth:`FleetTables.locked` (its lock held)."""

    def __init__(self, store: SQLStore, conn: Any, fleet_id: str) -> None:
        self._s, self._c, self.fleet_id = store, conn, fleet_id
        self.n_ticks = int(store._q(conn, "SELECT COUNT(*) FROM fleet_ticks WHERE fleet_id=?", (fleet_id,)).fetchone()[0])
        self.n_events = int(store._q(conn, "SELECT COUNT(*) FROM fleet_events WHERE fleet_id=?", (fleet_id,)).fetchone()[0])

    def ticks(self, start: int) -> list[str]:
        """Payloads of the ticks from ``start`` on, in order."""
        return _ticks(self._s, self._c, self.fleet_id, start)

    def events(self, start: int) -> list[tuple[int, int, dict[str, Any]]]:
        """``(seq, at_tick, body)`` of the event rows from sequence number ``start`` on."""
        return _events(self._s, self._c, self.fleet_id, start)

    def append(self, first_tick: int, n_events: int, rows: list[tuple[str, str]]) -> None:
        """Append ticks ``first_tick, ...`` computed by an observer that had seen ``n_events`` event rows;
        :class:`~deploysignal.store.Conflict` (nothing written) when the store holds other tick or event counts."""
        from ._sql import Conflict

        if (self.n_ticks, self.n_events) != (first_tick, n_events):
            raise Conflict(f"fleet observation {self.fleet_id!r} has {self.n_ticks} ticks and {self.n_events} event rows; the batch was "
                           f"computed after {first_tick} ticks and {n_events} event rows: retry")
        self._s._many(self._c, "INSERT INTO fleet_ticks (fleet_id, tick, payload, observation) VALUES (?, ?, ?, ?)",
                      [(self.fleet_id, first_tick + k, payload, obs) for k, (payload, obs) in enumerate(rows)])
        self.n_ticks += len(rows)

    def add_event(self, body: dict[str, Any]) -> int:
        """Record an event row before the fleet's next tick; returns its sequence number."""
        seq = self.n_events
        self._s._q(self._c, "INSERT INTO fleet_events (fleet_id, seq, at_tick, body) VALUES (?, ?, ?, ?)",
                   (self.fleet_id, seq, self.n_ticks, json.dumps(body, sort_keys=True)))
        self.n_events += 1
        return seq


def _ticks(s: SQLStore, c: Any, fleet_id: str, start: int) -> list[str]:
    return [r[0] for r in s._q(c, "SELECT payload FROM fleet_ticks WHERE fleet_id=? AND tick>=? ORDER BY tick", (fleet_id, start)).fetchall()]


def _events(s: SQLStore, c: Any, fleet_id: str, start: int) -> list[tuple[int, int, dict[str, Any]]]:
    return [(int(r[0]), int(r[1]), json.loads(r[2])) for r in s._q(
        c, "SELECT seq, at_tick, body FROM fleet_events WHERE fleet_id=? AND seq>=? ORDER BY seq", (fleet_id, start)).fetchall()]
