"""What the dashboard draws for one analysis, derived from its verified audit chain.

:func:`analysis_view` turns the chained audit lines of an analysis (and, when the caller has them, the
stored tick payloads) into the JSON the dashboard pages and ``deploysignal report`` draw: per family or
metric the log-evidence against its bound at every tick, the verdict timeline, the drivers, the effect
sizes with their confidence sequences (split mode), and the signals of the canary against its control.

Guarantee: every number in the view is read from a line of a hash chain that :func:`verify_chain`
accepted up to the given head; a chain that does not verify gives a view with ``verified.ok = False``
and no series at all (the pages show the reason instead of plots: never an unverified picture). Tick
payloads are used only where the tick's ``input`` record (store binding 1) holds their SHA-256; any
other payload is left out and the view says why. Assumption: SHA-256 second-preimage resistance (as
for the chain itself, ``deploysignal.audit._binding``). Pure functions, no I/O.

References
----------
Haber, S. and Stornetta, W. S. (1991). How to time-stamp a digital document. *Journal of Cryptology* 3(2).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..audit._binding import digest
from ..audit._chain import verify_chain

__all__ = ["NO_HEAD", "VIEW_VERSION", "analysis_view"]

#: Version of the view's JSON shape (the dashboard script checks it).
VIEW_VERSION = 1
_NOT_EVIDENCE = frozenset({"header", "input", "checkpoint", "gate", "cut"})
#: How the gate's ``fail_closed`` names an operator's void (``deploysignal.gate.Gate.void``).
VOID_PREFIX = "voided by operator: "
#: What a view of a chain not checked against a published head says (a truncated tail passes unseen).
NO_HEAD = "not checked against a published head: missing lines at the end are not detected"


def _no_constant(token: str) -> None:
    """``json.loads``' hook for ``NaN``/``Infinity`` in the fleet and migration files: refused (they are
    written without them; a view holds only numbers the page can draw). An audit chain needs no hook:
    :func:`verify_chain` re-encodes every record canonically, which refuses them."""
    raise ValueError(f"{token} is not a number this file may hold")


def _evidence(rec: dict[str, Any]) -> float | None:
    """The log-evidence of a family record: ``log_wealth`` (one/two-sample) or ``log_evidence`` (split)."""
    v = rec.get("log_wealth", rec.get("log_evidence"))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _signals(payloads: dict[int, dict[str, Any]], ticks: list[int | None]) -> dict[str, Any] | None:
    """Per-tick signal values of the canary and its control (one/two-sample ticks), or event rates and
    units per arm (split ticks), aligned with ``ticks`` (the stored sequence number of each tick in
    effect, the key of ``payloads``); None without any usable payload."""
    if not payloads:
        return None
    first = next(iter(payloads.values()))
    if "split" in first:  # split: its tiers summed per arm
        payloads = {t: {"arms": _sum_tiers(p.get("split") or [])} for t, p in payloads.items()}
        first = next(iter(payloads.values()))
    if "arms" in first:  # split: events / units per arm and metric
        names = sorted({m for p in payloads.values() for a in p.get("arms", {}).values() for m in (a.get("events") or {})})
        arms = sorted({a for p in payloads.values() for a in p.get("arms", {})})
        series: dict[str, dict[str, list[float | None]]] = {}
        for arm in arms:
            series[arm] = {"units": [_num(payloads.get(t, {}).get("arms", {}).get(arm, {}).get("units")) for t in ticks]}
            for m in names:
                col: list[float | None] = []
                for t in ticks:
                    a = payloads.get(t, {}).get("arms", {}).get(arm, {})
                    e, u = _num((a.get("events") or {}).get(m)), _num(a.get("units"))
                    col.append(None if e is None or not u else e / u)
                series[arm][f"{m} (rate)"] = col
        return {"kind": "arms", "arms": arms, "names": ["units", *[f"{m} (rate)" for m in names]], "series": series}
    names = sorted({s for p in payloads.values() for s in (p.get("values") or {})})
    out: dict[str, Any] = {"kind": "canary_control", "names": names, "canary": {}, "control": None}
    for s in names:
        out["canary"][s] = [_num((payloads.get(t, {}).get("values") or {}).get(s)) for t in ticks]
    if any(p.get("control") for p in payloads.values()):
        out["control"] = {s: [_num((payloads.get(t, {}).get("control") or {}).get(s)) for t in ticks] for s in names}
    return out


def _sum_tiers(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The arms of a stored split tick's tier entries, units and event counts summed over the tiers."""
    arms: dict[str, dict[str, Any]] = {}
    for e in entries:
        for arm, a in (e.get("arms") or {}).items():
            acc = arms.setdefault(arm, {"units": 0.0, "events": {}})
            acc["units"] += _num(a.get("units")) or 0.0
            for m, k in (a.get("events") or {}).items():
                acc["events"][m] = acc["events"].get(m, 0.0) + (_num(k) or 0.0)
    return arms


def analysis_view(
    analysis_id: str,
    lines: Sequence[str],
    *,
    head: str | None = None,
    payloads: Sequence[tuple[int, str | None]] = (),
    rows: Sequence[tuple[int, str]] | None = None,
    listing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dashboard's view of one analysis.

    Parameters
    ----------
    analysis_id
        Its id (shown, not checked).
    lines
        Its chained audit lines, header first (``GET /v1/analyses/{id}/audit`` or an audit file).
    head
        The published ``audit_head``: with it a truncated tail is detected too.
    payloads
        ``(seq, stored payload text)`` of its tick rows; used only when ``rows`` gives the audit row of
        each ``seq`` and that row's ``input`` record holds the payload's SHA-256.
    rows
        ``(seq, lines)`` of its audit rows as stored (the lines of one stored entry joined by newlines).
    listing
        Extra fields for the page header (created, project), shown as given.

    Returns
    -------
    dict
        ``verified`` (``ok``, ``lines``, ``head``, ``reason``, ``head_checked``; without a ``head``,
        ``note`` = :data:`NO_HEAD`: a file cut short after any line still verifies), and when ok:
        ``header`` (settings, certification), ``ticks`` and ``timestamps``, ``families`` (log-evidence
        and bound per tick), ``verdicts`` (the gate's verdict per tick; a family without an e-value,
        such as the rules family B, has its ``statistic`` per tick instead of evidence), ``last`` (the
        last gate record in effect: the verdict endpoint's ``gate``), ``fail_closed`` (its reason, or
        None), ``drivers``, ``effects`` (split: estimate and confidence-sequence bounds per tick),
        ``events`` (cut-backs, the void, the first fail-closed tick), ``signals`` and ``notes`` (what
        is not shown, and why). The series hold the evaluated ticks in effect: a cut-back's superseded
        ticks are dropped (as the service's cut-back drops them), a void is an event, not a tick.

    Examples
    --------
    >>> from deploysignal.audit._chain import chain_records
    >>> ls, _ = chain_records([{"family": "header", "settings": {"mode": "one-sample"}},
    ...                       {"family": "A", "tick": 0, "log_wealth": 0.5, "threshold": 3.9, "drivers": []},
    ...                       {"family": "gate", "tick": 0, "verdict": "pending", "final": False}])
    >>> v = analysis_view("a", ls)
    >>> v["verified"]["ok"], v["families"][0]["evidence"], v["verdicts"]
    (True, [0.5], ['pending'])
    >>> analysis_view("a", [ls[0], ls[2]])["verified"]["ok"]
    False
    """
    rep = verify_chain(list(lines), head=head)
    verified: dict[str, Any] = {"ok": rep.ok, "lines": rep.n, "head": rep.head, "reason": rep.reason, "bad_line": rep.bad_line,
                                "head_checked": head is not None}
    if head is None:
        verified["note"] = NO_HEAD
    view: dict[str, Any] = {"view_version": VIEW_VERSION, "kind": "analysis", "id": analysis_id, **(listing or {}), "verified": verified}
    if not rep.ok:
        return view
    recs = [json.loads(ln)["record"] for ln in lines]  # verify_chain re-encoded each: no NaN/Infinity here
    header = recs[0] if recs and recs[0].get("family") == "header" else {}
    settings = header.get("settings") or {}
    entries, last_gate, events, notes = _in_effect(recs[1:])
    ticks = [int(e["gate"].get("tick", i)) for i, e in enumerate(entries)]
    n = len(entries)
    fams: dict[str, dict[str, Any]] = {}
    effects: dict[str, dict[str, list[float | None]]] = {}
    for i, e in enumerate(entries):  # a family without a record at a tick: a gap (None), not a repeat
        for name, fr in e["families"].items():
            f = fams.setdefault(name, {"name": name, "role": fr.get("role"), "evidence": [None] * n, "bound": [None] * n,
                                       "statistic": [None] * n, "fired_at": None})
            f["evidence"][i], f["bound"][i], f["statistic"][i] = _evidence(fr), _num(fr.get("threshold")), _num(fr.get("statistic"))
            if fr.get("fire") and f["fired_at"] is None:
                f["fired_at"] = ticks[i]
            eff = fr.get("effect")
            if isinstance(eff, dict) and "ratio" in eff:
                ef = effects.setdefault(name, {"estimate": [None] * n, "lower": [None] * n, "upper": [None] * n})
                for key, src in (("estimate", "ratio"), ("lower", "lower"), ("upper", "upper")):
                    ef[key][i] = _num(eff.get(src))
    last_recs = {name: r for e in entries for name, r in e["families"].items()}
    drivers = [{"family": n_, "drivers": list(r.get("drivers") or []), "reason": r.get("fire_reason") or r.get("reason") or "",
                "fire": bool(r.get("fire")), "evidence": _evidence(r), "bound": _num(r.get("threshold")),
                **({"p_value": r["p_value"]} if _num(r.get("p_value")) is not None else {}),
                **({"effect": r["effect"]} if isinstance(r.get("effect"), dict) else {})}
               for n_, r in sorted(last_recs.items())]
    sig_payloads, why = _bound_payloads(payloads, rows)
    if why:
        notes.append(why)
    if settings.get("mode") in ("one-sample", "two-sample") or (settings and "mode" not in settings and not effects):
        notes.append("effect sizes with confidence sequences are reported in split mode; this mode reports each family's evidence, p-value and drivers")
    if settings.get("mode") == "one-sample":
        notes.append("one-sample mode: the baseline is the compiled config's per-cell model on a transformed scale, not a series; the signal plots show the canary's values as ingested")
    view.update({
        "header": {k: header.get(k) for k in ("settings", "certification", "baseline_version", "gate_version", "store_binding") if k in header},
        "mode": settings.get("mode", "split" if effects else None),
        "ticks": ticks, "timestamps": [_num(e["gate"].get("timestamp")) for e in entries],
        "verdicts": [str(e["gate"].get("verdict")) for e in entries], "last": last_gate,
        "fail_closed": (last_gate or {}).get("fail_closed") or None,
        "families": sorted(fams.values(), key=lambda f: f["name"]),
        "effects": effects, "drivers": drivers, "events": events,
        "signals": _signals({e["seq"]: sig_payloads[e["seq"]] for e in entries if e["seq"] in sig_payloads}, [e["seq"] for e in entries]),
        "notes": notes,
    })
    return view


def _in_effect(recs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]], list[str]]:
    """The evaluated ticks the analysis stands on, in order, each ``{"gate", "families", "seq"}`` (its gate
    record, the records of the families it closes, the stored sequence number its ``input`` record names,
    None without one); the last gate record in effect (the verdict); the events (cut-backs, the void, the
    first fail-closed tick); notes.

    A ``cut`` record drops the entries from its ``to_tick`` on, as the service's cut-back does
    (``deploysignal.service._cut.effective``): the superseded entries stay in the chain, not in the view.
    A void is an entry without telemetry (the verdict stands on it) but not an evaluated tick: it is
    left off the series and shown as an event. Every record is read from the verified chain.

    >>> recs = [{"family": "A", "tick": t, "log_wealth": 0.1 * t} if k == 0 else {"family": "gate", "tick": t, "verdict": "pending"}
    ...         for t in range(3) for k in range(2)]
    >>> recs.insert(4, {"family": "cut", "to_tick": 1, "reason": "x", "superseded": [[1, 1]]})
    >>> recs[5:] = [{"family": "A", "tick": 1, "log_wealth": 9.0}, {"family": "gate", "tick": 1, "verdict": "pending"}]
    >>> entries, last, events, _ = _in_effect(recs)
    >>> [e["families"]["A"]["log_wealth"] for e in entries], [e["kind"] for e in events]
    ([0.0, 9.0], ['cut'])
    >>> last["tick"]
    1
    """
    entries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    notes: list[str] = []
    fams: dict[str, dict[str, Any]] = {}
    seq: int | None = None
    for rec in recs:
        fam = rec.get("family")
        if fam == "input":
            seq = rec.get("tick") if isinstance(rec.get("tick"), int) else None
        elif fam == "cut":
            to = rec.get("to_tick")
            if isinstance(to, int) and not isinstance(to, bool) and 0 <= to <= len(entries):
                del entries[to:]
            else:
                notes.append(f"a cut record names to_tick {to!r}, not a tick in effect ({len(entries)}): nothing dropped for it")
            events.append({"kind": "cut", "at": len(entries), **{k: rec.get(k) for k in ("to_tick", "reason", "superseded")}})
            fams, seq = {}, None
        elif fam == "gate":
            entries.append({"gate": rec, "families": fams, "seq": seq})
            fams, seq = {}, None
        elif fam not in _NOT_EVIDENCE:
            fams[str(fam)] = rec
    last = entries[-1]["gate"] if entries else None
    out: list[dict[str, Any]] = []
    closed = voided = False
    for e in entries:  # the void's own tick: the first whose gate record names a void (later ones carry it too)
        reason = e["gate"].get("fail_closed")
        if isinstance(reason, str) and reason.startswith(VOID_PREFIX) and not voided:
            events.append({"kind": "void", "at": len(out), "tick": e["gate"].get("tick"), "reason": reason})
            closed = voided = True
            continue
        if isinstance(reason, str) and reason and not closed:
            events.append({"kind": "fail_closed", "at": len(out), "tick": e["gate"].get("tick"), "reason": reason})
            closed = True
        out.append(e)
    return out, last, events, notes


def _bound_payloads(payloads: Sequence[tuple[int, str | None]],
                    rows: Sequence[tuple[int, str]] | None) -> tuple[dict[int, dict[str, Any]], str | None]:
    """The tick payloads whose SHA-256 the chain holds, keyed by the stored sequence number their
    ``input`` record names (a tick cut back and ingested again is another entry), and why any are left out."""
    if not payloads or rows is None:
        return {}, "signal values: not in an audit log (its input records hold only their SHA-256); open the analysis from its store or the service to see them"
    by_seq = dict(rows)
    out: dict[int, dict[str, Any]] = {}
    unbound = 0
    for seq, text in payloads:
        first = (by_seq.get(seq) or "").split("\n", 1)[0]
        try:
            rec = json.loads(first).get("record", {}) if first else {}
        except ValueError:
            rec = {}
        if text is None or rec.get("family") != "input" or rec.get("tick") != seq or rec.get("sha256") != digest(text):
            unbound += 1
            continue
        p = json.loads(text)
        if "cut" in p or "void" in p:
            continue
        out[seq] = p
    why = (f"signal values of {unbound} stored tick(s) are not shown: the chain does not hold their SHA-256"
           " (an analysis written before store binding 1, or a row that does not match)") if unbound else None
    return out, why
