"""The dashboard's routes on the service: ``/ui/`` (page and packaged assets), the view and report of an analysis.

The page and assets carry no data and need no token; the data comes from ``GET /v1/analyses/{aid}/view``
and ``GET /v1/analyses/{aid}/report``, which need a read token (and its scope) like every other read. The
view is derived from the analysis' stored rows after the service has loaded it, i.e. after the integrity
check of ``deploysignal.service._integrity`` (a store that does not match the chain answers 409, as the
verdict endpoint does), and its chain is checked against the stored head again when the view is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ._page import ASSETS, CSP, asset, page_html
from ._source import report_data, store_view

__all__ = ["REPORT_HEADERS", "add_dashboard_routes", "add_static_routes", "page_response", "unverified_detail"]

_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
#: Headers of a report download: opened from the service's origin it runs sandboxed (no token, no same-origin reads)
REPORT_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


def unverified_detail(view: dict[str, Any]) -> str | None:
    """Why a report of ``view`` is refused (its audit chain does not verify), or None.

    >>> unverified_detail({"verified": {"ok": False, "bad_line": 3, "reason": "hash mismatch"}})
    'audit chain does not verify at line 3: hash mismatch; no report'
    """
    v = view["verified"]
    return None if v["ok"] else f"audit chain does not verify at line {v['bad_line']}: {v['reason']}; no report"


def page_response() -> HTMLResponse:
    """The dashboard page with its security headers."""
    return HTMLResponse(page_html(), headers=_HEADERS)


def add_static_routes(app: FastAPI) -> None:
    """``/`` and ``/ui`` (redirects), ``/ui/`` (the page) and ``/ui/assets/{name}`` (packaged files only)."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    def ui_redirect() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)

    @app.api_route("/ui/", methods=["GET", "HEAD"], include_in_schema=False)
    def ui_page() -> HTMLResponse:
        return page_response()

    @app.get("/ui/assets/{name}", include_in_schema=False)
    def ui_asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"no dashboard asset {name!r}")
        return Response(asset(name), media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


def add_dashboard_routes(app: FastAPI, store: Any, load: Callable[[str], Any], read: list[Any]) -> None:
    """Add the dashboard to the service: the static routes and, with the ``read`` dependencies, the view
    and report of an analysis. ``load(aid)`` brings the analysis up in the service (integrity-checked)."""
    add_static_routes(app)

    def _view(aid: str) -> tuple[dict[str, Any], str]:
        load(aid)  # NotFound: 404; IntegrityError: 409 (the service's handlers)
        return store_view(store, aid)

    @app.get("/v1/dashboard/sources", dependencies=read, tags=["dashboard"])
    def sources() -> dict[str, list[str]]:
        """The fleet and migration pages this server has data for: none in the service, which stores
        analyses only (``deploysignal ui --fleet/--migration`` and ``deploysignal report`` show those)."""
        return {"fleet": [], "migration": []}

    @app.get("/v1/analyses/{aid}/view", dependencies=read, tags=["dashboard"])
    def analysis_view(aid: str) -> dict[str, Any]:
        """What the dashboard draws for an analysis, derived from its audit chain (checked against the
        stored head) and the tick rows the chain holds the SHA-256 of: per family the log-evidence and its
        bound per tick, the verdict per tick, drivers, effect sizes with confidence sequences (split mode),
        the canary's and control's signals (docs/dashboard.md)."""
        return _view(aid)[0]

    @app.get("/v1/analyses/{aid}/report", dependencies=read, tags=["dashboard"], response_class=HTMLResponse)
    def analysis_report(aid: str) -> HTMLResponse:
        """The analysis as one self-contained HTML file (the dashboard's views, its audit log, no external
        resources), for attaching to a change ticket; the same file as ``deploysignal report``. 409 when
        the audit chain does not verify against the stored head (no report of an unverified chain)."""
        view, audit = _view(aid)
        if (why := unverified_detail(view)) is not None:
            raise HTTPException(409, why)
        return HTMLResponse(page_html(report_data([(view, audit)])),
                            headers={**REPORT_HEADERS, "Content-Disposition": f'attachment; filename="{aid}.report.html"'})
