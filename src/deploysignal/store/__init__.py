"""Durable analysis state: SQLite (WAL, default) or PostgreSQL; snapshots plus tick replay."""

from ._integration import IntegrationTables, RevisionBinding
from ._sql import AnalysisRow, Conflict, LockedAnalysis, NotFound, PostgresStore, SQLiteStore, SQLStore, StoredRows, open_store

__all__ = ["AnalysisRow", "Conflict", "IntegrationTables", "LockedAnalysis", "NotFound", "PostgresStore", "RevisionBinding", "SQLStore", "SQLiteStore", "StoredRows", "open_store"]
