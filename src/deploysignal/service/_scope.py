"""Token scopes: which analyses and templates a bearer token may touch.

A token entry (``tokens.yaml``) may carry a **project** and/or **analyses** (glob patterns, ``fnmatch``
syntax, case-sensitive). A token with neither is unscoped and keeps the meaning tokens had before
scopes existed: its role on every analysis. A scoped token may touch an analysis only when

* ``project`` is set: the analysis belongs to that project (``project`` in the create request, or the
  project of the template it was created from; an analysis created without a project belongs to none,
  so no project-scoped token reaches it), and
* ``analyses`` is set: the analysis id matches one of the globs. Template ids are matched by the same
  globs (``api*`` covers template ``api`` and its analyses ``api@<namespace>.<name>@<revision>``).

Anything else is refused with 403 naming the token, the analysis and the scope (:class:`OutOfScope`);
lists (analyses, templates, Kayenta configs, ``/metrics`` series) show only what the token may see.
A project-scoped token creates analyses and templates in its project only (the project is filled in
when the request names none). A token scoped only by ``analyses`` globs creates analyses and templates
with **no project** only (a request naming a project is refused, and so is replacing a template that
belongs to a project): otherwise it could put analyses, templates and their ``/metrics`` series into
the lists and dashboards of a project it has no part in. Records not tied to one analysis (Flagger's recorded events) need an
unscoped token.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from .._exceptions import DeploySignalError
from ..store import IntegrationTables, NotFound, SQLStore
from ._revisions import template_analysis_id

__all__ = ["PROJECT_PATTERN", "OutOfScope", "Principal", "ScopeGuard"]

#: a project name (the same characters as an analysis id)
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class OutOfScope(DeploySignalError):
    """The token may not touch this analysis or template (403)."""


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the matched token entry's name, role and scope (``key`` identifies the token
    for rate limiting: a prefix of its hash).

    >>> p = Principal("ci", "write", project="shop", analyses=("checkout-*",))
    >>> p.may("checkout-7", "shop"), p.may("checkout-7", "bank"), p.may("search-1", "shop")
    (True, False, False)
    >>> Principal("admin", "write").may("anything", None)
    True
    """

    name: str
    role: str
    project: str | None = None
    analyses: tuple[str, ...] | None = None
    key: str = ""
    rate_limit: str | None = None
    tick_rate_limit: str | None = None

    @property
    def scoped(self) -> bool:
        return self.project is not None or self.analyses is not None

    def may(self, ident: str, project: str | None) -> bool:
        """Whether this token may touch the analysis or template ``ident`` of ``project``."""
        if self.project is not None and project != self.project:
            return False
        return self.analyses is None or any(fnmatch.fnmatchcase(ident, g) for g in self.analyses)

    def check_store(self, ident: str, project: str | None, what: str = "analysis") -> None:
        """Raise :class:`OutOfScope` unless this token may store (create, or replace) ``ident`` in
        ``project``: :meth:`may`, and a token scoped only by ``analyses`` globs stores nothing in a project."""
        if self.scoped and self.project is None and project is not None:
            raise OutOfScope(f"token {self.name!r} is scoped to {self.describe()} without a project: it creates and replaces only {what}s"
                             f" with no project; {what} {ident!r} (project {project!r}) is outside its scope")
        self.check(ident, project, what, named=True)

    def describe(self) -> str:
        parts = ([f"project {self.project!r}"] if self.project is not None else []) + ([f"analyses {list(self.analyses)}"] if self.analyses is not None else [])
        return " and ".join(parts) or "everything"

    def check(self, ident: str, project: str | None, what: str = "analysis", *, named: bool = False) -> None:
        """Raise :class:`OutOfScope` unless :meth:`may`. The message names ``project`` only when the
        caller ``named`` it (a create request); a stored analysis' project is not disclosed to a token
        outside it."""
        if not self.may(ident, project):
            belongs = "" if not named else f" (project {project!r})" if project is not None else " (no project)"
            raise OutOfScope(f"token {self.name!r} is scoped to {self.describe()}: {what} {ident!r}{belongs} is outside its scope")


class ScopeGuard:
    """Scope checks that need the store (the project of an existing analysis or template)."""

    def __init__(self, store: SQLStore, tables: IntegrationTables) -> None:
        self.store, self.tables = store, tables

    def analysis_project(self, aid: str) -> tuple[bool, str | None]:
        """(exists, project) of analysis ``aid``."""
        try:
            return True, self.store.get(aid).spec.get("project")
        except NotFound:
            return False, None

    def template_project(self, tid: str) -> tuple[bool, str | None]:
        got = self.tables.get_template(tid)
        return (False, None) if got is None else (True, got[0].get("project"))

    def check_analysis(self, p: Principal, aid: str) -> None:
        """Refuse an existing analysis outside ``p``'s scope (a missing one is left to the route: 404).
        An id outside the token's globs is refused whether it exists or not."""
        if not p.scoped:
            return
        if p.project is None:
            p.check(aid, None)
            return
        exists, project = self.analysis_project(aid)
        if exists:
            p.check(aid, project)
        elif p.analyses is not None:
            p.check(aid, p.project)

    def check_target(self, p: Principal, *, analysis: str | None = None, template: str | None = None, revision: str | None = None,
                     subject: str | None = None, replace: bool = False) -> None:
        """Scope check of an integration request naming an analysis, or a template and a revision (and
        for Argo and Flagger the subject): the template, and the analysis it resolves to (existing, or
        about to be created in the template's project), must both be in scope. ``replace``: the request
        replaces the template (:meth:`Principal.check_store` on its current project)."""
        if not p.scoped:
            return
        if analysis is not None:
            self.check_analysis(p, analysis)
        if template is None:
            return
        exists, project = self.template_project(template)
        if not exists:
            return
        p.check(template, project, "template")
        if replace:
            p.check_store(template, project, "template")
        if revision is not None:
            aid = template_analysis_id(template, revision, subject)
            a_exists, a_project = self.analysis_project(aid)
            p.check(aid, a_project if a_exists else project)

    def visible_analyses(self, p: Principal, rows: list[Any]) -> list[Any]:
        """The analysis rows ``p`` may see."""
        return rows if not p.scoped else [r for r in rows if p.may(r.id, r.spec.get("project"))]
