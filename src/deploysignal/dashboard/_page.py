"""The dashboard page: served with its assets (service, ``deploysignal ui``) or as one self-contained file (report).

The page, its script and stylesheet and the vendored charting library (uPlot 1.6.32, MIT, from the npm
package ``uplot``; ``static/uPlot.LICENSE``) are package data, so the dashboard works without a CDN or any
network access. :func:`page_html` gives the page that loads the assets from ``assets/``; with ``data`` it
inlines the assets and the views (``deploysignal report``): one file, same views, opens offline.
Deterministic: same data, same bytes. No I/O beyond reading the package's own files.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["ASSETS", "CSP", "asset", "page_html"]

#: the files ``/ui/assets/{name}`` serves, with their media types (nothing else is served)
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
#: Content-Security-Policy of the served page: scripts only from the service itself (a value shown on the
#: page can never run as script and read the token); styles inline too (uPlot sets element styles)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@cache
def asset(name: str) -> str:
    """The text of a packaged asset (a name of :data:`ASSETS` or the page itself)."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _inline_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<`` written as ``\\u003c`` (no ``</script>``, no ``<!--``)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def page_html(data: dict[str, Any] | None = None) -> str:
    """The dashboard page; with ``data`` (``{"analyses", "views", "audit", "fleet", "migration", "version"}``)
    the self-contained report.

    >>> "assets/dashboard.js" in page_html()
    True
    >>> r = page_html({"analyses": [], "views": {}, "audit": {}, "version": "x"})
    >>> "assets/" in r, '<script id="ds-data" type="application/json">' in r
    (False, True)
    """
    html = asset("dashboard.html")
    if data is None:
        css = '<link rel="stylesheet" href="assets/uPlot.min.css">\n<link rel="stylesheet" href="assets/dashboard.css">'
        js = '<script src="assets/uPlot.iife.min.js"></script>\n<script src="assets/dashboard.js"></script>'
        blob = ""
    else:
        css = f"<style>\n{asset('uPlot.min.css')}\n{asset('dashboard.css')}\n</style>"
        js = f"<script>\n{asset('uPlot.iife.min.js')}\n</script>\n<script>\n{asset('dashboard.js')}\n</script>"
        blob = f'<script id="ds-data" type="application/json">{_inline_json(data)}</script>'
    return html.replace("<!--ds:css-->", css).replace("<!--ds:data-->", blob).replace("<!--ds:js-->", js)
