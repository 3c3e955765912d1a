"""A Python port of Flagger's webhook caller and canary phase machine, for conformance tests.

Ported from fluxcd/flagger at commit 15bd6ad555e6c935da55f0ab95977be74c149bd6 (2026-07-21, after
v1.44.0):

- ``pkg/controller/webhook.go``: ``callWebhook`` (POST JSON, timeout 10 s unless set, go-retryablehttp
  with ``RetryMax = retries``: a transport error or a 5xx other than 501 is retried, an exhausted retry
  is an error; then **a status above 202 is an error**, so 203-299 fail too), ``CallWebhook`` (payload
  name, namespace, phase, checksum, metadata), ``CallEventWebhook`` (metadata eventMessage, eventType,
  timestamp; the hook's own metadata added without overriding them), ``canaryChecksum`` (hash of the
  status' LastAppliedSpec and TrackedConfigs: it changes when the status is synced to a new revision);
- ``pkg/controller/scheduler_hooks.go``: a failed ``confirm-rollout`` sets phase Waiting and holds;
  ``confirm-traffic-increase`` holds the step; ``confirm-promotion`` sets WaitingPromotion (again
  failing in WaitingPromotion: B/G iterations - 1); ``pre-rollout`` returns false; ``rollback`` hook:
  **2xx = roll back**; ``post-rollout`` result ignored;
- ``pkg/controller/scheduler.go`` ``advanceCanary``: confirm-rollout on a new revision (before the status,
  hence the checksum, is synced), revision change during analysis resets the status, rollback hooks
  (Progressing, Waiting, WaitingPromotion), Promoting -> Finalising -> Succeeded, the failed-check
  threshold (Progressing or WaitingPromotion: ``FailedChecks >= threshold`` rolls back), pre-rollout
  hooks when weight and iterations are 0 (failure: FailedChecks + 1), else rollout hooks
  (``runAnalysis``; failure: FailedChecks + 1), then the canary strategy (``nextStepWeight``,
  ``confirm-traffic-increase``, ``runCanary``: weight steps, confirm-promotion at max weight) or the
  blue/green strategy when ``iterations`` > 0 (``runBlueGreen``); ``rollback`` runs the post-rollout
  hooks with phase Failed; ``pkg/controller/events.go``: events go to the ``event`` hooks, errors only logged;
- ``pkg/apis/flagger/v1beta1/canary.go``: ``GetAnalysisThreshold`` (default 1), ``DeploymentStrategy``.

What is abstracted: Kubernetes (the canary is always ready, routes always apply, no mirroring, a
service-mesh provider so traffic shifts), and time: one :meth:`Canary.advance` is one analysis interval.
Built-in metric checks are not configured (the deploysignal webhooks are the only checks).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

INITIALIZED, WAITING, PROGRESSING, WAITING_PROMOTION, PROMOTING, FINALISING, SUCCEEDED, FAILED = (
    "Initialized", "Waiting", "Progressing", "WaitingPromotion", "Promoting", "Finalising", "Succeeded", "Failed")


_CLIENT = httpx.Client()  # one connection pool (go-retryablehttp wraps a pooling http.Client)


def call_webhook(url: str, payload: Mapping[str, Any], timeout: str = "", retries: int = 0, *, timeout_override: float | None = None) -> str | None:
    """``callWebhook``: None on success, else the error text. ``timeout_override`` (seconds) replaces
    the parsed ``timeout`` so tests can inject slow answers cheaply."""
    t = timeout_override if timeout_override is not None else _duration(timeout or "10s")
    attempts = retries + 1
    last = ""
    for _ in range(attempts):
        try:
            r = _CLIENT.post(url, content=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, timeout=t)
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
            continue  # retryablehttp retries connection errors
        if r.status_code == 429 or (r.status_code >= 500 and r.status_code != 501):  # retryablehttp v0.7.8 DefaultRetryPolicy (429 too)
            last = f"giving up: status {r.status_code}"
            continue
        if r.status_code > 202:
            return r.text or f"status {r.status_code}"
        return None
    return f"giving up after {attempts} attempt(s): {last}"


def _duration(s: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for u in ("ms", "s", "m", "h"):
        if s.endswith(u):
            return float(s[: -len(u)]) * units[u]
    raise ValueError(f"bad duration {s!r}")


@dataclass
class Webhook:
    name: str
    type: str
    url: str
    timeout: str = ""
    retries: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Canary:
    """A Canary's analysis spec and status, advanced one interval at a time against real webhooks."""

    name: str
    namespace: str
    webhooks: list[Webhook]
    threshold: int = 0
    max_weight: int = 0
    step_weight: int = 0
    step_weights: list[int] = field(default_factory=list)
    iterations: int = 0
    timeout_override: float | None = None
    # status
    phase: str = INITIALIZED
    canary_weight: int = 0
    failed_checks: int = 0
    status_iterations: int = 0
    last_applied_spec: str = "initial"
    target_spec: str = "initial"
    promoted_spec: str = "initial"
    calls: list[tuple[str, str, bool]] = field(default_factory=list)  # (hook type, checksum, ok)
    events: list[str] = field(default_factory=list)

    @classmethod
    def from_yaml(cls, doc: Mapping[str, Any], url_map: Mapping[str, str] | None = None, **kw: Any) -> Canary:
        """From a Canary document; ``url_map`` rewrites URL prefixes (the docs' in-cluster address -> a test server)."""
        a = doc["spec"]["analysis"]
        hooks = []
        for w in a.get("webhooks", []):
            url = w["url"]
            for old, new in (url_map or {}).items():
                url = url.replace(old, new)
            hooks.append(Webhook(w["name"], w.get("type", "rollout") or "rollout", url, w.get("timeout", ""), int(w.get("retries", 0)), dict(w.get("metadata") or {})))
        return cls(doc["metadata"]["name"], doc["metadata"]["namespace"], hooks, threshold=int(a.get("threshold", 0)), max_weight=int(a.get("maxWeight", 0)),
                   step_weight=int(a.get("stepWeight", 0)), step_weights=list(a.get("stepWeights", [])), iterations=int(a.get("iterations", 0)), **kw)

    # ------------------------------------------------------------------ helpers
    def checksum(self) -> str:
        """``canaryChecksum``: a hash of the status' LastAppliedSpec (no tracked configs here)."""
        return hashlib.sha256(self.last_applied_spec.encode()).hexdigest()[:10]

    def threshold_(self) -> int:
        return self.threshold if self.threshold > 0 else 1

    def _max_weight(self) -> int:
        if self.step_weights:
            return min(100, self.step_weights[-1])
        return self.max_weight if self.max_weight > 0 else 100

    def _next_step_weight(self) -> int:
        if self.step_weight > 0 or not self.step_weights:
            return self.step_weight
        max_step = 100 - self.canary_weight
        if max_step == 0:
            return 1
        if self.canary_weight == 0:
            return min(max_step, self.step_weights[0])
        for i in range(len(self.step_weights) - 1):
            if self.step_weights[i] == self.canary_weight:
                return min(max_step, self.step_weights[i + 1] - self.canary_weight)
        return max_step

    def _call(self, w: Webhook, phase: str) -> bool:
        payload = {"name": self.name, "namespace": self.namespace, "phase": phase, "checksum": self.checksum(), "metadata": w.metadata}
        err = call_webhook(w.url, payload, w.timeout, w.retries, timeout_override=self.timeout_override)
        self.calls.append((w.type, self.checksum(), err is None))
        return err is None

    def _hooks(self, kind: str) -> list[Webhook]:
        return [w for w in self.webhooks if (w.type or "rollout") == kind]

    def event(self, message: str, event_type: str = "Normal") -> None:
        """``sendEventToWebhook``: errors are only logged by Flagger."""
        self.events.append(message)
        for w in self._hooks("event"):
            meta = {"eventMessage": message, "eventType": event_type, "timestamp": "0"}
            for k, v in w.metadata.items():
                meta.setdefault(k, v)
            payload = {"name": self.name, "namespace": self.namespace, "phase": self.phase, "checksum": self.checksum(), "metadata": meta}
            call_webhook(w.url, payload, w.timeout, w.retries, timeout_override=self.timeout_override)

    # ------------------------------------------------------------------ hooks (scheduler_hooks.go)
    def _confirm_rollout(self) -> bool:
        for w in self._hooks("confirm-rollout"):
            if not self._call(w, self.phase):
                if self.phase != WAITING:
                    self.phase = WAITING
                    self.event("Halt advancement waiting for approval", "Warning")
                return False
        return True

    def _confirm_traffic_increase(self) -> bool:
        return all(self._call(w, PROGRESSING) for w in self._hooks("confirm-traffic-increase"))

    def _confirm_promotion(self) -> bool:
        for w in self._hooks("confirm-promotion"):
            if not self._call(w, PROGRESSING):
                if self.phase != WAITING_PROMOTION:
                    self.phase = WAITING_PROMOTION
                else:
                    self.status_iterations = self.iterations - 1
                return False
        return True

    def _pre_rollout(self) -> bool:
        return all(self._call(w, PROGRESSING) for w in self._hooks("pre-rollout"))

    def _post_rollout(self, phase: str) -> None:
        for w in self._hooks("post-rollout"):
            if not self._call(w, phase):
                return

    def _rollback_hooks(self) -> bool:
        return any(self._call(w, self.phase) for w in self._hooks("rollback"))

    def _run_analysis(self) -> bool:
        return all(self._call(w, PROGRESSING) for w in self._hooks("rollout"))

    # ------------------------------------------------------------------ scheduler.go
    def new_revision(self, spec: str) -> None:
        """The workload's pod spec changed (a new revision was applied)."""
        self.target_spec = spec

    def _target_changed(self) -> bool:
        return self.target_spec != self.last_applied_spec

    def _sync_status(self, phase: str) -> None:
        self.phase, self.canary_weight, self.failed_checks, self.status_iterations = phase, 0, 0, 0
        self.last_applied_spec = self.target_spec

    def _rollback(self) -> None:
        self.canary_weight = 0
        self.phase = FAILED
        self.last_applied_spec = self.target_spec
        self.event("Canary failed! Scaling down", "Warning")
        self._post_rollout(FAILED)

    def advance(self) -> str:
        """One ``advanceCanary`` pass; returns the phase."""
        should_advance = self.phase in (PROGRESSING, WAITING, WAITING_PROMOTION, PROMOTING, FINALISING) or self._target_changed()
        # checkCanaryStatus
        if self.phase not in (PROGRESSING, WAITING_PROMOTION, PROMOTING, FINALISING):
            if should_advance:
                if not self._confirm_rollout():
                    return self.phase
                self.event("New revision detected! Scaling up")
                self._sync_status(PROGRESSING)
            return self.phase
        # hasCanaryRevisionChanged
        if self.phase in (PROGRESSING, WAITING_PROMOTION) and self._target_changed():
            self.event("New revision detected! Restarting analysis")
            self._sync_status(PROGRESSING)
            return self.phase
        if self.phase in (PROGRESSING, WAITING, WAITING_PROMOTION) and self._rollback_hooks():
            self.event("Rolling back: manual webhook invoked", "Warning")
            self._rollback()
            return self.phase
        if self.phase == PROMOTING:
            self.canary_weight = 0
            self.phase = FINALISING
            return self.phase
        if self.phase == FINALISING:
            self.phase = SUCCEEDED
            self.promoted_spec = self.last_applied_spec
            self._post_rollout(SUCCEEDED)
            self.event("Promotion completed!")
            return self.phase
        if self.phase in (PROGRESSING, WAITING_PROMOTION) and self.failed_checks >= self.threshold_():
            self._rollback()
            return self.phase
        if self.canary_weight == 0 and self.status_iterations == 0:
            if not self._pre_rollout():
                self.failed_checks += 1
                return self.phase
        elif not self._run_analysis():
            self.failed_checks += 1
            return self.phase
        if self.iterations > 0:
            self._run_blue_green()
            return self.phase
        if self._next_step_weight() > 0:
            if self.phase not in (PROMOTING, WAITING_PROMOTION, FINALISING) and not self._confirm_traffic_increase():
                return self.phase
            self._run_canary()
        return self.phase

    def _run_canary(self) -> None:
        mx = self._max_weight()
        if self.canary_weight < mx:
            self.canary_weight = min(100, self.canary_weight + self._next_step_weight())
            return
        if not self._confirm_promotion():
            return
        self.phase = PROMOTING

    def _run_blue_green(self) -> None:
        if self.iterations > self.status_iterations:
            self.status_iterations += 1
            return
        if not self._confirm_promotion():
            return
        if self.iterations == self.status_iterations:
            self.status_iterations += 1
            return
        if self.iterations < self.status_iterations:
            self.phase = PROMOTING

    def run(self, max_intervals: int, between: Any = None) -> str:
        """Advance until Succeeded or Failed or ``max_intervals``; ``between(k, canary)`` runs before each."""
        for k in range(max_intervals):
            if between is not None:
                between(k, self)
            if self.advance() in (SUCCEEDED, FAILED):
                break
        return self.phase
