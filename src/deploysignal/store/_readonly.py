"""Read-only opens of a store, for the commands that only read it (``ui``, ``report``, ``audit verify --store``).

:func:`~deploysignal.store.open_store` runs the schema's ``CREATE TABLE IF NOT EXISTS`` statements on
open and puts a SQLite file in WAL mode: writes, on a store that a viewer has no business changing (and
may only have read access to). :func:`open_read_only` opens it without either:

- **SQLite**: the URI ``file:<path>?mode=ro`` with ``PRAGMA query_only``, no ``journal_mode`` or
  ``page_size`` pragma, no schema statement. SQLite cannot write the database file through such a
  connection, so it never checkpoints the WAL into it either. To read a WAL database SQLite needs its
  ``-wal`` and ``-shm`` side files (https://sqlite.org/wal.html, "Read-Only Databases"). They exist
  while a writer (``deploysignal serve``) has the store open; when they are missing (no writer has it
  open) SQLite creates them, which needs write access to the *directory*: the database file's bytes
  are not touched either way. A viewer that may not write the directory can therefore read the store
  only while a writer holds it open (or from a copy in a directory it may write): otherwise the open
  fails with :class:`~deploysignal.ConfigError` saying exactly that (:func:`wal_reader_blocked`).
  ``immutable=1`` would open it without them but is not used: it is wrong whenever a writer may start
  while the viewer reads.
- **PostgreSQL**: every connection runs ``SET default_transaction_read_only = on`` before its first
  use, so each transaction (explicit, or the implicit one of an autocommit statement) is read-only
  and the server refuses a write; no schema statement, no advisory lock.

A table that the store lacks (a store written by an older version, before the table was added)
reads as empty, as the read-write open would have created it: each connection creates the missing
tables of the schema as *temporary* tables (SQLite's ``temp`` database, PostgreSQL's ``pg_temp``
schema: private to the connection, dropped when it closes) before it turns read-only. A table the
store has is never shadowed.

Either way a write through the store (any method that opens a write transaction) raises
:class:`ReadOnlyStore` naming the store before it reaches the database; anything that writes
outside a write transaction is refused by the database itself.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._exceptions import ConfigError, DeploySignalError
from ._sql import _SCHEMA, PostgresStore, SQLiteStore, SQLStore, parse_store_url

__all__ = ["ReadOnlyPostgresStore", "ReadOnlySQLiteStore", "ReadOnlyStore", "open_read_only", "wal_reader_blocked"]


class ReadOnlyStore(DeploySignalError):
    """A write was asked of a store opened read-only."""


def wal_reader_blocked(path: str | Path) -> str | None:
    """Why SQLite cannot open the WAL-mode database at ``path`` read-only, or None if it can (or it is not
    in WAL mode): its ``-wal`` or ``-shm`` file is missing (no writer holds it open) and this process may
    not create them in its directory."""
    db = Path(path)
    try:
        with db.open("rb") as f:
            header = f.read(20)
    except OSError:
        return None  # the open reports the file itself
    if len(header) < 20 or not header.startswith(b"SQLite format 3\x00") or header[18:20] != b"\x02\x02":
        return None  # not WAL mode: a rollback-journal database needs no side file to be read
    side = [Path(f"{db}-wal"), Path(f"{db}-shm")]
    if all(p.exists() for p in side) or os.access(db.absolute().parent, os.W_OK | os.X_OK):
        return None
    return (f"{str(db)!r} is an SQLite store in WAL mode: a read-only reader needs its -wal and -shm files, which exist "
            f"only while a writer (deploysignal serve) has the store open, or the directory {str(db.absolute().parent)!r} "
            "writable so that SQLite can create them; neither holds. Open it while the service runs, give this user write "
            "access to the directory, or copy the store (with any -wal file) to a directory it may write")


_HEAD = "CREATE TABLE IF NOT EXISTS "


def _table_of(stmt: str) -> str | None:
    """The table a schema statement creates (None: not a ``CREATE TABLE``)."""
    return stmt[len(_HEAD):].split(" ", 1)[0].split("(", 1)[0] if stmt.startswith(_HEAD) else None


def _schema_tables() -> list[str]:
    """The tables of the store's schema, in creation order."""
    return [t for t in map(_table_of, _SCHEMA) if t is not None]


def _missing_as_temp(present: set[str]) -> list[str]:
    """The schema's ``CREATE TABLE`` statements for the tables not in ``present``, as temporary tables."""
    return ["CREATE TEMP TABLE IF NOT EXISTS " + stmt[len(_HEAD):] for stmt in _SCHEMA if (t := _table_of(stmt)) is not None and t not in present]


class _Refuse:
    """Mixin: a write transaction raises :class:`ReadOnlyStore` instead of starting."""

    def _where(self) -> str:
        raise NotImplementedError

    def _tx(self, conn: Any, write: bool = False, bulk: bool = False) -> AbstractContextManager[None]:
        if write:
            raise ReadOnlyStore(f"the store {self._where()} is open read-only (as `deploysignal ui`, `report` and `audit verify` open it): writes are refused")
        return super()._tx(conn)  # type: ignore[misc]


class ReadOnlySQLiteStore(_Refuse, SQLiteStore):
    """A SQLite store opened with ``mode=ro`` and ``query_only`` (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        SQLStore.__init__(self)  # not SQLiteStore.__init__: that creates the schema
        self.path = str(path)
        if (why := wal_reader_blocked(self.path)) is not None:
            raise ConfigError(why)
        self.synchronous = "FULL"  # never used: nothing is committed through this store
        self.conn  # noqa: B018 - open now: an unreadable file fails here, not at the first request

    def _where(self) -> str:
        return repr(self.path)

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{quote(str(Path(self.path).absolute()))}?mode=ro"
        c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self.LOCK_TIMEOUT, check_same_thread=False)
        c.execute(f"PRAGMA busy_timeout={int(self.LOCK_TIMEOUT * 1000)}")
        present = {r[0] for r in c.execute("SELECT name FROM main.sqlite_master WHERE type='table'")}
        for stmt in _missing_as_temp(present):
            c.execute(stmt)
        c.execute("PRAGMA query_only=ON")
        return c


class ReadOnlyPostgresStore(_Refuse, PostgresStore):
    """A PostgreSQL store whose sessions default to read-only transactions (see the module docstring)."""

    def __init__(self, url: str) -> None:
        SQLStore.__init__(self)  # not PostgresStore.__init__: that creates the schema under an advisory lock
        self.url = url
        self.conn  # noqa: B018 - connect now: an unreachable server fails here

    def _where(self) -> str:
        from ._open import _redacted

        return _redacted(self.url)

    def _connect(self) -> Any:
        c = super()._connect()
        # a table is present when its name resolves as the store's queries resolve it (the search_path, as
        # the writable store's unqualified statements): not only in current_schema(); all are resolved
        # before a temporary table exists (pg_temp is searched first)
        names = _schema_tables()
        found = c.execute("SELECT " + ", ".join("to_regclass(%s) IS NOT NULL" for _ in names), names).fetchone()
        present = {n for n, ok in zip(names, found) if ok}
        for stmt in _missing_as_temp(present):
            c.execute(stmt)
        c.execute("SET default_transaction_read_only = on")
        return c


def open_read_only(url: str) -> SQLStore:
    """Open the store at ``url`` (as :func:`~deploysignal.store.open_store` takes it) read-only.

    Raises
    ------
    ConfigError
        An unsupported URL (as :func:`~deploysignal.store.open_store`).
    sqlite3.OperationalError, psycopg.Error
        The file or server cannot be opened (:func:`~deploysignal.store.open_existing` turns these into
        a :class:`~deploysignal.ConfigError` naming the store).
    """
    kind, target, _opts = parse_store_url(url)  # synchronous= concerns commits: none here
    if kind == "postgresql":
        return ReadOnlyPostgresStore(target)
    return ReadOnlySQLiteStore(target)
