"""Revision identity for the integrations: which analysis answers a controller's request.

An analysis judges one revision of a workload (Flagger's ``checksum``, Argo Rollouts' pod-template-hash
passed as an analysis argument, or any key the caller chooses). A request names either

- a **template**, a revision and (for Argo and Flagger, always) the **subject** being rolled out
  (``<namespace>.<name>`` of the Canary or Rollout): the analysis is ``<template>@<subject>@<revision>``
  (``<template>@<revision>`` when the caller names no subject), created from the stored template on
  first sight (compiled config reference, gate settings, optional Prometheus spec), so a new revision
  always starts a new analysis and the old one stays listable in the template's history. A checksum or
  pod-template-hash is the same for the same pod spec in another namespace or cluster: the subject in
  the id keeps one workload's verdict from answering for another's. A subject that would make the id
  longer than 128 characters is replaced by ``h`` and the first 16 hex digits of its SHA-256; or
- an explicit **analysis** id and a revision: the first revision seen binds the analysis for good; a
  request for another revision, or (once bound) a binding request naming no revision, is refused
  (:class:`RevisionRefused`), never answered with the bound revision's verdict. An analysis no
  revision has bound yet answers a request without a revision (a plain verdict read).

Guarantee: a verdict returned through :meth:`IntegrationContext.resolve` with ``bind`` was computed by
an analysis bound to the revision the request named, and (template) created for the subject it named;
without ``bind`` (reads such as Flagger's confirm-rollout, which carries the previous revision) it is
the named analysis' verdict.
The binding is stored (``analysis_revisions``) before the first verdict is served, so it survives
restarts and is shared by every process on the same store.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._exceptions import DeploySignalError, InputError
from ..store import Conflict, IntegrationTables, NotFound, SQLStore

if TYPE_CHECKING:
    from ._scope import Principal, ScopeGuard

__all__ = ["REVISION_PATTERN", "SUBJECT_PATTERN", "IntegrationContext", "Resolution", "RevisionRefused", "TooManyLiveAnalyses", "template_analysis_id"]

#: a revision key: Flagger checksums and pod-template-hashes are short alphanumerics
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: a template id leaves room for ``@<revision>`` inside the 128-character analysis id
TEMPLATE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
#: the workload a revision belongs to: ``<namespace>.<name>`` (Kubernetes names: no ``@``)
SUBJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,506}$"
_ID_MAX = 128


def template_analysis_id(template: str, revision: str, subject: str | None = None) -> str:
    """The analysis id of ``revision`` of ``subject`` created from ``template``.

    >>> template_analysis_id("api", "85d557f47b", "prod.api"), template_analysis_id("api", "85d557f47b")
    ('api@prod.api@85d557f47b', 'api@85d557f47b')
    >>> template_analysis_id("api", "85d557f47b", "prod." + "x" * 200)
    'api@hbf20f1d61b6548e5@85d557f47b'
    """
    if subject is None:
        return f"{template}@{revision}"
    aid = f"{template}@{subject}@{revision}"
    if len(aid) > _ID_MAX:
        aid = f"{template}@h{hashlib.sha256(subject.encode()).hexdigest()[:16]}@{revision}"
    return aid


class RevisionRefused(DeploySignalError):
    """The analysis is bound to another revision than the request's: its verdict does not answer it."""


class TooManyLiveAnalyses(RevisionRefused):
    """A template already has ``max_live`` undecided analyses: no new one is created (answered like a
    refused revision: never a pass)."""


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

    ``verdict(aid)`` is the analysis' verdict body, ``principal(authorization, token)`` the caller's
    read or write token entry (``None`` = unauthenticated), ``guard`` the scope checks
    (``_scope.py``), ``admit(principal, aid)`` the rate limits, ``create(aid, body)`` creates an analysis from a template body (as
    ``POST /v1/analyses`` does, including starting its Prometheus poller), ``now()`` the timestamp for
    stored rows, ``max_live`` the most undecided (not final) analyses one template may have at once,
    ``max_events`` the controller events kept.
    """

    store: SQLStore
    tables: IntegrationTables
    verdict: Callable[[str], dict[str, Any]]
    principal: Callable[[str | None, str | None], Principal | None]
    guard: ScopeGuard
    admit: Callable[..., None]
    create: Callable[[str, dict[str, Any]], None]
    now: Callable[[], str]
    max_live: int = 20
    max_events: int = 10_000

    def resolve(self, *, analysis: str | None, template: str | None, revision: str | None, bind: bool, create: bool,
                subject: str | None = None) -> Resolution:
        """The analysis answering a request (see the module docstring); ``subject`` (templates only)
        is the workload ``<namespace>.<name>`` the revision belongs to.

        Raises
        ------
        InputError
            Both or neither of ``analysis`` / ``template`` given, a template without a revision, or a
            malformed id.
        NotFound
            The named analysis or template does not exist.
        RevisionRefused
            ``bind`` and the analysis is bound to another revision, or is bound and the request
            names no revision.
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
            if subject is not None and not re.match(SUBJECT_PATTERN, subject):
                raise InputError(f"subject {subject[:80]!r} must match {SUBJECT_PATTERN}", column="subject")
            return self._from_template(template, revision, create, subject)
        assert analysis is not None
        self.store.get(analysis)  # NotFound
        if revision is None or not bind:
            b = self.tables.get_revision(analysis)
            if bind and b is not None:
                raise RevisionRefused(f"analysis {analysis!r} judges revision {b.revision!r}; the request names no revision,"
                                      " so its verdict does not answer it (pass the revision: Argo ?revision=, Flagger checksum)")
            return Resolution(analysis, None if b is None else b.revision, None if b is None else b.template_id, True)
        b = self.tables.get_revision(analysis) or self.tables.bind_revision(analysis, None, revision, self.now())
        if b.revision != revision:
            raise RevisionRefused(f"analysis {analysis!r} judges revision {b.revision!r}, not {revision!r}: its verdict does not answer"
                                  " for another revision (use a template so each revision gets its own analysis)")
        return Resolution(analysis, revision, b.template_id, True)

    def _from_template(self, template: str, revision: str, create: bool, subject: str | None) -> Resolution:
        aid = template_analysis_id(template, revision, subject)
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
            live = [b.analysis_id for b in self.tables.revisions_of(template) if not self.verdict(b.analysis_id)["final"]]
            if len(live) >= self.max_live:
                raise TooManyLiveAnalyses(f"template {template!r} has {len(live)} undecided analyses (max_live_per_template {self.max_live}),"
                                          f" e.g. {live[-1]!r}: no analysis is created for {aid!r}")
            try:
                self.create(aid, got[0])
            except Conflict:  # another request (or process) created it first
                pass
        b = self.tables.get_revision(aid) or self.tables.bind_revision(aid, template, revision, self.now())
        if b.revision != revision:  # only if someone bound the id by hand: refuse rather than answer
            raise RevisionRefused(f"analysis {aid!r} judges revision {b.revision!r}, not {revision!r}")
        return Resolution(aid, revision, template, True)
