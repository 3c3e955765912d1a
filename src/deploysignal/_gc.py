"""Garbage-collector policy of the adapters (service, CLI, bench): a process-wide pause around building many small objects.

This is adapter policy, not library behaviour: the core (:mod:`deploysignal.gate`, the detectors,
calibration, split, fleet, migration) never switches the collector, takes a lock or reads a clock. The
service pauses the cyclic collector while it evaluates and stores a batch (thousands of small per-tick
objects: the collector would rescan them at every threshold); ``deploysignal serve`` also freezes
everything alive at start (:func:`~deploysignal.service._asgi.prepare_process`). A library user who
wants the same calls :func:`gc_paused` around :meth:`Gate.update_many <deploysignal.gate.Gate.update_many>`
(or sets their own policy): the gate's decisions do not depend on it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GC_STARVATION_SECONDS", "gc_paused"]

_GC_LOCK = threading.Lock()
_GC_PAUSE = {"depth": 0, "was_enabled": False, "since": 0.0}
#: Longest stretch (seconds) overlapping pauses from several threads keep the collector off before the
#: pause that ends then runs a young-generation collection itself.
GC_STARVATION_SECONDS = 1.0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the (process-wide) cyclic garbage collector; nested and concurrent pauses from several
    threads end with the collector in the state it had before the first of them began.

    Pauses that keep overlapping (threads ingesting into different analyses back to back) could keep
    the collector off indefinitely while other code creates cyclic garbage: a pause that ends while
    others are still running, more than :data:`GC_STARVATION_SECONDS` after the collector was last on
    (or last collected here), collects generations 0 and 1 itself."""
    with _GC_LOCK:
        if _GC_PAUSE["depth"] == 0:
            _GC_PAUSE["was_enabled"] = gc.isenabled()
            _GC_PAUSE["since"] = time.monotonic()
            gc.disable()
        _GC_PAUSE["depth"] += 1
    try:
        yield
    finally:
        starved = False
        with _GC_LOCK:
            _GC_PAUSE["depth"] -= 1
            if _GC_PAUSE["was_enabled"]:
                if _GC_PAUSE["depth"] == 0:
                    gc.enable()
                elif time.monotonic() - _GC_PAUSE["since"] > GC_STARVATION_SECONDS:
                    starved = True
                    _GC_PAUSE["since"] = time.monotonic()
        if starved:  # outside the lock: finalizers run by the collection may pause it themselves
            gc.collect(1)


