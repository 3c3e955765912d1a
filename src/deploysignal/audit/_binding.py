"""Binding a stored analysis to its hash chain: input and checkpoint records, fast chain linking.

A service analysis created since 0.5.0 has ``"store_binding": 1`` in its chained header record, and its
chain then commits to everything the service restores and serves, not only to the gate's records:

* every tick's audit lines begin with an ``input`` record, ``{"family": "input", "sha256": s, "tick": i}``,
  where ``s`` is the SHA-256 of the tick exactly as stored (the ``ticks.payload`` text, UTF-8);
* a tick after which an engine snapshot is written ends with a ``checkpoint`` record,
  ``{"family": "checkpoint", "state_sha256": s, "tick": t}``, where ``t`` is the number of stored ticks
  the snapshot covers and ``s`` the SHA-256 of the snapshot's ``state`` text.

Since the chain's head is published (``audit_head``) and every line's hash covers its record, a change to
a tick row, a snapshot row or an audit row breaks an equation that :func:`link_chain` and the integrity
check of the service (``deploysignal.service._integrity``) recompute. Analyses written before (no
``store_binding`` in the header) have neither record; their snapshots and ticks are not committed to.

Guarantee: SHA-256 second-preimage resistance is assumed; under it, no edit of one stored row of the
tables the chain covers (audit, ticks, snapshots, analyses, configs; nor of any set of such rows that
leaves the published head unchanged) passes the check. The tables that map integrations onto analyses
are not covered (``deploysignal.service._integrity.NOT_BOUND``). It does not protect against
an attacker who rewrites the whole chain *and* the head wherever the head is published: compare the head
with a copy kept elsewhere (``deploysignal audit verify --head``). Pure functions, no I/O.

References
----------
Haber, S. and Stornetta, W. S. (1991). How to time-stamp a digital document. *Journal of Cryptology* 3(2).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ._chain import ChainReport, chain_hash

__all__ = ["STORE_BINDING", "checkpoint_line", "digest", "fast_record", "input_line", "link_chain", "record_of"]

#: Version of the binding records a new analysis' header announces (``store_binding``).
STORE_BINDING = 1


def digest(text: str) -> str:
    """SHA-256 (lowercase hex) of ``text`` as UTF-8; lone surrogates (a cohort name that UTF-8 cannot
    hold, stored as written) are encoded with ``surrogatepass`` instead of raising."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def input_line(tick: int, payload: str) -> str:
    """The canonical JSON of the ``input`` record of stored tick ``tick`` (``payload``: its stored text).

    >>> from deploysignal.calibration import canonical_json
    >>> input_line(3, '{"a":1}') == canonical_json({"family": "input", "sha256": digest('{"a":1}'), "tick": 3})
    True
    """
    return f'{{"family":"input","sha256":"{digest(payload)}","tick":{int(tick)}}}'


def checkpoint_line(tick: int, state: str) -> str:
    """The canonical JSON of the ``checkpoint`` record of a snapshot covering ``tick`` stored ticks.

    >>> from deploysignal.calibration import canonical_json
    >>> checkpoint_line(256, "{}") == canonical_json({"family": "checkpoint", "state_sha256": digest("{}"), "tick": 256})
    True
    """
    return f'{{"family":"checkpoint","state_sha256":"{digest(state)}","tick":{int(tick)}}}'


def link_chain(lines: Sequence[str], start: str, head: str | None = None) -> ChainReport:
    """Check that ``lines`` link from ``start`` (to ``head`` when given): each line has the chained shape,
    its ``prev`` is the previous hash and its ``hash`` is ``SHA256(prev + "\\n" + record)`` over the
    record text as stored. The same equation as :func:`~deploysignal.audit._chain.verify_chain`, without
    re-encoding each record canonically or checking the envelope's hex (it runs on every analysis load).

    >>> from deploysignal.audit._chain import GENESIS, chain_lines
    >>> lines, head = chain_lines(['{"a":1}', '{"b":2}'])
    >>> link_chain(lines, GENESIS, head).ok, link_chain(lines[1:], GENESIS).bad_line
    (True, 1)
    """
    prev = start
    for i, line in enumerate(lines, start=1):
        rec = fast_record(line)
        if rec is None:
            return ChainReport(False, i - 1, prev, i, "not a chained line")
        if line[83:147] != prev:
            return ChainReport(False, i - 1, prev, i, "prev hash does not match the previous line (line removed, inserted or reordered)")
        h = chain_hash(prev, rec)
        if line[9:73] != h:
            return ChainReport(False, i - 1, prev, i, "hash does not match the record (record altered)")
        prev = h
    if head is not None and head != prev:
        return ChainReport(False, len(lines), prev, len(lines) + 1, f"chain ends at {prev[:16]}..., the published head is {head[:16]}...")
    return ChainReport(True, len(lines), prev)


_PREFIX = len('{"hash":"') + 64 + len('","prev":"') + 64 + len('","record":')


def fast_record(line: str) -> str | None:
    """The record text of a chained line, checking the envelope's fixed parts only (not that the
    hashes are hex: :func:`link_chain` compares them with computed hashes, which are).

    >>> from deploysignal.audit._chain import chain_lines
    >>> fast_record(chain_lines(['{"a":1}'])[0][0]), fast_record('{"a":1}')
    ('{"a":1}', None)
    """
    if (len(line) <= _PREFIX + 1 or not line.startswith('{"hash":"') or line[73:83] != '","prev":"' or line[147:_PREFIX] != '","record":'
            or line[-1] != "}"):
        return None
    return line[_PREFIX:-1]


def record_of(line: str) -> dict[str, Any] | None:
    """The record of a chained line as a dict (None when the line is not chained or not JSON)."""
    rec = fast_record(line)
    if rec is None:
        return None
    try:
        obj = json.loads(rec)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None
