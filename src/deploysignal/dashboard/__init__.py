"""Dashboard of analyses, fleets and migrations: served by ``deploysignal serve`` at ``/ui/``, by
``deploysignal ui`` over a local store or audit files, and written as one file by ``deploysignal report``.

See ``docs/dashboard.md``. The views (:func:`analysis_view`, :func:`fleet_view`, :func:`migration_view`) are pure functions of
verified inputs; the page draws them and recomputes nothing.
"""

from ._fleet_view import fleet_view
from ._migration_view import migration_view
from ._page import page_html
from ._source import audit_file_view, report_data, store_view
from ._view import VIEW_VERSION, analysis_view

__all__ = ["VIEW_VERSION", "analysis_view", "audit_file_view", "fleet_view", "migration_view", "page_html", "report_data", "store_view"]
