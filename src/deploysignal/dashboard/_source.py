"""Views of analyses read from a store or from audit files (the I/O edge of the dashboard).

:func:`store_view` reads an analysis' rows in one transaction and derives its view from them with
:func:`~deploysignal.dashboard._view.analysis_view` (the chain checked against the stored head, tick
payloads only where the chain holds their SHA-256). :func:`audit_file_view` does the same for an audit
file (``GET /v1/analyses/{id}/audit``, ``deploysignal gate --audit``): no signal values there.
:func:`report_data` assembles what ``deploysignal report`` embeds.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import __version__
from .._exceptions import ConfigError
from ._view import analysis_view

__all__ = ["ID_NOTE", "SUFFIXES", "audit_file_view", "listing_of_view", "name_of_file", "read_audit_file", "report_data", "store_view"]


def store_view(store: Any, aid: str) -> tuple[dict[str, Any], str]:
    """(view, audit NDJSON text) of analysis ``aid`` of ``store``, read in one transaction."""
    row, rows = store.stored_rows(aid)
    lines = [ln for _, text in rows.audit for ln in text.split("\n")]
    listing = {"created": row.created, "stored_entries": row.n_ticks, "baseline_version": row.spec.get("config_version"),
               **({"project": row.spec["project"]} if row.spec.get("project") is not None else {})}
    view = analysis_view(aid, lines, head=row.audit_head, payloads=rows.ticks, rows=rows.audit, listing=listing)
    return view, "".join(ln + "\n" for ln in lines)


def read_audit_file(path: Path) -> list[str]:
    """The non-blank lines of an audit file (bytes that are not UTF-8 kept, so the chain check names them)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such audit file")
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    return [ln for ln in text.splitlines() if ln.strip()]


#: File-name endings stripped to name an analysis or a page after its file (longest first); analysis
#: ids may hold dots (Flagger's ``<name>.<namespace>``), so a name is never cut at its first dot.
SUFFIXES = (".audit.ndjson", ".audit.jsonl", ".ndjson", ".jsonl", ".json")
#: What a view named after its file says: nothing in an audit chain names the analysis.
ID_NOTE = "named after its file: the analysis id is not verified (the audit chain does not hold it)"


def name_of_file(path: Path) -> str:
    """The name of a file without one known ending (:data:`SUFFIXES`).

    >>> name_of_file(Path("podinfo.test.audit.ndjson")), name_of_file(Path("a.b.ndjson")), name_of_file(Path("x.txt"))
    ('podinfo.test', 'a.b', 'x.txt')
    """
    for suf in SUFFIXES:
        if path.name.endswith(suf) and len(path.name) > len(suf):
            return path.name[: -len(suf)]
    return path.name


def audit_file_view(path: Path, head: str | None = None, analysis_id: str | None = None) -> tuple[dict[str, Any], str]:
    """(view, audit text) of an audit file; the analysis is ``analysis_id`` or named after the file
    (:func:`name_of_file`: ``x.audit.ndjson`` -> ``x``), and the view says that name is not verified.
    Without ``head`` the view says the file's end is not checked (:data:`~deploysignal.dashboard._view.NO_HEAD`)."""
    lines = read_audit_file(path)
    aid = analysis_id if analysis_id is not None else name_of_file(path)
    view = analysis_view(aid, lines, head=head, listing={"id_note": ID_NOTE if analysis_id is None else "given by --id: not verified (the audit chain does not hold it)"})
    return view, "".join(ln + "\n" for ln in lines)


def listing_of_view(view: dict[str, Any]) -> dict[str, Any]:
    """A row of the analyses list (the shape of ``GET /v1/analyses``) for a view."""
    last = view.get("last") or {}
    summary = None if not view["verified"]["ok"] else {"verdict": last.get("verdict", "pending"), "final": bool(last.get("final")),
                                                       "tick": last.get("tick"), "fired_families": last.get("fired_families", [])}
    return {"id": view["id"], "n_ticks": len(view.get("ticks", [])), "summary": summary, "created": view.get("created"),
            "baseline_version": view.get("baseline_version") or (view.get("header") or {}).get("baseline_version"),
            **({} if view["verified"]["ok"] else {"integrity_error": view["verified"]["reason"]})}


def report_data(views: Iterable[tuple[dict[str, Any], str]], fleet: dict[str, dict[str, Any]] | None = None,
                migration: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a report embeds: the views, their audit text (for the download button), fleet and migration views."""
    vs = list(views)
    return {"version": __version__, "analyses": [listing_of_view(v) for v, _ in vs], "views": {v["id"]: v for v, _ in vs},
            "audit": {v["id"]: a for v, a in vs}, "fleet": fleet or {}, "migration": migration or {}}
