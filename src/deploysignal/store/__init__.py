"""Durable analysis state: SQLite (WAL, default) or PostgreSQL; snapshots plus tick replay."""

from ._integration import IntegrationTables, RevisionBinding
from ._sql import AnalysisRow, Conflict, LockedAnalysis, NotFound, PostgresStore, SQLiteStore, SQLStore, StoredRows, open_store  # isort: skip (first: the modules below import it)
from ._batches import BatchConflict, batch_digest, check_batch_digest, record_batch_digest
from ._open import open_existing
from ._readonly import ReadOnlyPostgresStore, ReadOnlySQLiteStore, ReadOnlyStore, open_read_only
from ._pending import PendingDamage, PendingLost, stage_rows
from ._retention import delete_analysis, expired, tombstones

__all__ = ["AnalysisRow", "BatchConflict", "Conflict", "IntegrationTables", "LockedAnalysis", "NotFound", "PendingDamage", "PendingLost", "PostgresStore", "ReadOnlyPostgresStore", "ReadOnlySQLiteStore", "ReadOnlyStore", "RevisionBinding", "SQLStore", "SQLiteStore",
           "StoredRows", "batch_digest", "check_batch_digest", "delete_analysis", "expired", "open_existing", "open_read_only", "open_store", "record_batch_digest", "stage_rows", "tombstones"]
