"""The integrity check of a stored analysis: what the service restores and serves must match its chain.

Run on every load of an analysis (a restart, a cache miss, ticks written by another process) and by
``deploysignal audit verify --store``. It checks, against the analysis' hash chain and published head
(``analyses.audit_head``):

1. the audit rows: one per tick, contiguous, linking from the genesis hash to the head
   (:func:`~deploysignal.audit._binding.link_chain`);
2. the header: the analysis' stored spec and config re-derive the chained header's settings and baseline,
   and the whole analysis row as created (spec, its ``prometheus`` source included, and ``created``)
   has the header's ``spec_sha256``;
3. the tick rows: one per tick, each one's SHA-256 equal to its chained ``input`` record;
4. the snapshot: its state's SHA-256 equal to the chained ``checkpoint`` record of its tick, and it is
   the latest checkpoint (a deleted snapshot row is reported too);
5. the served state: the engine is rebuilt from the (verified) snapshot plus the ticks after it, and
   every record it re-derives for those ticks equals the chained one byte for byte, so the verdict it
   serves is the one the chain holds;
6. the ``analyses`` row: ``n_ticks``, ``last_ts`` and ``summary`` equal what the rebuilt engine says.

Guarantee: under SHA-256's second-preimage resistance, an edit, nulling or deletion of any single row
of ``audit``, ``ticks``, ``snapshots`` or ``analyses`` (or the stored config) of an analysis written
with ``store_binding`` 1 fails the check, naming the row. Not bound (:data:`NOT_BOUND`): the tables
that map integrations onto analyses and store their answers (``analysis_revisions``, Kayenta
``executions``, ``batches``, ``analysis_templates``); an edit there passes the check. Assumption: the head of the chain is the one
in ``analyses.audit_head``; an attacker who rewrites the whole chain and that head consistently is
caught only by comparing the head with a copy published elsewhere (``audit verify --head``).

An analysis written before the binding (no ``store_binding`` in its header, 0.4.0 up to this change)
has no ``input`` or ``checkpoint`` records: its snapshot is not committed to, so it is not used (the
engine is rebuilt from all ticks and every re-derived record is compared with the chain, checks 1, 5
and 6); what cannot be checked is listed in :attr:`Integrity.unchecked` (a tick edit that changes no
record). No I/O: the caller reads the rows (:class:`~deploysignal.store.StoredRows`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import DeploySignalError
from ..audit._binding import checkpoint_line, digest, fast_record, input_line, link_chain, record_of
from ..audit._chain import GENESIS
from ..audit._encoding import encoding_of
from ..calibration import canonical_json
from ..store import AnalysisRow, StoredRows

__all__ = ["CHECKED_BOUND", "NOT_BOUND", "Integrity", "IntegrityError", "advance_checked", "check_tail", "load_checked", "spec_digest",
           "summary_problem"]

CHECKED_BOUND = ("audit chain to the published head", "header against the stored spec (whole, with created) and config", "every tick row against its input record",
                  "snapshot against its checkpoint record", "records re-derived from the snapshot and the ticks after it",
                  "n_ticks, last_ts and summary of the analysis row")
#: Tables the chain does not cover (an edit there passes the check): what ``audit verify --store`` and the verdict say.
NOT_BOUND = ("analysis_revisions (which Flagger/Argo revision an analysis answers for)",
             "executions (Kayenta executions: the analysis each one reads and its thresholds)",
             "batches (the acknowledgement a retried batch id is answered with)",
             "analysis_templates (the spec of analyses created from a template later)")
_CHECKED_OLD = ("audit chain to the published head", "records re-derived from all ticks (the snapshot is not used)",
                "n_ticks, last_ts and summary of the analysis row")
_UNCHECKED_OLD = ("written before the store binding (no store_binding in the header): ticks are not committed to the chain, so a tick"
                  " edit that changes no record is not seen; the snapshot is not committed to, so it is ignored and the engine is"
                  " rebuilt from all ticks; the header is not checked against the stored spec",)


class IntegrityError(DeploySignalError):
    """A stored analysis does not match its audit chain: the service refuses to serve it (HTTP 409)."""


@dataclass(frozen=True)
class Integrity:
    """What the integrity check on every load of one analysis covers (``binding``: the header's
    ``store_binding``, 0 for analyses written before it) and what it cannot (``unchecked``)."""

    binding: int
    checked: tuple[str, ...]
    unchecked: tuple[str, ...] = field(default_factory=tuple)
    #: tables outside the chain (:data:`NOT_BOUND`)
    not_bound: tuple[str, ...] = NOT_BOUND

    def to_json(self) -> dict[str, Any]:
        return {"store_binding": self.binding, "checked": list(self.checked), "unchecked": list(self.unchecked), "not_bound": list(self.not_bound)}


def spec_digest(spec: Any, created: str) -> str:
    """SHA-256 of the whole analysis row as created (spec, its ``prometheus`` source included, and
    ``created``): the ``spec_sha256`` of a bound analysis' header."""
    return digest(canonical_json({"created": created, "spec": spec}))


def _fail(aid: str, what: str) -> IntegrityError:
    return IntegrityError(f"analysis {aid!r} refused: its store does not match its audit chain: {what}")


def _lines(text: Any) -> list[str]:
    return text.split("\n") if isinstance(text, str) else []


def load_checked(row: AnalysisRow, rows: StoredRows, build: Callable[[str, dict[str, Any] | None, str], Any],
                 header: Callable[[Any, int], dict[str, Any]], decode: Callable[[Any, Sequence[Any]], list[Any]],
                 state_text: Callable[[Any], str]) -> tuple[Any, Integrity]:
    """Check ``rows`` (read from ``start = -1``) against the chain; return the rebuilt engine and the report.

    ``build(config, snapshot_state, encoding)`` makes an engine writing audit lines in ``encoding`` (the one
    the chained header names, :func:`~deploysignal.audit._encoding.encoding_of`), ``header(engine, binding)`` its chained header
    record, ``decode(engine, ticks)`` the engine's inputs of stored tick dicts and ``state_text(engine)``
    the snapshot text of its state (the manager's functions). Raises :class:`IntegrityError` naming the
    first row that does not match.
    """
    aid, n = row.id, row.n_ticks
    if rows.past_end is not None:  # rows past n_ticks no pending-write marker covers exactly (store/_pending.py)
        raise _fail(aid, rows.past_end)
    seqs = [s for s, _ in rows.audit]
    if seqs[:1] != [-1]:
        raise _fail(aid, "the audit header row is missing")
    if seqs != list(range(-1, n)):
        bad = next((k for k, s in enumerate(seqs[1:]) if s != k), len(seqs) - 1)
        raise _fail(aid, f"audit rows do not match n_ticks = {n}: " + (f"the row of tick {bad} is missing" if bad < n
                         else f"{len(seqs) - 1} tick rows stored"))
    per_row = [_lines(t) for _, t in rows.audit]
    flat = [ln for r in per_row for ln in r]
    rep = link_chain(flat, GENESIS, row.audit_head)
    if not rep.ok:
        assert rep.bad_line is not None
        at, k = rep.bad_line, -1
        while k + 1 < len(per_row) and at > len(per_row[k + 1]):
            at -= len(per_row[k + 1])
            k += 1
        where = "the published head (analyses.audit_head)" if rep.bad_line > len(flat) else ("the header row" if k == -1 else f"the audit row of tick {k}")
        raise _fail(aid, f"hash chain broken at {where}: {rep.reason}")
    hdr = record_of(flat[0]) or {}
    binding = int(hdr.get("store_binding", 0)) if isinstance(hdr.get("store_binding", 0), int) else -1
    if binding not in (0, 1):
        raise _fail(aid, f"unknown store_binding {hdr.get('store_binding')!r} in the header")
    try:
        encoding = encoding_of(hdr)
    except ValueError as exc:
        raise _fail(aid, str(exc)) from None
    if rows.config is None:
        raise _fail(aid, f"the compiled config {row.spec.get('config_version')!r} is missing")
    tick_seqs = [s for s, _ in rows.ticks]
    if tick_seqs != list(range(n)):
        bad = next((k for k, s in enumerate(tick_seqs) if s != k), len(tick_seqs))
        raise _fail(aid, f"tick rows do not match n_ticks = {n}: " + (f"tick {bad} is missing" if bad < n else f"{len(tick_seqs)} stored"))
    payloads = [p for _, p in rows.ticks]
    snap_state: dict[str, Any] | None = None
    start = 0
    if binding:
        for k, (p, lines) in enumerate(zip(payloads, per_row[1:])):
            if not isinstance(p, str) or fast_record(lines[0]) != input_line(k, p):
                raise _fail(aid, f"tick {k}: the tick row does not match its chained input record (tick edited, nulled or replaced)")
        cps = [(k + 1, rec) for k, lines in enumerate(per_row[1:]) if '"family":"checkpoint"' in lines[-1] and (rec := record_of(lines[-1])) is not None
               and rec.get("family") == "checkpoint"]
        if rows.snapshot is None and cps:
            raise _fail(aid, f"the snapshot row of the chained checkpoint at tick {cps[-1][0]} is missing")
        if rows.snapshot is not None:
            t, text = rows.snapshot
            if not cps or cps[-1][0] != t:
                raise _fail(aid, f"the snapshot row (tick {t}) is not the latest chained checkpoint"
                            + (f" (tick {cps[-1][0]})" if cps else " (the chain has none)"))
            if not isinstance(text, str) or fast_record(per_row[t][-1]) != checkpoint_line(t, text):
                raise _fail(aid, f"the snapshot of tick {t} does not match its chained checkpoint record (state edited or nulled)")
            try:
                snap_state = json.loads(text)
            except ValueError:
                raise _fail(aid, f"the snapshot of tick {t} is not JSON") from None
            start = t
    try:
        eng = build(rows.config, snap_state, encoding)
    except DeploySignalError as exc:
        raise _fail(aid, f"the stored spec and config do not build an engine ({exc})") from None
    if binding:
        want, got = header(eng, binding), hdr
        for k in ("baseline_version", "settings", "metrics", "mode"):
            if want.get(k) != got.get(k):
                raise _fail(aid, f"the stored spec or config does not re-derive the chained header ({k} differs)")
        if got.get("spec_sha256") != spec_digest(row.spec, row.created):
            raise _fail(aid, "the analysis row's spec or created differs from the chained header's spec_sha256")
    check_tail(aid, eng, per_row[1 + start:], payloads[start:], start, binding, decode, state_text)
    _check_row(row, eng)
    return eng, Integrity(binding, CHECKED_BOUND if binding else _CHECKED_OLD, () if binding else _UNCHECKED_OLD)


def check_tail(aid: str, eng: Any, audit_rows: Sequence[list[str]], payloads: Sequence[str | None], start: int, binding: int,
               decode: Callable[[Any, Sequence[Any]], list[Any]], state_text: Callable[[Any], str]) -> None:
    """Ingest the stored ticks ``start, start + 1, ...`` (``payloads``) into ``eng`` and compare every
    re-derived record with the chained ones (``audit_rows``, one list of chained lines per tick; their
    links are checked by the caller), including the ``checkpoint`` record of a snapshot written in that
    range (by another process: the state is re-derived at its tick). Raises :class:`IntegrityError` at
    the first tick that differs."""
    k = start
    while k < start + len(payloads):
        stop = k
        while stop < start + len(payloads) and '"family":"checkpoint"' not in audit_rows[stop - start][-1]:
            stop += 1
        stop = min(stop + 1, start + len(payloads))  # the segment ends with the tick that carries a checkpoint
        seg = payloads[k - start:stop - start]
        try:
            results = eng.ingest(decode(eng, [json.loads(p) for p in seg]))  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError, DeploySignalError) as exc:
            raise _fail(aid, f"the stored ticks from tick {k} on cannot be re-evaluated ({type(exc).__name__}: {exc})") from None
        for t, (r, p) in enumerate(zip(results, seg), start=k):
            stored = [fast_record(ln) for ln in audit_rows[t - start]]
            derived = ([input_line(t, p)] if binding else []) + list(r.lines)  # type: ignore[arg-type]
            if binding and t == stop - 1 and len(stored) == len(derived) + 1:
                derived.append(checkpoint_line(t + 1, state_text(eng)))
            if stored != derived:
                raise _fail(aid, f"tick {t}: the stored ticks do not re-derive the chained records (tick or audit row edited)")
        k = stop


def _check_row(row: AnalysisRow, eng: Any) -> None:
    """``n_ticks``, ``last_ts`` and ``summary`` of the analyses row against the rebuilt engine."""
    if eng.n_ticks != row.n_ticks:
        raise _fail(row.id, f"n_ticks is {row.n_ticks}, the chain holds {eng.n_ticks} ticks")
    if eng.last_timestamp != row.last_ts and not (eng.last_timestamp is None and row.last_ts is None):
        raise _fail(row.id, f"last_ts is {row.last_ts!r}, the ticks say {eng.last_timestamp!r}")
    want = None if eng.last is None else {**eng.last.summary(), "n_ticks": eng.n_ticks}
    if json.dumps(want, sort_keys=True) != json.dumps(row.summary, sort_keys=True):
        raise _fail(row.id, "the summary column differs from the verdict re-derived from the chain")


def advance_checked(row: AnalysisRow, rows: StoredRows, eng: Any, head: str, binding: int,
                    decode: Callable[[Any, Sequence[Any]], list[Any]], state_text: Callable[[Any], str]) -> None:
    """Bring a cached engine (at ``eng.n_ticks``, chain head ``head``) up to ``row.n_ticks`` with the rows
    another process appended (``rows`` read from ``start = eng.n_ticks``), checking them as
    :func:`load_checked` does: contiguous rows, links from ``head`` to the published head, input records,
    re-derived records and checkpoints, and the analyses row. Raises :class:`IntegrityError`."""
    aid, n0, n = row.id, eng.n_ticks, row.n_ticks
    if rows.past_end is not None:
        raise _fail(aid, rows.past_end)
    if [s for s, _ in rows.audit] != list(range(n0, n)) or [s for s, _ in rows.ticks] != list(range(n0, n)):
        raise _fail(aid, f"the audit and tick rows of ticks {n0} to {n - 1} are not all there, once each")
    per_row = [_lines(t) for _, t in rows.audit]
    rep = link_chain([ln for r in per_row for ln in r], head, row.audit_head)
    if not rep.ok:
        raise _fail(aid, f"hash chain broken after tick {n0}: {rep.reason}")
    check_tail(aid, eng, per_row, [p for _, p in rows.ticks], n0, binding, decode, state_text)
    _check_row(row, eng)


def summary_problem(row: AnalysisRow, last_lines: Sequence[str]) -> str | None:
    """Why the ``summary`` column of ``row`` cannot be served, or None: a cheap check of the analyses
    listing, without rebuilding the engine. ``last_lines``: the chained lines of the row's last audit row
    (tick ``n_ticks - 1``, the header row when there is none). They must link to the published head and
    their last gate (or ``cut``) record must give the summary's verdict, final flag, fired families
    and tick count (a cut back to tick 0 leaves no summary). Runs on every listing call (one audit row
    read and hashed per analysis); the summary's ``tick`` and ``timestamp`` are checked only on load. The full check
    runs when the analysis is loaded (:func:`load_checked`)."""
    if not last_lines:
        return "the last audit row is missing"
    first = last_lines[0]
    rep = link_chain(last_lines, first[83:147] if fast_record(first) is not None else "", row.audit_head)
    if not rep.ok:
        return f"the last audit row does not end at the published head ({rep.reason})"
    gate = next((r for ln in reversed(last_lines) if (r := record_of(ln)) is not None and r.get("family") in ("gate", "cut")), None)
    s = row.summary
    nothing = row.n_ticks == 0 or (gate is not None and gate.get("family") == "cut" and gate.get("to_tick") == 0)  # a cut back to tick 0 keeps no tick
    if nothing or gate is None:
        return None if s is None and nothing else "the summary differs from the chain (no tick evaluated)"
    if not isinstance(s, dict) or s.get("verdict") != gate.get("verdict") or s.get("final") != gate.get("final") or s.get("n_ticks") != row.n_ticks:
        return "the summary column differs from the last chained gate record"
    fired = gate.get("fired_families", gate.get("fired")) if gate.get("family") == "gate" else None
    if isinstance(fired, list) and sorted(map(str, fired)) != sorted(map(str, s.get("fired_families") or [])):
        return "the summary column differs from the last chained gate record (fired families)"
    return None
