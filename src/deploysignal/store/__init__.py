"""Durable analysis state: SQLite (WAL, default) or PostgreSQL; snapshots plus tick replay."""

from ._sql import AnalysisRow, Conflict, LockedAnalysis, NotFound, PostgresStore, SQLiteStore, SQLStore, open_store

__all__ = ["AnalysisRow", "Conflict", "LockedAnalysis", "NotFound", "PostgresStore", "SQLStore", "SQLiteStore", "open_store"]
