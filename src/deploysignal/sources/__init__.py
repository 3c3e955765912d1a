"""Telemetry sources: files now; Prometheus and HTTP ingest live beside them."""

from ._files import read_frame, read_signals_file, write_csv

__all__ = ["read_frame", "read_signals_file", "write_csv"]
