"""Prometheus pull source: evaluate one PromQL query per signal (canary and control) at each tick.

Missing data is never invented: an empty result, ``NaN``, ``±Inf``, several series for one query, or a
failed request all give NaN for that signal at that tick, which the gate counts as missing (it extends,
never rolls back, on missing data). Queries are evaluated at fixed grid times
(``time = k * interval``) through ``/api/v1/query``, so two processes polling the same analysis
produce the same tick and the store's batch id makes the second one a no-op.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from .._exceptions import InputError

__all__ = ["PrometheusPuller", "PrometheusSource", "parse_instant"]

log = logging.getLogger(__name__)


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


class PrometheusSource:
    """Poll PromQL queries for canary and (optionally) control at a given evaluation time.

    Parameters
    ----------
    url : str
        Prometheus base URL, e.g. ``http://prometheus:9090``.
    canary, control : dict
        Signal name -> PromQL expression returning one series.
    client : httpx.Client, optional
        Injected client (tests pass a ``MockTransport``); by default one with ``timeout``.
    """

    def __init__(self, url: str, canary: Mapping[str, str], control: Mapping[str, str] | None = None, *, client: httpx.Client | None = None, timeout: float = 5.0, retries: int = 1) -> None:
        if not canary:
            raise InputError("at least one canary query is needed", column="canary")
        self.url = url.rstrip("/")
        self.canary = dict(canary)
        self.control = None if control is None else dict(control)
        self._client = client or httpx.Client(timeout=timeout)
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
        """One tick at evaluation time ``at`` (epoch seconds): ``{timestamp, values, control}`` with None = missing."""

        def run(qs: Mapping[str, str]) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for name, expr in qs.items():
                v = self._query(expr, at)
                out[name] = None if math.isnan(v) else v
            return out

        return {"timestamp": float(at), "values": run(self.canary), "control": None if self.control is None else run(self.control)}

    def close(self) -> None:
        self._client.close()


class PrometheusPuller(threading.Thread):
    """Background poller feeding one service analysis (started by the service for pull-mode analyses).

    Every ``interval_seconds`` on the grid ``k * interval`` it polls and ingests one tick with batch id
    ``prom-<millis>``; stops when the verdict is final, after ``max_ticks`` ticks, or when ``stop`` is set.
    """

    def __init__(self, manager: Any, analysis_id: str, spec: Mapping[str, Any], stop: threading.Event, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name=f"prom-{analysis_id}", daemon=True)
        self.manager, self.aid, self.spec, self.stop_event, self.clock = manager, analysis_id, dict(spec), stop, clock
        self.source = PrometheusSource(spec["url"], spec["canary"], spec.get("control"))
        self.interval = float(spec.get("interval_seconds", 60))
        self.max_ticks = spec.get("max_ticks")
        self.polled = 0

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                now = self.clock()
                at = math.ceil(now / self.interval) * self.interval
                if self.stop_event.wait(max(0.0, at - now)):
                    break
                tick = self.source.poll(at)
                try:
                    resp = self.manager.ingest(self.aid, [tick], batch_id=f"prom-{int(round(at * 1000))}")
                except InputError as exc:  # e.g. another process already moved past this time
                    log.info("analysis %s: tick at %s not ingested: %s", self.aid, at, exc)
                    continue
                except Exception:
                    log.exception("analysis %s: ingest failed; retrying next interval", self.aid)
                    continue
                self.polled += 1
                if resp.get("final") or (self.max_ticks is not None and resp.get("n_ticks", 0) >= self.max_ticks):
                    break
        finally:
            self.source.close()
