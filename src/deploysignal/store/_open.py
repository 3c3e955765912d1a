"""Opening a store that must already exist: a mistyped ``--store`` or a corrupt file is a clear error.

:func:`open_store` creates what it does not find (a new SQLite file, the tables in an empty PostgreSQL
database), which is what a first start wants and what a mistyped path must not get: the service would
start healthy on an empty database and every controller would find no analysis. :func:`open_existing`
refuses, unless ``create`` is given, a SQLite path with no file and a database (SQLite or PostgreSQL)
without the ``analyses`` table; and turns what the database drivers raise on an unreadable file (not a
database, corrupt, encrypted) or an unreachable server into a :class:`~deploysignal.ConfigError` that
names the store, so the command line reports it in one line and exits 2 instead of a traceback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from .._exceptions import ConfigError
from ._readonly import open_read_only, wal_reader_blocked
from ._sql import SQLStore, open_store

__all__ = ["open_existing"]


def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite store URL (or bare path); None for PostgreSQL and in-memory databases."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    path = url[len("sqlite:///"):].partition("?")[0] if url.startswith("sqlite:///") else url
    if "://" in url and not url.startswith("sqlite:///"):
        return None  # open_store reports the unsupported scheme
    return None if path in ("", ":memory:") or path.startswith("file:") else path


def _has_schema_sqlite(path: str) -> bool:
    conn = sqlite3.connect(f"file:{quote(str(Path(path).absolute()))}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='analyses'").fetchone() is not None
    finally:
        conn.close()


def _has_schema_postgres(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return conn.execute("SELECT to_regclass('analyses')").fetchone()[0] is not None


def open_existing(url: str, *, create: bool = False, read_only: bool = False) -> SQLStore:
    """:func:`~deploysignal.store.open_store` for a store that must exist unless ``create``;
    ``read_only`` opens it with :func:`~deploysignal.store.open_read_only` instead (no schema statement,
    no write: what the commands that only read use).

    Raises
    ------
    ConfigError
        No SQLite file at the path, or a database without the deploysignal tables (both only without
        ``create``); a file that is not a readable SQLite database; a PostgreSQL server that cannot be
        reached or refuses the connection.
    """
    if create and read_only:
        raise ConfigError("a store opened read-only cannot be created")
    path = _sqlite_path(url)
    hint = "pass --create to create a new store there" if not create else ""
    try:
        if path is not None:
            if not Path(path).exists():
                if not create:
                    raise ConfigError(f"no SQLite store at {path!r}; {hint}")
            elif not Path(path).is_file():
                raise ConfigError(f"store path {path!r} is not a file")
            elif read_only and (why := wal_reader_blocked(path)) is not None:
                raise ConfigError(why)  # SQLite would say only "attempt to write a readonly database"
            elif not _has_schema_sqlite(path) and not create:
                raise ConfigError(f"{path!r} is an SQLite database without the deploysignal tables; {hint}")
        elif url.startswith(("postgresql://", "postgres://")) and not create and not _has_schema_postgres(url):
            raise ConfigError(f"the PostgreSQL database at {_redacted(url)} has no deploysignal tables; {hint}")
        return open_read_only(url) if read_only else open_store(url)
    except ConfigError:
        raise
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path or url!r} is not a usable SQLite database ({exc})") from None
    except Exception as exc:
        if type(exc).__module__.split(".", 1)[0] == "psycopg":
            raise ConfigError(f"PostgreSQL store at {_redacted(url)} cannot be used ({type(exc).__name__}: {str(exc).strip()[:300]})") from None
        raise


def _redacted(url: str) -> str:
    """A PostgreSQL URL without its password.

    >>> _redacted("postgresql://gate:secret@db:5432/gate")
    'postgresql://gate:***@db:5432/gate'
    """
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
