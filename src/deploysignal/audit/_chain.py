"""Hash chain over canonical audit lines: tampering, deletion, insertion and reordering are detectable.

Each chained line is the canonical JSON object ``{"hash": h_i, "prev": h_{i-1}, "record": r_i}`` with

.. math::

    h_i = \\operatorname{SHA256}\\bigl(h_{i-1} \\,\\|\\, \\texttt{"\\n"} \\,\\|\\, \\operatorname{canonical}(r_i)\\bigr),
    \\qquad h_0 = \\texttt{GENESIS} = 0^{64}.

Changing any record, or dropping, inserting or swapping lines, breaks the equation at the first
affected line. Truncating the *tail* leaves a valid shorter chain; to detect it compare the last hash
with the head published elsewhere (the service reports ``audit_head`` for every analysis, and
``deploysignal audit verify --head`` checks it). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._text import JSON_UNUSABLE, error_head, is_utf8
from ._encoding import ENCODINGS, REPR, encoder, encoding_of

__all__ = ["GENESIS", "ChainReport", "chain_hash", "chain_lines", "chain_records", "is_chained", "record_text", "verify_chain"]

GENESIS = "0" * 64


def chain_hash(prev: str, record_line: str) -> str:
    """``SHA256(prev + "\\n" + record_line)`` as lowercase hex."""
    return hashlib.sha256(f"{prev}\n{record_line}".encode()).hexdigest()


def chain_records(records: Iterable[dict[str, Any]], prev: str = GENESIS, encoding: str = REPR) -> tuple[list[str], str]:
    """Chained canonical lines for ``records`` continuing from ``prev``, each record written in
    ``encoding`` (:mod:`~deploysignal.audit._encoding`: ``"jcs"``, or ``"repr"`` as logs before 0.5.0);
    returns (lines, new head).

    >>> lines, head = chain_records([{"a": 1}, {"b": 2}])
    >>> verify_chain(lines).ok, verify_chain(lines).head == head
    (True, True)
    """
    encode = encoder(encoding)
    return chain_lines([encode(rec) for rec in records], prev)


def chain_lines(lines: Iterable[str], prev: str = GENESIS) -> tuple[list[str], str]:
    """:func:`chain_records` for records already written as canonical JSON (e.g.
    :attr:`Decision.lines <deploysignal.gate.Decision>`); the caller guarantees they are canonical,
    which :func:`verify_chain` re-checks by re-encoding each record."""
    out = []
    for line in lines:
        h = chain_hash(prev, line)
        out.append(f'{{"hash":"{h}","prev":"{prev}","record":{line}}}')
        prev = h
    return out, prev


_HEX = frozenset("0123456789abcdef")
_PREFIX = len('{"hash":"') + 64 + len('","prev":"') + 64 + len('","record":')


def record_text(line: str) -> str | None:
    """The record of a chained line exactly as written (the canonical JSON the hash covers), or None
    when ``line`` does not have the shape :func:`chain_lines` writes. Checks the shape only, not the hash.

    >>> lines, _ = chain_records([{"b": 2, "a": 1}])
    >>> record_text(lines[0]), record_text('{"a":1}')
    ('{"a":1,"b":2}', None)
    """
    if (len(line) <= _PREFIX + 1 or not line.startswith('{"hash":"') or line[73:83] != '","prev":"' or line[147:_PREFIX] != '","record":'
            or not line.endswith("}") or not set(line[9:73]) <= _HEX or not set(line[83:147]) <= _HEX):
        return None
    return line[_PREFIX:-1]


def is_chained(first_line: str) -> bool:
    """Whether an audit log whose first line is ``first_line`` is hash-chained (format 2: every line
    ``{"hash", "prev", "record"}``, the service's logs and, since 0.5.0, ``gate --audit``) rather than
    a log of plain records (format 1, ``gate --audit`` up to 0.4.0)."""
    return record_text(first_line) is not None


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify_chain`: ``ok``, lines checked, final head, first bad line (1-based) and why."""

    ok: bool
    n: int
    head: str
    bad_line: int | None = None
    reason: str = ""


def _other_encoding(obj: dict[str, Any], prev: str, encode: Any) -> str:
    """For a line whose hash does not match: ``", or written in X, not the Y its header names"`` when
    its record in the other known encoding gives its hash (a writer handed lines of another encoding),
    else ``""``."""
    for name in ENCODINGS:
        other = encoder(name)
        if other is not encode:
            try:
                if chain_hash(prev, other(obj["record"])) == obj["hash"]:
                    return f", or written in the {name!r} encoding, not the one its log's header names"
            except (ValueError, TypeError, RecursionError):
                pass
    return ""


def verify_chain(lines: Sequence[str], *, start: str = GENESIS, head: str | None = None, encoding: str | None = None) -> ChainReport:
    """Recompute the chain over ``lines``; report the first line that breaks it.

    Each record is re-encoded in ``encoding``; ``None``: the encoding the header record names when
    ``lines`` start the chain (``start`` is :data:`GENESIS` and line 1 is a ``family: "header"`` record;
    no ``encoding`` field: ``"repr"``, as every log before 0.5.0), else ``"repr"``. A header naming an
    unknown encoding breaks the chain at line 1.

    >>> lines, _ = chain_records([{"a": 1}, {"b": 2}])
    >>> verify_chain([lines[0], lines[1].replace('"b":2', '"b":3')]).bad_line
    2
    >>> lines, _ = chain_records([{"family": "header", "encoding": "jcs"}, {"x": 1.0}], encoding="jcs")
    >>> lines[1][-8:], verify_chain(lines).ok
    ('{"x":1}}', True)

    A line holding lone surrogates (bytes that were not UTF-8, decoded with ``surrogateescape``), an
    integer beyond Python's digit limit or absurdly deep nesting is a broken line, not an exception.
    """
    prev = start
    encode = None if encoding is None else encoder(encoding)
    for i, raw in enumerate(lines, start=1):
        if not is_utf8(raw):
            return ChainReport(False, i - 1, prev, i, "not UTF-8 text (line corrupted)")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            return ChainReport(False, i - 1, prev, i, f"not JSON ({exc.msg})")
        except JSON_UNUSABLE as exc:  # an integer beyond the digit limit, too deep nesting
            return ChainReport(False, i - 1, prev, i, f"not usable JSON ({error_head(exc)})")
        if not isinstance(obj, dict) or set(obj) != {"hash", "prev", "record"} or not isinstance(obj["record"], dict):
            return ChainReport(False, i - 1, prev, i, "not a chained record (expected keys hash, prev, record)")
        if obj["prev"] != prev:
            return ChainReport(False, i - 1, prev, i, "prev hash does not match the previous line (line removed, inserted or reordered)")
        if encode is None:
            rec = obj["record"]
            try:
                encode = encoder(encoding_of(rec) if i == 1 and start == GENESIS and rec.get("family") == "header" else REPR)
            except ValueError as exc:
                return ChainReport(False, 0, prev, 1, f"header record: {exc}")
        try:
            want = chain_hash(prev, encode(obj["record"]))
        except (ValueError, TypeError, RecursionError) as exc:  # a record that cannot be re-encoded canonically
            return ChainReport(False, i - 1, prev, i, f"record cannot be encoded canonically ({error_head(exc)})")
        if obj["hash"] != want:
            return ChainReport(False, i - 1, prev, i, "hash does not match the record (record altered" + _other_encoding(obj, prev, encode) + ")")
        prev = want
    if head is not None and head != prev:
        return ChainReport(False, len(lines), prev, len(lines) + 1, f"chain ends at {prev[:16]}..., expected head {head[:16]}... (lines missing at the end)")
    return ChainReport(True, len(lines), prev)
