"""Audit log (append-only canonical JSONL: RFC 8785 lines since 0.5.0) and replay."""

from ._encoding import ENCODINGS, JCS, REPR, check_jcs_settings, encoder, encoding_of, jcs_line
from ._records import AuditWriter, audit_lines, check_chain, compare_lines, decision_lines, dumps_record, read_audit, replay, settings_record

__all__ = ["ENCODINGS", "JCS", "REPR", "AuditWriter", "audit_lines", "check_jcs_settings", "check_chain", "compare_lines", "decision_lines", "dumps_record", "encoder", "encoding_of",
           "jcs_line", "read_audit", "replay", "settings_record"]
