"""Cut-back: an operator takes an analysis back to where it stood before one of its ticks.

For a wedged clock (a tick stamped in the future was accepted, and every correct tick since is out of
order) or a bad batch (a misconfigured source), the operator names the first tick to drop
(``to_tick``, the gate's tick number as the audit records and the verdict show it). The cut is stored
as one more entry of the analysis' tick sequence, ``{"cut": {"reason": ..., "to": to_tick}}``; nothing
is deleted: the ticks from ``to_tick`` on stay in the store and in the chain, and the chained ``cut``
record names them (``superseded``: ranges of stored sequence numbers). The engine is rebuilt from the
ticks kept (:func:`effective`) and continues from there, so replay and ``audit verify`` re-derive it.

What a cut-back does not do (:func:`cut_refusal`, read from the stored entries and chained records,
superseded ones included, so no cut can hide an earlier one): take back a rollback (one anywhere in
the chain refuses the cut: a rollback stays given), a void (a stored void entry refuses it: a void is
final) or any other final verdict that refused promotion (a final ``extend``, e.g. a split analysis'
sample-ratio void): no cut ends in a promotion the analysis had refused. Nor does it undo what an
integration already did with a verdict given before the cut (a ``proceed`` Argo acted on stays acted
on), or cut an analysis written before the store binding (it has no checkpoints to rebuild from).
No I/O.

What a cut costs (``note``, in every cut record and answer). Rollbacks given before a cut stand, so
the superseded stretch already had its chance to fire; after the cut the bet restarts from the state
at ``to_tick`` with a fresh budget (Ville's inequality again). Even for a cut point chosen without
looking at the evidence, the analysis' false-rollback probability is bounded only by
``(1 + number of cuts) x alpha``, not alpha (a cut back to tick 0: up to ``2 alpha``); a cut chosen by
looking at the evidence is worse. In the other direction, a cut drops evidence: a write-token holder
can cut away a regression's build-up while the verdict is pending, until the window ends in
``proceed``: a cut can produce a promotion the evidence would not give. The manager caps cuts per
analysis (``max_cuts``, default 3), which bounds the first cost at ``(1 + max_cuts) x alpha`` and
the second at ``max_cuts`` stretches of evidence dropped; ticks that are themselves bad (a wrong
clock) are covered by no null hypothesis at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .._exceptions import InputError
from ..audit._binding import record_of as _record
from ..calibration import canonical_json

#: What the gate's guarantee assumes of a cut (in every cut record and answer).
NOTE = ("each cut restarts the gate's bet from an earlier state: with the ticks superseded by earlier cuts having had their chance"
        " to fire, the analysis' false-rollback probability is bounded by (1 + number of cuts) x alpha, not alpha, and only if no cut"
        " point was chosen by looking at the evidence; the superseded ticks' evidence is dropped, so a cut can also turn a regression"
        " building up into a promotion the evidence would not give")

__all__ = ["NOTE", "apply_cut", "cut_payload", "cut_refusal", "effective", "is_cut", "superseded_ranges"]


def is_cut(payload: str | None) -> bool:
    """Whether a stored tick payload is a cut entry (its canonical JSON has the single key ``cut``)."""
    return isinstance(payload, str) and payload.startswith('{"cut":')


def cut_payload(to_tick: int, reason: str) -> str:
    """The stored entry of a cut back to ``to_tick``.

    >>> cut_payload(10, "tick 10 stamped a year ahead")
    '{"cut":{"reason":"tick 10 stamped a year ahead","to":10}}'
    """
    return canonical_json({"cut": {"reason": reason, "to": int(to_tick)}})


def effective(payloads: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """The stored entries ``(seq, payload)`` the analysis stands on: every tick and void in order, each
    cut dropping the entries from its ``to`` on.

    >>> effective([(0, "a"), (1, "b"), (2, cut_payload(1, "x")), (3, "c")])
    [(0, 'a'), (3, 'c')]
    """
    eff: list[tuple[int, str]] = []
    for seq, p in payloads:
        if is_cut(p):
            del eff[int(json.loads(p)["cut"]["to"]):]
        else:
            eff.append((seq, p))
    return eff


def cut_refusal(aid: str, rows: Any) -> str | None:
    """Why analysis ``aid`` refuses a cut-back, from all its stored rows (``rows``: its
    :class:`~deploysignal.store.StoredRows`, superseded entries included), or None: a stored void
    entry, a rollback in any chained gate record, or any final gate record that is not ``proceed``.
    These are facts of the stored sequence: a later tick or an earlier cut does not hide them."""
    for seq, p in rows.ticks:
        if isinstance(p, str) and p.startswith('{"void":'):
            return f"analysis {aid!r} is voided (stored entry {seq}): a void is final, a cut-back cannot take it back"
    for seq, text in rows.audit:
        if seq < 0 or not isinstance(text, str) or '"family":"gate"' not in text:
            continue
        for ln in text.split("\n"):
            rec = _record(ln)
            if rec is None or rec.get("family") != "gate":
                continue
            if rec.get("verdict") == "rollback":
                return f"analysis {aid!r} has rolled back (tick {rec.get('tick')}): a rollback stands, a cut-back cannot take it back"
            if rec.get("final") is True and rec.get("verdict") != "proceed":
                return (f"analysis {aid!r} ended with a final {rec.get('verdict')!r} (tick {rec.get('tick')}): it refused promotion,"
                        " and a cut-back must not end in a promotion the analysis had refused")
    return None


def superseded_ranges(seqs: Sequence[int]) -> list[list[int]]:
    """Sorted stored sequence numbers as inclusive ranges.

    >>> superseded_ranges([5, 6, 7, 9, 12, 13])
    [[5, 7], [9, 9], [12, 13]]
    """
    out: list[list[int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def apply_cut(fresh: Callable[[], Any], decode: Callable[[Any, Sequence[Any]], list[Any]], eff: Sequence[tuple[int, str]],
              payload: str, seq: int) -> tuple[Any, dict[str, Any], list[tuple[int, str]]]:
    """Rebuild an engine for the cut ``payload`` stored at ``seq``: ``fresh()`` is a new engine, ``eff``
    the entries in effect before the cut. Returns (engine standing after the cut, its chained ``cut``
    record, the entries in effect after it). :class:`InputError` when ``to`` is not a tick of ``eff``."""
    cut = json.loads(payload)["cut"]
    to, reason = int(cut["to"]), str(cut["reason"])
    if not eff:
        raise InputError("the analysis has no tick in effect: there is nothing to cut back", column="to_tick")
    if not 0 <= to < len(eff):
        raise InputError(f"to_tick must be a tick of the analysis (0 to {len(eff) - 1}), got {to}", column="to_tick")
    eng = fresh()
    eng.ingest(decode(eng, [json.loads(p) for _, p in eff[:to]]))
    eng.supersede(seq + 1)
    last = eng.last
    record = {"family": "cut", "tick": seq, "to_tick": to, "reason": reason, "superseded": superseded_ranges([s for s, _ in eff[to:]]),
              "verdict": "pending" if last is None else last.verdict, "final": False if last is None else bool(last.final), "note": NOTE}
    return eng, record, list(eff[:to])
