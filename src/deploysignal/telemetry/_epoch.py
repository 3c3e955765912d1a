"""Timestamps: epoch seconds, not milliseconds, and not ahead of the clock of whoever accepts them.

A tick is stamped in epoch seconds (UTC). Two mistakes wedge an analysis, because every later tick
must come strictly after the last accepted one: a tick stamped in epoch *milliseconds* (or micro-,
nanoseconds) and a tick stamped far in the future (a clock set a day or a year ahead). Both are
rejected before the tick is accepted:

* :func:`check_epoch_seconds` (the gate, for every input): ``|t| < MAX_EPOCH_SECONDS`` = 1e11 s, the
  year 5138. Epoch milliseconds of any instant after 1973-03-03 exceed it, so a millisecond stamp
  of any real deploy is caught, with a message that says so.
* :func:`check_clock_skew` (the service, against its own clock, which the caller passes in: this
  module reads no clock): ``t <= now + max_skew``. Ticks from the past are accepted (backfills and
  replays of recorded telemetry are legitimate), only ticks from the future wedge an analysis.
"""

from __future__ import annotations

from .._exceptions import InputError

__all__ = ["MAX_EPOCH_SECONDS", "check_clock_skew", "check_epoch_seconds"]

#: Largest magnitude taken as epoch seconds (1e11 s: the year 5138).
MAX_EPOCH_SECONDS = 1e11


def check_epoch_seconds(ts: float, *, row: int | None = None) -> None:
    """Raise :class:`InputError` when ``ts`` cannot be epoch seconds (``|ts| >= 1e11``).

    >>> check_epoch_seconds(1_700_000_000.0)
    >>> check_epoch_seconds(1_700_000_000_000.0, row=3)
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: row 3, column 'timestamp': timestamp 1700000000000.0 is not epoch seconds (it would be after the year 5138): epoch milliseconds? divide by 1000
    """
    if abs(ts) >= MAX_EPOCH_SECONDS:
        unit = "milliseconds" if abs(ts) < 1e14 else "microseconds" if abs(ts) < 1e17 else "nanoseconds"
        factor = {"milliseconds": "1000", "microseconds": "1e6", "nanoseconds": "1e9"}[unit]
        raise InputError(f"timestamp {ts!r} is not epoch seconds (it would be after the year 5138): epoch {unit}? divide by {factor}",
                         row=row, column="timestamp")


def check_clock_skew(ts: float, now: float, max_skew: float, *, row: int | None = None) -> None:
    """Raise :class:`InputError` when ``ts`` lies more than ``max_skew`` seconds after ``now``.

    >>> check_clock_skew(1000.0, now=990.0, max_skew=300.0)
    >>> check_clock_skew(1000.0 + 86400, now=1000.0, max_skew=300.0, row=2)
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: row 2, column 'timestamp': timestamp 87400.0 is 86400 s ahead of the server clock (1000.0); at most 300 s are accepted (--max-clock-skew): a tick from the future would make every correct tick after it look out of order
    """
    ahead = ts - now
    if ahead > max_skew:
        raise InputError(
            f"timestamp {ts!r} is {ahead:.0f} s ahead of the server clock ({now!r}); at most {max_skew:g} s are accepted"
            " (--max-clock-skew): a tick from the future would make every correct tick after it look out of order",
            row=row, column="timestamp",
        )
