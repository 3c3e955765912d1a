"""Which batches the manager writes in chunks of pending rows (:mod:`deploysignal.store._pending`).

A token names one chunked write (its marker in ``pending_writes``): 128 random bits
(:func:`secrets.token_hex`), unique across the processes and hosts that share a store. It never enters a response, a record or the hash chain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..store import SQLStore, stage_rows

__all__ = ["stage_batch"]

def stage_batch(store: SQLStore, aid: str, n_ticks: int, head: str, append: Mapping[str, Any], chunk: int,
                token: Callable[[], str]) -> tuple[str, int] | None:
    """Stage all but the last chunk of a batch (``append``: the arguments of
    :meth:`~deploysignal.store.LockedAnalysis.append`) as pending rows of analysis ``aid`` standing at
    ``n_ticks`` and chain head ``head``; returns the ``staged`` argument of that append, or None when
    the batch fits in one chunk (written by the append alone, as before). ``token()`` names the write.
    Raises :class:`~deploysignal.store.PendingLost` when another writer appended meanwhile."""
    ticks = append["ticks"]
    if chunk < 1 or len(ticks) <= chunk:
        return None
    t = token()
    return t, stage_rows(store, aid, n_ticks, head, t, ticks, append["audit"], chunk)
