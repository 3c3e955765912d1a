"""Asyncio dual-serve router: the live agent answers the user, the other agent runs on an isolated shadow path.

The live path awaits exactly one agent call and nothing else: shadow work is handed over with a
non-blocking ``put_nowait`` into a bounded queue *after* the live answer exists, so a slow, failing or
hanging shadow agent can never delay a live response.  When the queue is full the shadow request is
dropped and counted (drop-not-delay).  Shadow workers are few (``shadow_workers``), yield to the event
loop before each call (live tasks scheduled at the same time run first) and are bounded by
``shadow_timeout_s``.

This module is an I/O adapter: it reads the event-loop clock to time agent calls.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx
import numpy as np

from .._exceptions import InputError
from ._quality import AgentAnswer

__all__ = ["Agent", "DualServeRouter", "RouterStats", "http_agent"]

log = logging.getLogger(__name__)
Agent = Callable[[str], Awaitable[str]]
PairCallback = Callable[[str, str, AgentAnswer, AgentAnswer, bool], None]


def http_agent(url: str, client: httpx.AsyncClient, *, field: str = "output") -> Agent:
    """An agent backed by an HTTP endpoint: ``POST url {"query": q}`` -> JSON ``{field: answer}``.

    Pass a client built with ``httpx.MockTransport`` in tests.
    """

    async def call(query: str) -> str:
        resp = await client.post(url, json={"query": query})
        resp.raise_for_status()
        body = resp.json()
        if not isinstance(body, dict) or not isinstance(body.get(field), str):
            raise InputError(f"agent response from {url} lacks a string field {field!r}", column=field)
        return body[field]

    return call


@dataclass
class RouterStats:
    """Counters of the router (live and shadow paths)."""

    live_requests: int = 0
    live_errors: int = 0
    shadow_sampled: int = 0
    shadow_dropped: int = 0
    shadow_completed: int = 0
    shadow_timeouts: int = 0
    shadow_errors: int = 0
    warmup_completed: int = 0
    shadow_discarded: int = 0


class DualServeRouter:
    """Dual-serve router with an isolated shadow path.

    Parameters
    ----------
    incumbent, challenger : async callables ``query -> answer``
    shadow_sample : float or mapping query type -> float
        Probability that a query (of that type) is also sent to the other agent (stratified sample).
    on_pair : callable, optional
        ``on_pair(query, qtype, incumbent_answer, challenger_answer, challenger_served)`` called for
        each completed pair (not during warm-up).
    queue_size, shadow_workers, shadow_timeout_s : bounds of the shadow path.
    seed : int
        Seed of the sampling and routing coins.
    """

    def __init__(self, incumbent: Agent, challenger: Agent, *, shadow_sample: float | Mapping[str, float] = 1.0,
                 on_pair: PairCallback | None = None, queue_size: int = 64, shadow_workers: int = 2,
                 shadow_timeout_s: float = 10.0, seed: int = 0) -> None:
        fracs = shadow_sample.values() if isinstance(shadow_sample, Mapping) else [shadow_sample]
        if any(not (isinstance(f, (int, float)) and 0.0 <= f <= 1.0) for f in fracs):
            raise InputError("shadow_sample fractions must lie in [0, 1]", column="shadow_sample")
        if queue_size < 1 or shadow_workers < 1 or not shadow_timeout_s > 0:
            raise InputError("queue_size, shadow_workers and shadow_timeout_s must be positive")
        self.incumbent = incumbent
        self.challenger = challenger
        self.shadow_sample = shadow_sample
        self.on_pair = on_pair
        self.queue_size = queue_size
        self.shadow_workers = shadow_workers
        self.shadow_timeout_s = float(shadow_timeout_s)
        self.stats = RouterStats()
        self.exposure = 0.0
        self._rng = np.random.default_rng(seed)
        self._queue: asyncio.Queue[tuple[str, str, AgentAnswer, bool, bool]] | None = None
        self._workers: list[asyncio.Task[None]] = []

    def set_exposure(self, fraction: float) -> None:
        """Fraction of live traffic answered by the challenger; takes effect for the next request."""
        if not 0.0 <= fraction <= 1.0:
            raise InputError(f"exposure must lie in [0, 1], got {fraction}", column="exposure")
        self.exposure = float(fraction)

    def _fraction(self, qtype: str) -> float:
        if isinstance(self.shadow_sample, Mapping):
            return float(self.shadow_sample.get(qtype, 0.0))
        return float(self.shadow_sample)

    async def __aenter__(self) -> DualServeRouter:
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._workers = [asyncio.create_task(self._worker()) for _ in range(self.shadow_workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    @staticmethod
    async def _timed(agent: Agent, query: str, timeout: float | None) -> AgentAnswer:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            out = await asyncio.wait_for(agent(query), timeout)
        except TimeoutError:
            return AgentAnswer(None, (loop.time() - t0) * 1000.0, "timeout")
        except Exception as e:  # an agent failure is data, not a crash of the router
            return AgentAnswer(None, (loop.time() - t0) * 1000.0, f"{type(e).__name__}: {e}")
        return AgentAnswer(out, (loop.time() - t0) * 1000.0)

    async def handle(self, query: str, qtype: str = "default") -> AgentAnswer:
        """Serve one live request; returns the live answer. Never waits for the shadow path."""
        if self._queue is None:
            raise InputError("router not started: use 'async with DualServeRouter(...)'")
        self.stats.live_requests += 1
        challenger_served = bool(self._rng.random() < self.exposure)
        answer = await self._timed(self.challenger if challenger_served else self.incumbent, query, None)
        if answer.error is not None:
            self.stats.live_errors += 1
        if self._rng.random() < self._fraction(qtype):
            self.stats.shadow_sampled += 1
            try:
                self._queue.put_nowait((query, qtype, answer, challenger_served, False))
            except asyncio.QueueFull:
                self.stats.shadow_dropped += 1
        return answer

    async def warm_up(self, history: Iterable[str]) -> int:
        """Send historical queries to the challenger through the shadow path before evaluation.

        Returns how many were accepted; full queue = dropped and counted as for live traffic.
        Waits until the accepted warm-up calls have completed.
        """
        if self._queue is None:
            raise InputError("router not started: use 'async with DualServeRouter(...)'")
        n = 0
        dummy = AgentAnswer(None, math.nan)
        for q in history:
            try:
                await asyncio.wait_for(self._queue.put((q, "warmup", dummy, False, True)), self.shadow_timeout_s)
                n += 1
            except TimeoutError:
                self.stats.shadow_dropped += 1
        await self._queue.join()
        return n

    def discard_pending(self) -> int:
        """Drop the shadow requests still queued (no agent call, no ``on_pair``); returns how many.

        Calls already running complete. Used when a run stops early. Counted in ``shadow_discarded``.
        """
        n = 0
        if self._queue is not None:
            while True:
                try:
                    self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                self._queue.task_done()
                n += 1
        self.stats.shadow_discarded += n
        return n

    async def drain(self) -> None:
        """Wait until every queued shadow request has completed (for tests and shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            query, qtype, live, challenger_served, warmup = await self._queue.get()
            try:
                await asyncio.sleep(0)  # yield: live tasks ready now run first
                other = self.incumbent if challenger_served else self.challenger
                shadow = await self._timed(other, query, self.shadow_timeout_s)
                if warmup:
                    self.stats.warmup_completed += 1
                    continue
                if shadow.error == "timeout":
                    self.stats.shadow_timeouts += 1
                elif shadow.error is not None:
                    self.stats.shadow_errors += 1
                self.stats.shadow_completed += 1
                if self.on_pair is not None:
                    inc, chal = (shadow, live) if challenger_served else (live, shadow)
                    try:
                        self.on_pair(query, qtype, inc, chal, challenger_served)
                    except Exception:
                        log.exception("on_pair callback failed for query %r", query)
            finally:
                self._queue.task_done()
