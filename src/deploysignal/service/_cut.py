"""Cut-back: an operator takes an analysis back to where it stood before one of its ticks.

For a wedged clock (a tick stamped in the future was accepted, and every correct tick since is out of
order) or a bad batch (a misconfigured source), the operator names the first tick to drop
(``to_tick``, the gate's tick number as the audit records and the verdict show it). The cut is stored
as one more entry of the analysis' tick sequence, ``{"cut": {"reason": ..., "to": to_tick}}``; nothing
is deleted: the ticks from ``to_tick`` on stay in the store and in the chain, and the chained ``cut``
record names them (``superseded``: ranges of stored sequence numbers). The engine is rebuilt from the
ticks kept (:func:`effective`) and continues from there, so replay and ``audit verify`` re-derive it.

What a cut-back does not do: take back a rollback (a rolled-back analysis refuses the cut: rollbacks
are sticky, a cut-back never turns one into a promotion) or a void (a voided analysis refuses it too);
undo what an integration already did with a verdict given before the cut (a ``proceed`` Argo acted on
stays acted on); or cut an analysis written before the store binding (it has no checkpoints to
rebuild from). No I/O.

What is guaranteed after a cut: the gate's bounds (``P(false rollback) <= alpha``, Ville's inequality
on each family's e-process) hold along the ticks in effect when the cut point is chosen without
looking at the evidence (a clock fault, a known bad source). A cut chosen *because of* the evidence is
a restart of the bet on new data from an earlier state; repeating it until a family fires makes false
rollbacks more likely than alpha (and cutting away harmful ticks costs power). The cut record and
the answer say so (``note``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .._exceptions import InputError
from ..calibration import canonical_json

#: What the gate's guarantee assumes of a cut (in every cut record and answer).
NOTE = ("the gate's error bounds hold along the ticks in effect only if this cut point was not chosen by looking at the evidence;"
        " the superseded ticks' evidence is dropped")

__all__ = ["NOTE", "apply_cut", "cut_payload", "effective", "is_cut", "superseded_ranges"]


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
    if not 0 <= to < len(eff):
        raise InputError(f"to_tick must be a tick of the analysis (0 to {len(eff) - 1}), got {to}", column="to_tick")
    eng = fresh()
    eng.ingest(decode(eng, [json.loads(p) for _, p in eff[:to]]))
    eng.supersede(seq + 1)
    last = eng.last
    record = {"family": "cut", "tick": seq, "to_tick": to, "reason": reason, "superseded": superseded_ranges([s for s, _ in eff[to:]]),
              "verdict": "pending" if last is None else last.verdict, "final": False if last is None else bool(last.final), "note": NOTE}
    return eng, record, list(eff[:to])
