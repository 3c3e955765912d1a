"""Audit log (append-only canonical JSONL) and replay."""

from ._records import AuditWriter, audit_lines, check_chain, compare_lines, dumps_record, read_audit, replay, settings_record

__all__ = ["AuditWriter", "audit_lines", "check_chain", "compare_lines", "dumps_record", "read_audit", "replay", "settings_record"]
