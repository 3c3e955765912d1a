"""Revision identity for the integrations: which analysis answers a controller's request.

An analysis judges one revision of a workload (Flagger's ``checksum``, Argo Rollouts' pod-template-hash
passed as an analysis argument, or any key the caller chooses). A request names either

- a **template** and a revision: the analysis is ``<template>@<revision>``, created from the stored
  template on first sight (compiled config reference, gate settings, optional Prometheus spec), so a
  new revision always starts a new analysis and the old one stays listable in the template's history; or
- an explicit **analysis** id and (optionally) a revision: the first revision seen binds the analysis
  for good; a request for another revision is refused (:class:`RevisionRefused`), never answered with
  the bound revision's verdict.

Guarantee: a verdict returned through :meth:`IntegrationContext.resolve` was computed by an analysis
bound to the revision the request named (or, when the request named none, by the analysis it named).
The binding is stored (``analysis_revisions``) before the first verdict is served, so it survives
restarts and is shared by every process on the same store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._exceptions import DeploySignalError, InputError
from ..store import Conflict, IntegrationTables, NotFound, SQLStore

__all__ = ["REVISION_PATTERN", "IntegrationContext", "Resolution", "RevisionRefused"]

#: a revision key: Flagger checksums and pod-template-hashes are short alphanumerics
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: a template id leaves room for ``@<revision>`` inside the 128-character analysis id
TEMPLATE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class RevisionRefused(DeploySignalError):
    """The analysis is bound to another revision than the request's: its verdict does not answer it."""


@dataclass(frozen=True)
class Resolution:
    """Which analysis answers a request; ``exists`` is False when a template has no analysis for the
    revision yet and the caller did not ask to create one."""

    analysis: str
    revision: str | None
    template: str | None
    exists: bool


@dataclass
class IntegrationContext:
    """What the Argo, Flagger and template routers share with the app (built in ``create_app``).

    ``verdict(aid)`` is the analysis' verdict body, ``role(authorization, token)`` the caller's role
    (``None`` = unauthenticated), ``create(aid, body)`` creates an analysis from a template body (as
    ``POST /v1/analyses`` does, including starting its Prometheus poller), ``now()`` the timestamp for
    stored rows.
    """

    store: SQLStore
    tables: IntegrationTables
    verdict: Callable[[str], dict[str, Any]]
    role: Callable[[str | None, str | None], str | None]
    create: Callable[[str, dict[str, Any]], None]
    now: Callable[[], str]

    def resolve(self, *, analysis: str | None, template: str | None, revision: str | None, bind: bool, create: bool) -> Resolution:
        """The analysis answering a request (see the module docstring).

        Raises
        ------
        InputError
            Both or neither of ``analysis`` / ``template`` given, a template without a revision, or a
            malformed id.
        NotFound
            The named analysis or template does not exist.
        RevisionRefused
            ``bind`` and the analysis is bound to another revision.
        """
        if (analysis is None) == (template is None):
            raise InputError("name exactly one of an analysis or a template", column="analysis")
        if revision is not None and not re.match(REVISION_PATTERN, revision):
            raise InputError(f"revision {revision[:80]!r} must match {REVISION_PATTERN}", column="revision")
        if template is not None:
            if not re.match(TEMPLATE_PATTERN, template):
                raise InputError(f"template id {template[:80]!r} must match {TEMPLATE_PATTERN}", column="template")
            if revision is None:
                raise InputError("a template needs the revision it judges (Flagger checksum, pod-template-hash, ...)", column="revision")
            return self._from_template(template, revision, create)
        assert analysis is not None
        self.store.get(analysis)  # NotFound
        if revision is None or not bind:
            b = self.tables.get_revision(analysis)
            return Resolution(analysis, None if b is None else b.revision, None if b is None else b.template_id, True)
        b = self.tables.get_revision(analysis) or self.tables.bind_revision(analysis, None, revision, self.now())
        if b.revision != revision:
            raise RevisionRefused(f"analysis {analysis!r} judges revision {b.revision!r}, not {revision!r}: its verdict does not answer"
                                  " for another revision (use a template so each revision gets its own analysis)")
        return Resolution(analysis, revision, b.template_id, True)

    def _from_template(self, template: str, revision: str, create: bool) -> Resolution:
        aid = f"{template}@{revision}"
        try:
            self.store.get(aid)
            exists = True
        except NotFound:
            exists = False
        if not exists:
            got = self.tables.get_template(template)
            if got is None:
                raise NotFound(f"no analysis template {template!r}")
            if not create:
                return Resolution(aid, revision, template, False)
            try:
                self.create(aid, got[0])
            except Conflict:  # another request (or process) created it first
                pass
        b = self.tables.get_revision(aid) or self.tables.bind_revision(aid, template, revision, self.now())
        if b.revision != revision:  # only if someone bound the id by hand: refuse rather than answer
            raise RevisionRefused(f"analysis {aid!r} judges revision {b.revision!r}, not {revision!r}")
        return Resolution(aid, revision, template, True)
