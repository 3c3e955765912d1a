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

__all__ = ["VIEW_VERSION", "analysis_view"]

#: Version of the view's JSON shape (the dashboard script checks it).
VIEW_VERSION = 1
_NOT_EVIDENCE = frozenset({"header", "input", "checkpoint", "gate", "cut", "void"})


def _evidence(rec: dict[str, Any]) -> float | None:
    """The log-evidence of a family record: ``log_wealth`` (one/two-sample) or ``log_evidence`` (split)."""
    v = rec.get("log_wealth", rec.get("log_evidence"))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _signals(payloads: dict[int, dict[str, Any]], ticks: list[int]) -> dict[str, Any] | None:
    """Per-tick signal values of the canary and its control (one/two-sample ticks), or event rates and
    units per arm (split ticks), aligned with ``ticks``; None without any usable payload."""
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
        ``verified`` (``ok``, ``lines``, ``head``, ``reason``), and when ok: ``header`` (settings,
        certification), ``ticks`` and ``timestamps``, ``families`` (log-evidence and bound per tick),
        ``verdicts`` (the gate's verdict per tick; a family without an e-value, such as the rules
        family B, has its ``statistic`` per tick instead of evidence), ``last`` (the last gate record), ``drivers``,
        ``effects`` (split: estimate and confidence-sequence bounds per tick), ``signals`` and
        ``notes`` (what is not shown, and why).

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
    view: dict[str, Any] = {"view_version": VIEW_VERSION, "kind": "analysis", "id": analysis_id, **(listing or {}),
                            "verified": {"ok": rep.ok, "lines": rep.n, "head": rep.head, "reason": rep.reason, "bad_line": rep.bad_line}}
    if not rep.ok:
        return view
    recs = [json.loads(ln)["record"] for ln in lines]
    header = recs[0] if recs and recs[0].get("family") == "header" else {}
    settings = header.get("settings") or {}
    ticks: list[int] = []
    stamps: list[float | None] = []
    verdicts: list[str] = []
    fams: dict[str, dict[str, Any]] = {}
    effects: dict[str, dict[str, list[float | None]]] = {}
    events: list[dict[str, Any]] = []
    pending: dict[str, dict[str, Any]] = {}
    last_gate: dict[str, Any] | None = None
    for rec in recs[1:]:
        fam = rec.get("family")
        if fam in ("cut", "void"):
            events.append({"kind": fam, "at": len(ticks), **{k: v for k, v in rec.items() if k != "family"}})
            continue
        if fam in _NOT_EVIDENCE - {"gate"}:
            continue
        if fam != "gate":
            pending[str(fam)] = rec
            continue
        k = len(ticks)  # one gate record closes each evaluated tick
        ticks.append(int(rec.get("tick", k)))
        stamps.append(_num(rec.get("timestamp")))
        verdicts.append(str(rec.get("verdict")))
        last_gate = rec
        for name, fr in pending.items():
            f = fams.setdefault(name, {"name": name, "role": fr.get("role"), "evidence": [None] * k, "bound": [None] * k, "statistic": [None] * k, "fired_at": None})
            f["evidence"].append(_evidence(fr))
            f["bound"].append(_num(fr.get("threshold")))
            f["statistic"].append(_num(fr.get("statistic")))
            if fr.get("fire") and f["fired_at"] is None:
                f["fired_at"] = ticks[-1]
            eff = fr.get("effect")
            if isinstance(eff, dict) and "ratio" in eff:
                e = effects.setdefault(name, {"estimate": [None] * k, "lower": [None] * k, "upper": [None] * k})
                for key, src in (("estimate", "ratio"), ("lower", "lower"), ("upper", "upper")):
                    e[key].append(_num(eff.get(src)))
        for f in fams.values():  # a family without a record at this tick: a gap, not a repeat
            if len(f["evidence"]) < len(ticks):
                for key in ("evidence", "bound", "statistic"):
                    f[key].append(None)
        for e in effects.values():
            for col in e.values():
                if len(col) < len(ticks):
                    col.append(None)
        pending = {}
    drivers = [{"family": n, "drivers": list(r.get("drivers") or []), "reason": r.get("fire_reason") or r.get("reason") or "",
                "fire": bool(r.get("fire")), "evidence": _evidence(r), "bound": _num(r.get("threshold")),
                **({"p_value": r["p_value"]} if _num(r.get("p_value")) is not None else {}),
                **({"effect": r["effect"]} if isinstance(r.get("effect"), dict) else {})}
               for n, r in _last_records(recs).items()]
    notes: list[str] = []
    sig_payloads, why = _bound_payloads(payloads, rows, ticks)
    if why:
        notes.append(why)
    if settings.get("mode") in ("one-sample", "two-sample") or (settings and "mode" not in settings and not effects):
        notes.append("effect sizes with confidence sequences are reported in split mode; this mode reports each family's evidence, p-value and drivers")
    if settings.get("mode") == "one-sample":
        notes.append("one-sample mode: the baseline is the compiled config's per-cell model on a transformed scale, not a series; the signal plots show the canary's values as ingested")
    view.update({
        "header": {k: header.get(k) for k in ("settings", "certification", "baseline_version", "gate_version", "store_binding") if k in header},
        "mode": settings.get("mode", "split" if effects else None),
        "ticks": ticks, "timestamps": stamps, "verdicts": verdicts, "last": last_gate,
        "families": sorted(fams.values(), key=lambda f: f["name"]),
        "effects": effects, "drivers": drivers, "events": events,
        "signals": _signals(sig_payloads, ticks), "notes": notes,
    })
    return view


def _last_records(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each evidence family."""
    out: dict[str, dict[str, Any]] = {}
    for r in recs:
        if r.get("family") not in _NOT_EVIDENCE:
            out[str(r.get("family"))] = r
    return dict(sorted(out.items()))


def _bound_payloads(payloads: Sequence[tuple[int, str | None]], rows: Sequence[tuple[int, str]] | None,
                    ticks: list[int]) -> tuple[dict[int, dict[str, Any]], str | None]:
    """The tick payloads whose SHA-256 the chain holds (keyed by gate tick), and why any are left out."""
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
        if text is None or rec.get("family") != "input" or rec.get("sha256") != digest(text):
            unbound += 1
            continue
        p = json.loads(text)
        if "cut" in p or "void" in p:
            continue
        out[int(rec.get("tick", seq))] = p
    if len(out) > len(ticks):  # ticks cut back and ingested again: the last stored one per tick counts
        out = {t: out[t] for t in ticks if t in out}
    why = (f"signal values of {unbound} stored tick(s) are not shown: the chain does not hold their SHA-256"
           " (an analysis written before store binding 1, or a row that does not match)") if unbound else None
    return out, why
