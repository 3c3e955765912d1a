"""Admission control for the service: request rate limits per token and per analysis, and waits that end.

A request is admitted when neither its token nor the analysis it names has used up its rate limit
(``limits``' moving-window limiter, in process memory: with ``serve --workers N`` each worker counts
its own requests, so the limit a client meets is up to N times the configured one). An analysis has
separate budgets for reads and for writes, so readers at their limit never make the pusher's ingest
429. Ingest is also budgeted in ticks per token (one 10,000-tick batch is one request). Answers 401
(unknown token) and 403 (outside the token's scope or role) count per client address: beyond that
budget the address gets 429 for its failing requests (a good token from it still passes). A refused request
gets **429** with ``Retry-After`` (whole seconds until the window admits one more). A request that
cannot get its turn on a busy analysis, or a replay slot, within the configured wait gets **503** with
``Retry-After`` (:class:`Busy`); nothing of it was applied, and a ``batch_id`` makes the retry
idempotent.

Limits use ``limits``' notation (``"20/second"``, ``"600/minute"``, ``"5/second;100/minute"``).

References
----------
``limits`` documentation, "Rate limit string notation" and "Strategies: moving window",
https://limits.readthedocs.io/
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from .._exceptions import ConfigError, DeploySignalError

__all__ = ["Busy", "RateLimited", "RateLimits", "parse_limit"]


class Busy(DeploySignalError):
    """The request could not start within its wait (an analysis busy with another request, all replay
    slots taken): answered 503 with ``Retry-After``; nothing was applied."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(DeploySignalError):
    """A rate limit refused the request: answered 429 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_limit(text: str | None, what: str) -> list[RateLimitItem]:
    """``text`` in ``limits``' notation as limit items (none for None or ``""``).

    >>> [str(x) for x in parse_limit("5/second;100/minute", "x")]
    ['5 per 1 second', '100 per 1 minute']
    >>> parse_limit("fast", "rate_limit")
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.ConfigError: rate_limit: 'fast' is not a rate limit (write e.g. "20/second" or "600/minute;20/second")
    """
    if not text:
        return []
    try:
        return list(parse_many(text))
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a rate limit (write e.g. \"20/second\" or \"600/minute;20/second\")") from None


@dataclass
class RateLimits:
    """Moving-window limits per token (by token name; a token entry may set its own) and per analysis.

    :meth:`check` raises :class:`RateLimited` naming the limit that refused the request; a request
    counts against its limits only when all admit it (a refused request uses up nothing).
    """

    per_token: list[RateLimitItem]
    per_analysis: list[RateLimitItem]
    per_analysis_write: list[RateLimitItem] = field(default_factory=list)
    ticks_per_token: list[RateLimitItem] = field(default_factory=list)
    failures_per_address: list[RateLimitItem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._lock = threading.Lock()  # test-then-hit of several limits as one step
        self._cache: dict[str, list[RateLimitItem]] = {}

    def check(self, key: str | None, label: str, token_limit: str | None, analysis: str | None, *, write: bool = False) -> None:
        """Admit one request of the token ``key`` (named ``label`` in messages; None: not limited per
        token) on ``analysis`` (None: not limited per analysis; ``write``: counted in its write
        budget, else in its read budget); ``token_limit`` replaces the per-token limit for this token."""
        checks: list[tuple[RateLimitItem, str, str, str, int]] = []
        if key is not None:
            items = self.per_token if token_limit is None else self._parsed(token_limit)
            checks += [(item, "token", key, f"token {label!r}", 1) for item in items]
        if analysis is not None:
            kind = "analysis-write" if write else "analysis"
            what = f"analysis {analysis!r} ({'writes' if write else 'reads'})"
            checks += [(item, kind, analysis, what, 1) for item in (self.per_analysis_write if write else self.per_analysis)]
        self._admit(checks)

    def check_ticks(self, key: str | None, label: str, ticks_limit: str | None, n: int) -> None:
        """Admit ``n`` ticks of the token ``key`` (its entry's ``ticks_limit`` replaces the default)."""
        if key is None:
            return
        items = self.ticks_per_token if ticks_limit is None else self._parsed(ticks_limit)
        self._admit([(item, "ticks", key, f"ticks of token {label!r}", n) for item in items])

    def failure(self, address: str) -> None:
        """Count a 401 / 403 answer to client ``address``; :class:`RateLimited` once its budget is used up."""
        self._admit([(item, "failures", address, f"failed requests (401/403) from {address}", 1) for item in self.failures_per_address])

    def _admit(self, checks: list[tuple[RateLimitItem, str, str, str, int]]) -> None:
        with self._lock:
            for item, kind, k, name, cost in checks:
                if not self._limiter.test(item, kind, k, cost=cost):
                    raise RateLimited(f"rate limit of {name} reached ({item}{'' if cost == 1 else f'; this request: {cost}'});"
                                      " retry after the Retry-After seconds", self._retry_after(item, kind, k))
            for item, kind, k, _, cost in checks:
                self._limiter.hit(item, kind, k, cost=cost)

    def _parsed(self, text: str) -> list[RateLimitItem]:
        got = self._cache.get(text)
        if got is None:
            got = self._cache[text] = parse_limit(text, "rate_limit")
        return got

    def _retry_after(self, item: RateLimitItem, kind: str, key: str) -> int:
        reset, _ = self._limiter.get_window_stats(item, kind, key)
        return max(1, math.ceil(reset - time.time()))
