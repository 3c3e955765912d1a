"""Audit records: canonical JSON lines, one per family per tick plus one verdict row per tick.

Record fields (DESIGN.md): ``cell_key, baseline_version, schema_continuity, family, statistic,
log_wealth, threshold, alpha_allocated, alpha_consumed, alpha_remaining, fire, fire_reason, timestamp,
tick`` and, beyond the design, ``action``, ``drivers``, ``p_value`` (anytime-valid p-value of the
family, ``exp(-running max log_wealth)``) and ``components`` (family-specific sub-statistics).
``threshold`` and ``log_wealth`` are natural logs: a family fires when ``log_wealth >= threshold``.
``alpha_consumed`` is the family's allocation once it has fired, else 0 (an e-process spends its alpha
only by rejecting). The verdict row has ``family = "gate"`` and ``verdict, final, decided_at_tick,
fired_families, valid_fraction, alpha``. Non-finite numbers are written as ``null``.

Every line is ``canonical_json(record)``: sorted keys, compact, floats as shortest round-trip repr, so a
replay on the same platform reproduces the file byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .._exceptions import InputError, ReplayMismatch
from .._text import JSON_UNUSABLE, error_head, is_utf8
from ..calibration import CompiledConfig, canonical_json
from .. import __version__
from ._chain import GENESIS, ChainReport, chain_lines, is_chained, record_text, verify_chain
from ..gate import Gate, GateSettings, certification_status
from ..telemetry import Frame

__all__ = ["AuditWriter", "audit_lines", "check_chain", "compare_lines", "dumps_record", "read_audit", "replay", "settings_record"]


def dumps_record(record: dict[str, Any]) -> str:
    """One audit line (without newline)."""
    return canonical_json(record)


def settings_record(config: CompiledConfig, settings: GateSettings) -> dict[str, Any]:
    """The header line of an audit log: what the gate was run with (needed to replay it), and the version
    of deploysignal that evaluated it (``gate_version``: replay is byte-identical within one version), and
    whether the config's model is certified for these settings (``certification``: certified, reasons,
    basis; see :func:`deploysignal.gate.certification_status`)."""
    return {
        "family": "header", "baseline_version": config.version_id, "settings": settings.model_dump(mode="json"),
        "library_version": config.library_version, "gate_version": __version__,
        "certification": certification_status(config, settings),
    }


class AuditWriter:
    """Append-only, hash-chained JSONL audit log (format 2, as the service writes): the header record
    first, then every record, each line ``{"hash", "prev", "record"}``
    (:func:`~deploysignal.audit._chain.chain_lines`), flushed per tick. ``head`` is the hash of the
    last line written: ``deploysignal audit verify FILE --head HEAD`` also detects a truncated tail."""

    def __init__(self, fh: IO[str], config: CompiledConfig, settings: GateSettings) -> None:
        self._fh = fh
        self.head = GENESIS
        self.write([settings_record(config, settings)])

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        self.write_lines(dumps_record(r) for r in records)

    def write_lines(self, lines: Iterable[str]) -> None:
        """Records already in canonical JSON (:attr:`Decision.lines <deploysignal.gate.Decision>`)."""
        chained, self.head = chain_lines(lines, self.head)
        self._fh.write("".join(line + "\n" for line in chained))
        self._fh.flush()


def audit_lines(path: str | Path) -> list[str]:
    """The lines of an audit log as written (without newlines). Bytes that are not UTF-8 are kept as
    lone surrogates (Python's ``surrogateescape``): the line holding them is reported, not the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    data = p.read_bytes()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        lines = data.decode("utf-8", errors="surrogateescape").splitlines()
    if not lines:
        raise InputError(f"{p}: audit log is empty")
    return lines


def read_audit(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Header record and the record lines (canonical JSON, without newlines) of an audit log.

    Both formats are read: hash-chained lines (format 2, what ``gate --audit`` writes since 0.5.0 and
    the service always wrote; each record is taken exactly as its line holds it) and plain records
    (format 1, ``gate --audit`` up to 0.4.0). The chain itself is checked by :func:`check_chain`. A
    record line with bytes that are not UTF-8, or a chained line whose envelope is damaged, is kept
    as it is: :func:`replay` reports it as a mismatch at its line, like any corrupted record. The
    header must be UTF-8 JSON (:class:`InputError`, row 1)."""
    p = Path(path)
    lines = audit_lines(p)
    if not is_utf8(lines[0]):
        raise InputError(f"{p}: first line is not UTF-8 text", row=1)
    if is_chained(lines[0]):
        lines = [line if (rec := record_text(line)) is None else rec for line in lines]
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: first line is not JSON ({exc.msg})", row=1) from None
    except JSON_UNUSABLE as exc:  # an integer beyond Python's digit limit, too deep nesting
        raise InputError(f"{p}: first line is not usable JSON ({error_head(exc)})", row=1) from None
    if not isinstance(header, dict) or header.get("family") != "header":
        raise InputError(f"{p}: first line must be the audit header", row=1)
    return header, lines[1:]


def check_chain(path: str | Path) -> ChainReport | None:
    """:func:`~deploysignal.audit._chain.verify_chain` over the lines of a chained audit log; None
    for a log of plain records (format 1, ``gate --audit`` up to 0.4.0), which has no chain."""
    lines = audit_lines(path)
    return verify_chain(lines) if is_utf8(lines[0]) and is_chained(lines[0]) else None


def _replayed_lines(config: CompiledConfig, settings: GateSettings, canary: Frame, control: Frame | None) -> Iterator[str]:
    gate = Gate(config, settings, screen=False)  # re-derives what was accepted: a 0.4.0 log may hold a rate of 95
    for d in gate.run(canary, control):
        for r in d.records:
            yield dumps_record(r)


def replay(config: CompiledConfig, canary: Frame, lines: list[str], header: dict[str, Any], control: Frame | None = None) -> int:
    """Re-run the gate from the header's settings and compare every record byte for byte.

    Returns the number of records matched. Raises :class:`ReplayMismatch` at the first difference
    (naming the audit line and the first differing field) or when the counts differ.
    """
    if header.get("baseline_version") != config.version_id:
        raise ReplayMismatch(f"audit was written with baseline {header.get('baseline_version')}, config is {config.version_id}", line=1)
    try:
        # a header written before family A's nuisance band (0.5.0) names no a_nuisance: it ran 'learned';
        # one written before issue 22 names no d_max_period: family D's bank ran periods 2..24
        # and one written before issue 25 names no drivers_rule: drivers were the largest three (rule 1)
        settings = GateSettings.model_validate({"a_nuisance": "learned", "d_max_period": 24, "drivers_rule": 1, **header["settings"]})
    except Exception as exc:  # pydantic ValidationError or KeyError
        raise ReplayMismatch(f"audit header settings unusable: {exc}", line=1) from None
    return compare_lines(_replayed_lines(config, settings, canary, control), lines, header)


def compare_lines(produced: Iterable[str], lines: list[str], header: dict[str, Any], *, first_line: int = 2) -> int:
    """Compare re-derived lines with an audit log's lines byte for byte; returns how many matched.

    ``lines[i]`` is audit line ``first_line + i``. A line that is a chained wrapper
    (``{"hash", "prev", "record"}``) is compared as a whole and its ``record`` names the difference.
    Raises :class:`ReplayMismatch` at the first difference or when the counts differ.
    """
    n = 0
    for n, new in enumerate(produced, start=1):
        at = n + first_line - 1
        if n > len(lines):
            raise ReplayMismatch(f"replay produced more records than the audit log holds ({len(lines)})", line=at)
        old = lines[n - 1]
        if old != new:
            if not is_utf8(old):
                raise ReplayMismatch("record is not UTF-8 text (corrupted audit line)", line=at)
            try:
                a = json.loads(old)
            except JSON_UNUSABLE:
                a = None
            b = json.loads(new)
            if isinstance(a, dict) and isinstance(b.get("record"), dict):
                a, b = a.get("record"), b["record"]
            if not isinstance(a, dict):
                raise ReplayMismatch("record is not a JSON object (corrupted audit line)", line=at)
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            msg = f"record differs (tick {b.get('tick')}, family {b.get('family')}): fields {', '.join(diff) or '(formatting)'}"
            written = header.get("gate_version", "< 0.2.0")
            if written != __version__:
                msg += (f"; the log was written by deploysignal {written} and is replayed by {__version__}: replay is"
                        " byte-identical within one library version (the numerics may differ in the last bits across versions)")
            raise ReplayMismatch(msg, line=at)
    if n != len(lines):
        raise ReplayMismatch(f"audit log holds {len(lines)} records, replay produced {n}", line=n + first_line)
    return n
