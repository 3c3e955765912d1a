"""Prometheus pull source: evaluate one PromQL query per signal (canary and control) at each tick.

Missing data is never invented: an empty result, ``NaN``, ``±Inf`` or several series for one query give
NaN for that signal at that tick, which the gate counts as missing (it extends, never rolls back, on
missing data). Queries are evaluated at fixed grid times (``time = k * interval``) through
``/api/v1/query`` (one tick) or ``/api/v1/query_range`` (backfill), and the poller reads a grid time
``t`` only once it has settled (``t <= now - settle_seconds``, the server's scrape interval plus scrape
timeout): a live read, a backfill and a second process then see the same stored samples and give the
same ticks (the store's batch id makes the second one a no-op). An expression whose value at ``t``
depends on more than the samples at or before ``t`` (none in PromQL without ``@``/``offset`` tricks)
or a server whose data arrive later than ``settle_seconds`` (remote write, federation) breaks that.

:class:`PrometheusPuller` is the service's poller. A poll the server cannot answer ingests nothing (the
gate's verdict cannot move on data that was never read); the missed grid times are read with
``query_range`` when the server answers again, bounded by ``max_backfill_seconds``. Its state
(``running``, ``failing``, ``stopped``) is reported by ``GET /v1/analyses/{id}``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from pydantic import Field, StrictFloat, StrictInt, model_validator

from .._exceptions import InputError
from ..store import NotFound
from ._prometheus_http import Connection, PromAPIError, PromUnavailable, SecretPolicy, iso_utc, query_instant, query_range

__all__ = ["PrometheusPuller", "PrometheusSource", "PullSpec", "differing_labels", "parse_instant"]

log = logging.getLogger(__name__)

#: points per ``query_range`` request (Prometheus refuses more than 11,000)
RANGE_CHUNK = 1000


def parse_instant(payload: Any, query: str = "") -> float:
    """Value of a Prometheus instant-query response (``/api/v1/query`` JSON); NaN when unusable.

    >>> parse_instant({"status": "success", "data": {"resultType": "vector", "result": []}})
    nan
    >>> parse_instant({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2.5"]}]}})
    2.5
    >>> parse_instant({"status": "success", "data": {"resultType": "scalar", "result": [1, "NaN"]}})
    nan
    """
    if not isinstance(payload, Mapping) or payload.get("status") != "success":
        log.warning("prometheus query %r failed: %s", query, payload.get("error") if isinstance(payload, Mapping) else payload)
        return math.nan
    data = payload.get("data") or {}
    rtype, result = data.get("resultType"), data.get("result")
    try:
        if rtype == "vector":
            if not result:
                return math.nan
            if len(result) > 1:
                log.warning("prometheus query %r returned %d series; aggregate it to one (treated as missing)", query, len(result))
                return math.nan
            raw = result[0]["value"][1]
        elif rtype == "scalar":
            raw = result[1]
        else:
            log.warning("prometheus query %r returned a %s; use an instant vector or scalar (treated as missing)", query, rtype)
            return math.nan
        v = float(raw)
    except (KeyError, IndexError, TypeError, ValueError):
        log.warning("prometheus query %r: malformed result %r (treated as missing)", query, result)
        return math.nan
    return v if math.isfinite(v) else math.nan


def differing_labels(series: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    """Labels whose values are not the same in every series (absent = ``""``), with the values seen.

    >>> differing_labels([{"job": "api", "pod": "a"}, {"job": "api", "pod": "b"}])
    {'pod': ['a', 'b']}
    """
    keys = sorted({k for s in series for k in s})
    out = {}
    for k in keys:
        vals = sorted({s.get(k, "") for s in series})
        if len(vals) > 1:
            out[k] = vals
    return out


class PullSpec(Connection):
    """Pull mode of a service analysis: the connection (:class:`~deploysignal.sources.Connection`) plus
    PromQL per signal and the poller's schedule.

    Attributes
    ----------
    interval_seconds : float
        Grid step: ticks are evaluated at ``k * interval_seconds`` (epoch seconds).
    canary, control : dict
        Signal name -> PromQL expression giving one series (control in two-sample mode only).
    max_ticks : int, optional
        The poller stops after the analysis holds this many ticks.
    max_backfill_seconds : float
        After the poller could not poll (server down, service down), at most this much of the past is
        read back with ``query_range``; older missed grid times are skipped (counted in the poller status).
    failing_after : int
        Consecutive failed polls after which the poller reports ``failing``.
    stop_after_failures : int or None
        Consecutive failed polls after which the poller stops (``stopped``); None = never.
    """

    interval_seconds: StrictFloat | StrictInt = Field(60, ge=1, le=86_400)
    canary: dict[str, str] = Field(min_length=1)
    control: dict[str, str] | None = None
    max_ticks: StrictInt | None = Field(None, ge=1)
    max_backfill_seconds: StrictFloat | StrictInt = Field(3600, ge=0, le=7 * 86_400)
    failing_after: StrictInt = Field(3, ge=1, le=1_000_000)
    stop_after_failures: StrictInt | None = Field(60, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _order(self) -> PullSpec:
        if self.stop_after_failures is not None and self.stop_after_failures < self.failing_after:
            raise ValueError("stop_after_failures must be >= failing_after")
        return self


class PrometheusSource:
    """Poll PromQL queries for canary and (optionally) control at given evaluation times.

    Parameters
    ----------
    url : str
        Prometheus base URL, e.g. ``http://prometheus:9090`` (ignored when ``connection`` is given).
    canary, control : dict
        Signal name -> PromQL expression returning one series.
    client : httpx.Client, optional
        Injected client (tests pass a ``MockTransport``); by default one built from ``connection`` (its
        authentication, headers, TLS and timeout) or a plain one with ``timeout``.
    connection : Connection, optional
        How to reach the server; ``policy`` restricts where its secrets may be read from.
    retries : int
        Extra attempts of a request the server could not answer.
    """

    def __init__(self, url: str, canary: Mapping[str, str], control: Mapping[str, str] | None = None, *, client: httpx.Client | None = None,
                 timeout: float = 5.0, retries: int = 1, connection: Connection | None = None, policy: SecretPolicy | None = None) -> None:
        if not canary:
            raise InputError("at least one canary query is needed", column="canary")
        self.url = (connection.url if connection is not None else url).rstrip("/")
        self.canary = dict(canary)
        self.control = None if control is None else dict(control)
        if client is None:
            client = connection.client(policy) if connection is not None else httpx.Client(timeout=timeout)
        self._client = client
        self.retries = retries

    def _query(self, expr: str, at: float) -> float:
        for attempt in range(self.retries + 1):
            try:
                r = self._client.get(f"{self.url}/api/v1/query", params={"query": expr, "time": repr(at)})
                return parse_instant(r.json(), expr)
            except (httpx.HTTPError, ValueError) as exc:
                if attempt == self.retries:
                    log.warning("prometheus query %r at %s failed (%s); treated as missing", expr, at, exc)
        return math.nan

    def poll(self, at: float) -> dict[str, Any]:
        """One tick at evaluation time ``at`` (epoch seconds): ``{timestamp, values, control}`` with None
        = missing; a failed request is missing too (use :meth:`fetch` to tell failures apart)."""

        def run(qs: Mapping[str, str]) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for name, expr in qs.items():
                v = self._query(expr, at)
                out[name] = None if math.isnan(v) else v
            return out

        return {"timestamp": float(at), "values": run(self.canary), "control": None if self.control is None else run(self.control)}

    def _retry(self, fn: Callable[[], Any]) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except PromUnavailable:
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")

    def _queries(self) -> list[tuple[str, str, str]]:
        out = [("canary", n, q) for n, q in self.canary.items()]
        return out + [("control", n, q) for n, q in (self.control or {}).items()]

    def fetch(self, times: Sequence[float]) -> list[dict[str, Any]]:
        """Ticks at ``times`` (one grid time, or equally spaced grid times in increasing order): one
        instant query per expression for one time, ``query_range`` (in chunks of :data:`RANGE_CHUNK`
        points) for several. Empty, non-finite or multi-series results are missing (None).

        Raises
        ------
        PromUnavailable
            The server could not answer (after ``retries`` extra attempts): nothing was read.
        PromAPIError
            The server refused a query (bad PromQL, authentication).
        """
        times = [float(t) for t in times]
        if not times:
            return []
        cols: dict[tuple[str, str], dict[float, float]] = {}
        for side, name, expr in self._queries():
            col: dict[float, float] = {}
            if len(times) == 1:
                res = self._retry(lambda e=expr: query_instant(self._client, self.url, e, times[0]))
                col[times[0]] = res[0][1] if len(res) == 1 else math.nan
                if len(res) > 1:
                    log.warning("prometheus query %r returned %d series; aggregate it to one (treated as missing)", expr, len(res))
            else:
                step = times[1] - times[0]
                for i in range(0, len(times), RANGE_CHUNK):
                    part = times[i:i + RANGE_CHUNK]
                    res = self._retry(lambda e=expr, p=part: query_range(self._client, self.url, e, p[0], p[-1], step))
                    by_ms = [{int(round(u * 1000)): v for u, v in pts.items()} for _, pts in res]  # Prometheus' times are milliseconds
                    for t in part:
                        vals = [pts[k] for pts in by_ms if (k := int(round(t * 1000))) in pts]
                        col[t] = vals[0] if len(vals) == 1 else math.nan
            cols[(side, name)] = col

        def side_values(side: str, qs: Mapping[str, str], t: float) -> dict[str, float | None]:
            return {n: (None if math.isnan(v := cols[(side, n)].get(t, math.nan)) else v) for n in qs}

        return [{"timestamp": t, "values": side_values("canary", self.canary, t),
                 "control": None if self.control is None else side_values("control", self.control, t)} for t in times]

    def validate(self, at: float) -> list[str]:
        """Evaluate every query once at ``at``; the warnings for queries that return no series now.

        Raises
        ------
        InputError
            A query the server refuses (names the signal, the query and Prometheus' error), or one that
            returns more than one series (names the labels whose values differ).
        PromUnavailable
            The server could not answer.
        """
        warnings = []
        for side, name, expr in self._queries():
            where = f"prometheus.{side}.{name}"
            try:
                res = self._retry(lambda e=expr: query_instant(self._client, self.url, e, at))
            except PromAPIError as exc:
                hint = " (check prometheus.authentication)" if exc.status in (401, 403) else ""
                raise InputError(f"query {expr!r} refused by prometheus: {exc}{hint}", column=where) from None
            if len(res) > 1:
                diff = differing_labels([lab for lab, _ in res])
                raise InputError(f"query {expr!r} returns {len(res)} series, it must return one; labels that differ: "
                                 + ", ".join(f"{k}={v}" for k, v in diff.items()) + " (aggregate it, e.g. with sum or a label matcher)", column=where)
            if not res:
                warnings.append(f"{where}: query {expr!r} returns no series now (absent); its ticks are missing until it does")
        return warnings

    def close(self) -> None:
        self._client.close()


class PrometheusPuller(threading.Thread):
    """Background poller feeding one service analysis (started by the service for pull-mode analyses).

    It ingests the grid times ``k * interval`` in order, each once it has settled (``now -
    settle_seconds``), each as its own batch with id
    ``prom-<millis>`` (so a tick ingested twice, by a retry or by another process, is a no-op). It
    resumes after the last grid time the analysis holds (or, for an analysis without ticks, from its
    creation time), not from now: grid times missed while the server or the service was down are read
    with ``query_range`` and ingested in order, at most ``max_backfill_seconds`` of them (older ones are
    skipped and counted). A poll the server cannot answer ingests nothing.

    :meth:`status` is ``{"state", "reason", "since", ...}`` with state ``running``; ``failing`` after
    ``failing_after`` failed polls in a row (it keeps polling); ``stopped`` when the verdict is final,
    the analysis holds ``max_ticks`` ticks, the service shuts down, the connection cannot be built, or
    after ``stop_after_failures`` failed polls in a row. A stopped poller ingests nothing more, so the
    verdict stays what the ingested ticks gave: a server that went away never leads to a proceed.
    After a 401 or 403 the secrets are read again before the next poll (a rotated credential).
    """

    def __init__(self, manager: Any, analysis_id: str, spec: Mapping[str, Any], stop: threading.Event, *,
                 clock: Callable[[], float] = time.time, policy: SecretPolicy | None = None, client: httpx.Client | None = None,
                 created: str | None = None) -> None:
        super().__init__(name=f"prom-{analysis_id}", daemon=True)
        self.manager, self.aid, self.stop_event, self.clock = manager, analysis_id, stop, clock
        #: the ``created`` stamp of the analysis polled for: the poller stops when the id no longer names it
        #: (deleted, or deleted and created again, by this process or another one), and ingests only into it
        self.created = created
        self.spec = self._parse(spec)
        self.policy, self._client = policy, client
        self.interval = float(self.spec.interval_seconds)
        self.max_ticks = self.spec.max_ticks
        self.polled = 0
        self.source: PrometheusSource | None = None
        self._status: dict[str, Any] = {}
        self._counts = {"consecutive_failures": 0, "ticks_ingested": 0, "backfilled_ticks": 0, "skipped_ticks": 0}
        self._set("running", "starting")

    # ------------------------------------------------------------------ what is pulled (overridden by the split poller)
    @staticmethod
    def _parse(spec: Mapping[str, Any]) -> Any:
        return PullSpec.model_validate(dict(spec))

    def _source(self, client: httpx.Client | None) -> Any:
        """The source reading the spec's queries (``client``: an injected one, else built under the policy)."""
        return PrometheusSource(self.spec.url, self.spec.canary, self.spec.control, connection=self.spec, policy=self.policy, client=client)

    def _fetch(self, times: list[float]) -> list[dict[str, Any]]:
        """The ticks of the grid ``times`` (gaps left out), each with a ``timestamp`` in epoch seconds."""
        return self.source.fetch(times)

    # ------------------------------------------------------------------ status
    def _set(self, state: str, reason: str, last_error: str | None = None) -> None:
        prev = self._status.get("state")
        since = self._status.get("since") if prev == state else iso_utc(self.clock())
        self._status = {"state": state, "reason": reason, "since": since, "last_error": last_error, **self._counts}

    def status(self) -> dict[str, Any]:
        """The poller's state for ``GET /v1/analyses/{id}`` (a copy; no secrets)."""
        return {**self._status, **self._counts}

    # ------------------------------------------------------------------ loop
    def _start_k(self) -> int | None:
        """Grid index ``k`` of the first grid time to read (grid times are ``k * interval``, computed
        from the integer so every process gets the same float); None when the analysis already holds
        ``max_ticks`` ticks."""
        row = self.manager.store.get(self.aid)
        if self.created is not None and row.created != self.created:
            raise NotFound(f"analysis {self.aid!r} created at {self.created} was deleted (the id now names another analysis)")
        if self.max_ticks is not None and self._in_effect(row.n_ticks) >= self.max_ticks:
            return None
        if row.last_ts is not None:
            return math.floor(float(row.last_ts) / self.interval + 1e-9) + 1
        created = _dt.datetime.fromisoformat(row.created).timestamp()
        return math.ceil(created / self.interval - 1e-9)

    def _in_effect(self, stored: int) -> int:
        """Ticks the analysis stands on (``max_ticks`` counts these, not the entries a cut-back superseded)."""
        try:
            return int(self.manager.read(self.aid, lambda eng: eng.in_effect))
        except Exception:  # noqa: BLE001 - an analysis that does not load: its stored count
            return stored

    def _failed(self, exc: Exception) -> bool:
        """Record a failed poll; True when the poller must stop."""
        self._counts["consecutive_failures"] += 1
        n = self._counts["consecutive_failures"]
        msg = f"{exc.__class__.__name__}: {exc}"
        log.warning("analysis %s: prometheus poll failed (%d in a row): %s", self.aid, n, msg)
        limit = self.spec.stop_after_failures
        if limit is not None and n >= limit:
            self._set("stopped", f"prometheus failed {n} polls in a row; nothing more is ingested", msg)
            return True
        if n >= self.spec.failing_after:
            self._set("failing", f"prometheus failed {n} polls in a row; missed ticks are backfilled when it answers again", msg)
        else:
            self._set(self._status["state"], self._status["reason"], msg)
        return False

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - a poller must end in a reported state, never silently
            log.exception("analysis %s: poller crashed", self.aid)
            self._set("stopped", f"poller error: {exc.__class__.__name__}: {exc}")
        finally:
            if self.source is not None:
                self.source.close()

    def _run(self) -> None:
        try:
            self.source = self._source(self._client)
        except InputError as exc:
            self._set("stopped", f"connection cannot be built: {exc}")
            return
        next_k: int | None = None
        while not self.stop_event.is_set():
            if next_k is None or self.created is not None:
                try:
                    k = self._start_k()  # also checks, every poll, that the analysis polled for still exists
                    next_k = k if next_k is None or k is None else next_k
                except NotFound:
                    self._set("stopped", "analysis deleted")
                    break
                except Exception as exc:  # noqa: BLE001 - store unavailable: a failed poll
                    if self._failed(exc) or self.stop_event.wait(self.interval):
                        break
                    continue
                if next_k is None:
                    self._set("stopped", f"max_ticks reached ({self.max_ticks})")
                    break
            now = self.clock() - float(self.spec.settle_seconds)  # the latest settled time (see Connection.settle_seconds)
            if next_k * self.interval > now:
                if self.stop_event.wait(next_k * self.interval - now):
                    break
                continue
            end_k = max(next_k, math.floor(now / self.interval))
            keep = int(self.spec.max_backfill_seconds // self.interval) + 1
            if end_k - next_k + 1 > keep:
                skipped = end_k - next_k + 1 - keep
                self._counts["skipped_ticks"] += skipped
                log.warning("analysis %s: %d missed grid times older than max_backfill_seconds=%s are skipped", self.aid, skipped, self.spec.max_backfill_seconds)
                next_k = end_k - keep + 1
            n_due = end_k - next_k + 1
            times = [k * self.interval for k in range(next_k, end_k + 1)]
            try:
                ticks = self._fetch(times)
            except (PromUnavailable, PromAPIError) as exc:
                if self._failed(exc) or self.stop_event.wait(self.interval):
                    break
                if isinstance(exc, PromAPIError) and exc.status in (401, 403) and self._client is None:
                    self._reconnect()  # a rotated secret (a remounted Secret, a new variable) is read again
                continue
            done, next_k = self._ingest(ticks, backfill=n_due > 1)
            if done:
                break
        if self._status["state"] != "stopped":
            self._set("stopped", "service shutting down")

    def _reconnect(self) -> None:
        """Rebuild the HTTP client, reading the secrets again; keep the old one if that fails."""
        assert self.source is not None
        try:
            fresh = self._source(None)
        except InputError as exc:
            log.warning("analysis %s: secrets cannot be read again: %s", self.aid, exc)
            return
        self.source.close()
        self.source = fresh

    def _ingest(self, ticks: Sequence[dict[str, Any]], *, backfill: bool) -> tuple[bool, int | None]:
        """Ingest ``ticks`` in order; (stop, grid index of the next time to read)."""
        for tick in ticks:
            at = tick["timestamp"]
            try:
                kw = {} if self.created is None else {"expect_created": self.created}
                resp = self.manager.ingest(self.aid, [tick], batch_id=f"prom-{int(round(at * 1000))}", **kw)
            except InputError as exc:  # e.g. another process already moved past this time
                log.info("analysis %s: tick at %s not ingested: %s", self.aid, at, exc)
                continue
            except NotFound:  # deleted (DELETE /v1/analyses/{id}): nothing more to poll for
                self._set("stopped", "analysis deleted")
                return True, None
            except Exception as exc:  # noqa: BLE001 - the store failed: retry this tick next interval
                if self._failed(exc) or self.stop_event.wait(self.interval):
                    return True, None
                return False, int(round(at / self.interval))
            self.polled += 1
            if not resp.get("duplicate"):
                self._counts["ticks_ingested"] += 1
                self._counts["backfilled_ticks"] += int(backfill)
            self._counts["consecutive_failures"] = 0
            if resp.get("final"):
                self._set("stopped", f"verdict is final ({resp.get('verdict')})")
                return True, None
            if self.max_ticks is not None and resp.get("ticks_in_effect", resp.get("n_ticks", 0)) >= self.max_ticks:
                self._set("stopped", f"max_ticks reached ({self.max_ticks})")
                return True, None
        if self._status["state"] != "running" or self._status["reason"] != "polling":
            self._set("running", "polling")
        return False, (int(round(ticks[-1]["timestamp"] / self.interval)) + 1) if ticks else None
