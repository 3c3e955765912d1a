"""Audit log (append-only canonical JSONL) and replay."""

from ._records import AuditWriter, compare_lines, dumps_record, read_audit, replay, settings_record

__all__ = ["AuditWriter", "compare_lines", "dumps_record", "read_audit", "replay", "settings_record"]
