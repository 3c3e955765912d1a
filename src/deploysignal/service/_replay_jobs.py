"""Replay as a bounded background job (issue 23, item 5).

``POST /v1/analyses/{id}/replay?wait=false`` answers 202 with a job; ``GET
/v1/analyses/{id}/replays/{job}`` reports it (``running``, ``done`` with the replay's report,
``failed`` with the error, or ``lost``); ``POST .../replay`` without ``wait=false`` runs the same job and
answers its report when it is done (the 0.4.0 route and body). ``deploysignal service replay`` submits a
job and waits for it.

Bound: a job runs only once it holds one of the manager's ``max_replays`` slots (``serve
--max-replays``), waited for at most ``wait_timeout`` (then 503, nothing started), so at most that many
replays run per serving process, however they were asked for.

Where a job runs (``serve --replay-in``): ``process`` (the default of ``serve``) runs it in a pool of
``max_replays`` worker processes at a lower scheduling priority (``nice`` +10), each opening the store
by its URL: a replay then never holds the serving process' interpreter lock, and the kernel gives the
serving process' threads the cores first. ``thread`` runs it in a thread of the serving process, which
shares the interpreter lock with ingest (the library default, and the fallback for a private in-memory
SQLite store another process cannot open). The report is the same either way (the same function over
the same stored rows).

Jobs are kept in the store (:mod:`deploysignal.store._jobs`), so any process serving it answers ``GET``;
the newest ``keep`` finished jobs are kept. A job whose process died while it ran is reported ``lost``
(by a process on the same host; resubmit it).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from ..store import NotFound
from ..store._jobs import finish_job, get_job, put_job
from ._manager import AnalysisManager

__all__ = ["ReplayJobs"]

log = logging.getLogger(__name__)

#: how much lower a replay worker process runs (``os.nice`` increment)
NICE = 10


def replay_in_worker(store_url: str, aid: str, eval_chunk: int) -> dict[str, Any]:
    """The replay of ``aid`` in a worker process: a manager of its own on the store (no cache, no slots)."""
    from ..store import open_store

    store = open_store(store_url)
    try:
        return AnalysisManager(store, eval_chunk=eval_chunk)._replay(aid)  # noqa: SLF001 - the slot is held by the submitting process
    finally:
        store.close()


def shareable(store_url: str) -> bool:
    """Whether another process can open the store at ``store_url`` (not a private in-memory SQLite)."""
    return ":memory:" not in store_url and "mode=memory" not in store_url


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ReplayJobs:
    """Bounded replay jobs of one serving process (module docstring).

    Parameters
    ----------
    manager : AnalysisManager
        Its store records the jobs; its replay slots bound them.
    store_url : str
        The store's URL, opened by worker processes.
    mode : {"process", "thread"}
        Where a job runs; ``process`` falls back to ``thread`` for a store other processes cannot open.
    keep : int
        Finished jobs kept in the store.
    now : callable
        ISO-8601 time stamps of jobs (created, finished).
    """

    def __init__(self, manager: AnalysisManager, store_url: str, mode: str = "thread", keep: int = 1000,
                 now: Callable[[], str] = _now) -> None:
        if mode not in ("process", "thread"):
            raise ValueError(f"replay mode must be process or thread, got {mode!r}")
        if mode == "process" and not shareable(store_url):
            log.warning("replays run in a thread of the serving process: the store %s cannot be opened by another process", store_url)
            mode = "thread"
        self.manager, self.store_url, self.mode, self.keep, self.now = manager, store_url, mode, keep, now
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._pool: Executor | None = None
        self._pool_lock = threading.Lock()
        self._done: dict[str, threading.Event] = {}  # set once a job's result is recorded
        self._guard = threading.Lock()

    def _executor(self) -> Executor:
        with self._pool_lock:
            if self._pool is None:
                n = self.manager.max_replays
                if self.mode == "process":
                    import multiprocessing

                    # os.nice itself as the initializer: unpickling it imports nothing, so the worker's imports
                    # (numpy, the compiled kernels) already run at the lower priority
                    self._pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"), initializer=os.nice,
                                                     initargs=(NICE,))
                else:
                    self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="replay")
            return self._pool

    def submit(self, aid: str) -> dict[str, Any]:
        """Start a replay of ``aid`` once a slot is free (:class:`~deploysignal.service._admission.Busy`
        after ``wait_timeout``; :class:`~deploysignal.store.NotFound` for no such analysis). Returns the job."""
        self.manager.store.get(aid)  # NotFound: no slot taken, no job recorded
        self.manager.take_replay_slot()
        job = "rj-" + secrets.token_hex(8)
        done = threading.Event()
        with self._guard:
            self._done[job] = done
        try:
            put_job(self.manager.store, job, aid, self.owner, self.now(), self.keep)
            if self.mode == "process":
                fut = self._executor().submit(replay_in_worker, self.store_url, aid, self.manager.eval_chunk)
            else:
                fut = self._executor().submit(self.manager._replay, aid)  # noqa: SLF001 - the slot is held here
        except BaseException:
            self.manager.release_replay_slot()
            with self._guard:
                self._done.pop(job, None)
            raise
        fut.add_done_callback(lambda f: self._finished(job, f))
        return self.get(aid, job)

    def _finished(self, job: str, fut: Future[dict[str, Any]]) -> None:
        try:
            exc = fut.exception()
            if exc is None:
                state, result = "done", fut.result()
            else:
                log.error("replay job %s failed: %s: %s", job, type(exc).__name__, exc)
                state, result = "failed", {"error": f"{type(exc).__name__}: {exc}"}
            finish_job(self.manager.store, job, state, result, self.now())
        except Exception:  # noqa: BLE001 - a callback must not raise; the job then stays running and is reported lost once this process ends
            log.exception("replay job %s: recording its result failed", job)
        finally:
            self.manager.release_replay_slot()
            with self._guard:
                done = self._done.pop(job, None)
            if done is not None:
                done.set()

    def get(self, aid: str, job: str) -> dict[str, Any]:
        """The job ``job`` of analysis ``aid`` (:class:`~deploysignal.store.NotFound` when there is no
        such job of that analysis). A ``running`` job of a process of this host that no longer runs is
        reported ``lost``."""
        got = get_job(self.manager.store, job)
        if got is None or got["analysis"] != aid:
            raise NotFound(f"no replay job {job!r} of analysis {aid!r}")
        if got["state"] == "running" and _dead(got["owner"]):
            got = {**got, "state": "lost", "result": {"error": f"the process that ran it ({got['owner']}) ended before it finished; submit it again"}}
        return got

    def wait(self, aid: str, job: str) -> dict[str, Any]:
        """Block until the job (submitted by this process) finishes; returns it."""
        with self._guard:
            done = self._done.get(job)
        if done is not None:
            done.wait()
        return self.get(aid, job)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _dead(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, not ours to signal
        return False
    return False
