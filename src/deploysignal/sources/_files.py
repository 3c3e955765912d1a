"""Read telemetry files (CSV, Parquet, JSONL) and signals files into :class:`~deploysignal.telemetry.Frame`.

Format (DESIGN.md): one row per tick; ``timestamp`` (ISO-8601 or epoch seconds), optional ``tier`` or
``cohort`` column, then one numeric column per signal. An empty cell, ``nan``, ``NaN`` or JSON ``null``
is a missing value. Anything else that is not a number is an error naming the row and column.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import InputError, SchemaError
from .._text import JSON_UNUSABLE, error_head, not_utf8_message
from ..telemetry import Frame, SignalSpec, resolve_specs

__all__ = ["read_frame", "read_rows", "read_signals_file", "read_yaml", "write_csv"]

_TIME_COLUMNS = ("timestamp", "time", "ts")
_COHORT_COLUMNS = ("tier", "cohort")
_MISSING = {"", "nan", "na", "null", "none"}


def _parse_time(raw: Any, row: int) -> float:
    if isinstance(raw, bool):
        raise InputError(f"timestamp must be ISO-8601 or epoch seconds, got {raw!r}", row=row, column="timestamp")
    if isinstance(raw, (int, float)):
        try:
            val = float(raw)
        except OverflowError:  # a JSON integer beyond float range
            raise InputError("timestamp is out of range", row=row, column="timestamp") from None
    elif isinstance(raw, str):
        s = raw.strip()
        if not s:
            raise InputError("timestamp is empty", row=row, column="timestamp")
        try:
            val = float(s)
        except ValueError:
            try:
                dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            except ValueError:
                raise InputError(
                    f"timestamp must be ISO-8601 or epoch seconds, got {s!r}", row=row, column="timestamp"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            val = dt.timestamp()
    else:
        raise InputError(f"timestamp must be ISO-8601 or epoch seconds, got {raw!r}", row=row, column="timestamp")
    if not math.isfinite(val):
        raise InputError("timestamp is not finite", row=row, column="timestamp")
    return val


def _parse_value(raw: Any, row: int, column: str) -> float:
    if raw is None:
        return math.nan
    if isinstance(raw, bool):
        raise InputError(f"expected a number, got {raw!r}", row=row, column=column)
    if isinstance(raw, (int, float)):
        try:
            val = float(raw)
        except OverflowError:  # a JSON integer beyond float range
            raise InputError("value is infinite (integer beyond float range)", row=row, column=column) from None
    elif isinstance(raw, str):
        s = raw.strip()
        if s.lower() in _MISSING:
            return math.nan
        try:
            val = float(s)
        except ValueError:
            raise InputError(f"expected a number, got {s!r}", row=row, column=column) from None
    else:
        raise InputError(f"expected a number, got {type(raw).__name__}", row=row, column=column)
    if math.isinf(val):
        raise InputError("value is infinite", row=row, column=column)
    return val


def _build(
    header: list[str], rows: list[dict[str, Any]], source: str, specs: dict[str, SignalSpec] | None, lines: list[int] | None = None
) -> Frame:
    tcol = next((c for c in header if c.lower() in _TIME_COLUMNS), None)
    if tcol is None:
        raise SchemaError(f"{source}: no timestamp column (expected one of {', '.join(_TIME_COLUMNS)})")
    ccol = next((c for c in header if c.lower() in _COHORT_COLUMNS), None)
    signals = [c for c in header if c not in (tcol, ccol)]
    if not signals:
        raise SchemaError(f"{source}: no signal columns besides {tcol!r}")
    if not rows:
        raise InputError(f"{source}: no data rows")
    n, k = len(rows), len(signals)
    ts = np.empty(n)
    vals = np.empty((n, k))
    cohort = [] if ccol else None
    for i, rec in enumerate(rows):
        r = i + 1
        try:
            ts[i] = _parse_time(rec.get(tcol), r)
            for j, name in enumerate(signals):
                vals[i, j] = _parse_value(rec.get(name), r, name)
        except InputError as exc:
            if lines is None:
                raise
            raise InputError(f"{exc.message} ({source} line {lines[i]})", row=exc.row, column=exc.column) from None
        if cohort is not None:
            c = rec.get(ccol)
            cohort.append("" if c is None else str(c).strip())
    return Frame(
        ts, vals, tuple(signals), None if cohort is None else np.array(cohort, dtype=str), tuple(resolve_specs(signals, specs))
    )


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{path}: file is empty") from None
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise SchemaError(f"{path}: duplicate columns {', '.join(dup)}")
        rows, lines = [], []
        for rec in reader:
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                raise InputError(f"{path} line {reader.line_num}: expected {len(header)} fields, found {len(rec)}", row=len(rows) + 1)
            rows.append(dict(zip(header, rec)))
            lines.append(reader.line_num)
    return header, rows, lines


def _read_jsonl(path: Path) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    header: list[str] = []
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {i + 1}: not valid JSON ({exc.msg})", row=len(rows) + 1) from None
            except JSON_UNUSABLE as exc:  # an integer beyond Python's digit limit, too deep nesting
                raise InputError(f"{path} line {i + 1}: not usable JSON ({error_head(exc)})", row=len(rows) + 1) from None
            if not isinstance(rec, dict):
                raise InputError(f"{path} line {i + 1}: each line must be a JSON object", row=len(rows) + 1)
            for key in rec:
                if key not in header:
                    if rows:
                        raise SchemaError(f"{path} line {i + 1}: field {key!r} appears first here (schema change)", row=len(rows) + 1)
                    header.append(key)
            rows.append(rec)
            lines.append(i + 1)
    if not header:
        raise InputError(f"{path}: file is empty")
    return header, rows, lines


def _read_parquet(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise InputError(f"{path}: cannot read Parquet ({exc})") from None
    header = list(table.column_names)
    cols = {}
    for name in header:
        col = table.column(name)
        if name.lower() in _TIME_COLUMNS and str(col.type).startswith("timestamp"):
            cols[name] = [None if v is None else v.timestamp() for v in col.to_pylist()]
        else:
            cols[name] = col.to_pylist()
    rows = [{h: cols[h][i] for h in header} for i in range(table.num_rows)]
    return header, rows


def read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]], list[int] | None]:
    """Header, rows (dicts) and file line numbers (``None`` for Parquet) of a CSV, JSONL or Parquet table."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix in (".parquet", ".pq"):
            header, rows = _read_parquet(path)
            return header, rows, None
    except UnicodeDecodeError:
        raise InputError(not_utf8_message(path)) from None
    raise InputError(f"{path}: unknown format {suffix!r} (use .csv, .parquet or .jsonl)")


def read_yaml(path: Path) -> Any:
    """A YAML (or JSON) file's content; unreadable text or syntax is an :class:`InputError` naming the file."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(not_utf8_message(path)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid JSON/YAML ({exc})") from None
    except RecursionError:
        raise InputError(f"{path}: not usable JSON/YAML (nested too deeply)") from None


def read_frame(path: str | Path, *, specs: dict[str, SignalSpec] | None = None) -> Frame:
    """Read a telemetry file; the format follows the suffix (``.csv``, ``.parquet``, ``.jsonl``/``.ndjson``).

    Raises
    ------
    InputError
        Unreadable or empty file, non-numeric values, bad or non-increasing timestamps (naming row and column).
    SchemaError
        No timestamp or no signal column, duplicate columns, schema change inside a JSONL file.
    """
    p = Path(path)
    header, rows, lines = read_rows(p)
    try:
        return _build(header, rows, str(p), specs, lines)
    except InputError as exc:
        if str(p) in str(exc):
            raise
        raise type(exc)(f"{p}: {exc}") from None


def read_signals_file(path: str | Path) -> dict[str, SignalSpec]:
    """Read signal metadata: JSON/YAML mapping ``{name: {direction, kind, range}}`` (``range: [lo, hi]``,
    ``null`` for an open end) or CSV ``name,direction,kind[,min,max]`` (empty = open end)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    out: dict[str, SignalSpec] = {}
    if p.suffix.lower() == ".csv":
        try:
            with p.open(newline="", encoding="utf-8") as fh:
                for i, rec in enumerate(csv.DictReader(fh)):
                    name = (rec.get("name") or "").strip()
                    if not name:
                        raise InputError(f"{p}: missing name", row=i + 1, column="name")
                    lo, hi = (_csv_end(p, rec.get(c), i + 1, c) for c in ("min", "max"))
                    try:
                        out[name] = SignalSpec(name, (rec.get("direction") or "both").strip(), (rec.get("kind") or "continuous").strip(),  # type: ignore[arg-type]
                                               None if lo is None and hi is None else (lo, hi))
                    except InputError as exc:
                        raise InputError(f"{p}: signal {name!r}: {str(exc).split(': ', 1)[-1]}", row=i + 1, column=exc.column) from None
        except UnicodeDecodeError:
            raise InputError(not_utf8_message(p)) from None
        return out
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a mapping of signal name to {{direction, kind}}")
    for name, meta in data.items():
        meta = meta or {}
        if not isinstance(meta, dict):
            raise InputError(f"{p}: entry must be a mapping", column=str(name))
        unknown = set(meta) - {"direction", "kind", "range"}
        if unknown:
            raise InputError(f"{p}: unknown keys {sorted(unknown)} (allowed: direction, kind, range)", column=str(name))
        try:
            out[str(name)] = SignalSpec(str(name), meta.get("direction", "both"), meta.get("kind", "continuous"), meta.get("range"))
        except InputError as exc:
            raise InputError(f"{p}: {str(exc).split(': ', 1)[-1]}", column=str(name)) from None
    return out


def _csv_end(p: Path, text: str | None, row: int, column: str) -> float | None:
    """One end of a declared range in a signals CSV (``min``/``max`` columns; empty = open)."""
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{p}: {column} must be a number or empty, got {text!r}", row=row, column=column) from None


def write_csv(frame: Frame, path: str | Path) -> None:
    """Write a frame as the wide CSV format (epoch-second timestamps, ``repr`` floats, empty = missing)."""
    p = Path(path)
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        head = ["timestamp"] + (["tier"] if frame.cohort is not None else []) + list(frame.signals)
        w.writerow(head)
        for i in range(len(frame)):
            row = [repr(float(frame.timestamps[i]))]
            if frame.cohort is not None:
                row.append(str(frame.cohort[i]))
            row += ["" if math.isnan(v) else repr(float(v)) for v in frame.values[i]]
            w.writerow(row)
