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

Deadline: a job not finished ``timeout`` seconds after it started (``serve --replay-timeout``, default
3600) is recorded ``failed`` and its slot is freed. In ``process`` mode the pool's worker processes
are then terminated (a replay running beside it in the pool fails too and can be resubmitted) and the
pool is rebuilt on the next submit; in ``thread`` mode a thread cannot be stopped: its CPU is not
reclaimed until it ends, its result is discarded. While it runs, a job's ``result`` holds its
``deadline``. A pool broken by a dead worker (OOM, SIGKILL) is rebuilt: the job that was running
in it is recorded ``failed`` and the next submit gets a new pool.

Jobs are kept in the store (:mod:`deploysignal.store._jobs`), so any process serving it answers ``GET``;
the newest ``keep`` finished jobs are kept. A job is recorded before it is handed to the pool, and
recorded ``failed`` when that hand-over fails. Its ``owner`` is a random id of the serving process
(not host and pid, which a restarted container reuses). A ``running`` job is reported ``lost`` when its
owner is this process and it no longer runs here, or when its deadline has passed (its owner, any
process on any host, would have recorded it ``failed`` by then: it ended first). Assumption: the
serving processes' clocks agree to within :data:`GRACE` seconds.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta, timezone
from typing import Any

from ..store import NotFound
from ..store._jobs import finish_job, get_job, put_job, set_running_result
from ._manager import AnalysisManager

__all__ = ["ReplayJobs"]

log = logging.getLogger(__name__)

#: how much lower a replay worker process runs (``os.nice`` increment)
NICE = 10
#: seconds past a running job's deadline before another process reports it ``lost`` (clock disagreement allowed)
GRACE = 60.0


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
        ISO-8601 time stamps of jobs (created, finished, deadline).
    timeout : float
        Seconds a job may run; then it is recorded ``failed`` and its slot freed (module docstring).
    """

    def __init__(self, manager: AnalysisManager, store_url: str, mode: str = "thread", keep: int = 1000,
                 now: Callable[[], str] = _now, timeout: float = 3600.0) -> None:
        if mode not in ("process", "thread"):
            raise ValueError(f"replay mode must be process or thread, got {mode!r}")
        if not timeout > 0:
            raise ValueError(f"replay timeout must be > 0 seconds, got {timeout!r}")
        if mode == "process" and not shareable(store_url):
            log.warning("replays run in a thread of the serving process: the store %s cannot be opened by another process", store_url)
            mode = "thread"
        self.manager, self.store_url, self.mode, self.keep, self.now, self.timeout = manager, store_url, mode, keep, now, timeout
        self.owner = "rp-" + secrets.token_hex(8)  # this serving process (a restarted one gets a new id)
        self._pool: Executor | None = None
        self._pool_lock = threading.Lock()
        self._done: dict[str, threading.Event] = {}  # set once a job's result is recorded
        self._ending: set[str] = set()  # jobs whose end is being recorded
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

    def _broken(self, pool: Executor) -> None:
        """Drop ``pool`` (broken, or its workers terminated) so the next submit builds a new one."""
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _start(self, aid: str) -> tuple[Executor, Future[dict[str, Any]]]:
        for attempt in (0, 1):
            pool = self._executor()
            try:
                if self.mode == "process":
                    return pool, pool.submit(replay_in_worker, self.store_url, aid, self.manager.eval_chunk)
                return pool, pool.submit(self.manager._replay, aid)  # noqa: SLF001 - the slot is held here
            except BrokenProcessPool:
                log.warning("replay pool broken (a worker process died): rebuilt")
                self._broken(pool)
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def submit(self, aid: str) -> dict[str, Any]:
        """Start a replay of ``aid`` once a slot is free (:class:`~deploysignal.service._admission.Busy`
        after ``wait_timeout``; :class:`~deploysignal.store.NotFound` for no such analysis). Returns the job."""
        created = self.manager.store.get(aid).created  # NotFound: no slot taken, no job recorded
        self.manager.take_replay_slot()
        job = "rj-" + secrets.token_hex(8)
        done = threading.Event()
        with self._guard:
            self._done[job] = done
        try:
            put_job(self.manager.store, job, aid, self.owner, self.now(), self.keep, created)
        except BaseException:
            self.manager.release_replay_slot()
            with self._guard:
                self._done.pop(job, None)
            raise
        try:
            pool, fut = self._start(aid)
        except BaseException as exc:
            self._record(job, "failed", {"error": f"could not be started: {type(exc).__name__}: {exc}"})
            raise
        deadline = datetime.fromisoformat(self.now()) + timedelta(seconds=self.timeout)
        set_running_result(self.manager.store, job, {"deadline": deadline.isoformat(timespec="milliseconds")})
        timer = threading.Timer(self.timeout, self._expired, args=(job, fut, pool))
        timer.daemon = True
        timer.start()
        fut.add_done_callback(lambda f: (timer.cancel(), self._finished(job, f, pool)))
        return self.get(aid, job)

    def _record(self, job: str, state: str, result: dict[str, Any], then: Callable[[], None] | None = None) -> bool:
        """Record the job's end once (the first caller wins: its end, its deadline or a failed start),
        run ``then`` (if this call recorded it), free its slot and wake its waiters. Returns whether this
        call recorded it. ``then`` runs before the waiters wake so that a caller woken by the end sees its
        consequences (a timed-out job's pool already dropped: a resubmit gets a new one)."""
        with self._guard:
            if job in self._ending or job not in self._done:
                return False
            self._ending.add(job)  # still in _done (reported running, not lost) until the row says how it ended
        try:
            finish_job(self.manager.store, job, state, result, self.now())
        except Exception:  # noqa: BLE001 - a callback must not raise; the job then stays running and is reported lost
            log.exception("replay job %s: recording its result failed", job)
        finally:
            if then is not None:
                try:
                    then()
                except Exception:  # noqa: BLE001 - the end is recorded; its waiters must still wake
                    log.exception("replay job %s: cleaning up after its end failed", job)
            with self._guard:
                done = self._done.pop(job)
                self._ending.discard(job)
            self.manager.release_replay_slot()
            done.set()
        return True

    def _expired(self, job: str, fut: Future[dict[str, Any]], pool: Executor) -> None:
        def stop() -> None:
            log.error("replay job %s exceeded its deadline of %g s: recorded failed", job, self.timeout)
            if isinstance(pool, ProcessPoolExecutor):
                for proc in list((pool._processes or {}).values()):  # noqa: SLF001 - no public way to stop a running task
                    proc.terminate()
            self._broken(pool)  # a thread cannot be stopped: the next job gets a new pool, not a turn behind it

        if not fut.done():
            self._record(job, "failed", {"error": f"exceeded its deadline ({self.timeout:g} s); its slot was freed"}, then=stop)

    def _finished(self, job: str, fut: Future[dict[str, Any]], pool: Executor) -> None:
        if fut.cancelled():  # its pool was shut down before it started
            self._record(job, "failed", {"error": "cancelled before it started (its worker pool was stopped); submit it again"})
            return
        exc = fut.exception()
        if exc is None:
            self._record(job, "done", fut.result())
            return
        if isinstance(exc, BrokenProcessPool):
            self._broken(pool)  # the pool it ran in (the current one may already be a new one)
        if self._record(job, "failed", {"error": f"{type(exc).__name__}: {exc}"}):
            log.error("replay job %s failed: %s: %s", job, type(exc).__name__, exc)

    def get(self, aid: str, job: str) -> dict[str, Any]:
        """The job ``job`` of analysis ``aid`` (:class:`~deploysignal.store.NotFound` when there is no
        such job of that analysis). A ``running`` job of a process of this host that no longer runs is
        reported ``lost``."""
        got = get_job(self.manager.store, job)
        if got is None or got["analysis"] != aid or got["analysis_created"] not in (None, self.manager.store.get(aid).created):
            raise NotFound(f"no replay job {job!r} of analysis {aid!r}")
        if got["state"] == "running" and self._lost(job, got):
            got = {**got, "state": "lost", "result": {"error": f"the process that ran it ({got['owner']}) ended before it finished; submit it again"}}
        return got

    def _lost(self, job: str, got: dict[str, Any]) -> bool:
        if got["owner"] == self.owner:
            with self._guard:
                return job not in self._done
        deadline = (got["result"] or {}).get("deadline")
        if not isinstance(deadline, str):
            return False
        return datetime.fromisoformat(self.now()) > datetime.fromisoformat(deadline) + timedelta(seconds=GRACE)

    def wait(self, aid: str, job: str) -> dict[str, Any]:
        """Block until the job (submitted by this process) finishes or its deadline passes (at most
        ``timeout`` seconds and a little); returns it."""
        with self._guard:
            done = self._done.get(job)
        if done is not None:
            done.wait(self.timeout + 5)
        return self.get(aid, job)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

