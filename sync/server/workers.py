"""Threads of their own for one kind of the server's blocking work (:class:`Workers`), and the
one thread of the hot routes' transactions on PostgreSQL (:class:`GroupCommit`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sync.db import CommitGroup, Database
from sync.errors import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Workers:
    """``threads`` worker threads and their queue, first come first served.

    A thread takes the next job as soon as it is done with one: unlike a thread of the
    shared pool held by a capacity limiter, whose turn passes on only once the event loop
    has seen the job end, the queue here moves while the loop is busy (a feed wake keeps it
    busy for the better part of a second: docs/benchmarks.md, peak).  The threads start when
    first needed; :meth:`close` lets them end."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the threads, once it is its turn."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def close(self) -> None:
        """Drop the jobs not started; the threads end after the ones running."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


#: a group of commits that left the disk for later is flushed once it holds this many sales …
GROUP_JOBS = 16
#: … or its first has waited this long (seconds), or no job waits behind the last
GROUP_WAIT_S = 0.010


class _Job:
    __slots__ = ("args", "error", "fn", "future", "loop", "result")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        self.loop, self.future, self.fn, self.args = loop, future, fn, args
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self) -> None:
        """Hand the outcome to the waiting coroutine (on its loop's thread)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self.future.done():  # cancelled: the client went away
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


class GroupCommit:
    """One thread for the hot routes' transactions on PostgreSQL, first come first served,
    whose sales share the disk's flush when they queue.

    A sale's transaction holds the writer lock of every server process, and a commit that waits
    for its fsync holds it through the fsync: behind a slow one (this machine's disk now and
    then takes 0.1–0.4 s: docs/benchmarks.md, peak) the sales queued, and then each paid an
    fsync of its own, one after the other; on a disk whose flush takes 2 ms the lunch peak's 200
    transactions a second no longer fit (docs/benchmarks.md). Here, while a job waits
    behind it, a sale's commit does not wait for the disk (:meth:`sync.db.Database.grouped`; only a transaction that asks,
    :meth:`sync.db.Tx.defer_commit`, never one that took a feed version): the lock passes on
    with the commit record and the job's answer is held. The last of the group (no job behind
    it) commits waiting for the disk, as every commit did before, and a commit that wrote puts
    everything committed before it on disk too (PostgreSQL flushes its WAL in order): the held
    answers go out with its own. When that last job wrote nothing (a refused signature), or
    :data:`GROUP_JOBS` answers are held, or the first has waited :data:`GROUP_WAIT_S`, one flush
    of its own (:meth:`sync.db.Database.flush`) puts them on disk. A sale is answered only once
    its hold is on disk, as before; a crash before loses the held sales, none of them answered
    (their terminals ask again or decide offline). A job alone commits and answers as it always
    did. A flush that fails answers every held job with its error (503): their holds are
    released when their terminals ask again under the same numbers."""

    def __init__(
        self,
        db: Database,
        name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.name = name
        self.clock = clock
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._held: list[_Job] = []
        self._held_since = 0.0
        self._group = CommitGroup(self._may_defer)
        #: whether commits may leave the disk for later: known once the thread has tried a
        #: flush (a database role that may not write to the WAL by itself cannot group)
        self.grouping: bool | None = None
        #: flushes made, commits of the thread's that waited for the disk and put held answers
        #: on disk with theirs, and the held answers released (for tests and measurements)
        self.flushes = 0
        self.shared = 0
        self.released = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread, once it is its turn; its outcome once what it
        committed is on disk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._start()
        self._queue.put(_Job(loop, future, fn, args))
        return await future

    def close(self) -> None:
        """Let the thread end after the jobs queued (their answers flushed first)."""
        if self._thread is not None:
            self._queue.put(None)

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                thread.start()
                self._thread = thread

    def _full(self) -> bool:
        """The held answers have waited long enough, or are as many as a group holds."""
        return bool(self._held) and (
            len(self._held) >= GROUP_JOBS - 1 or self.clock() - self._held_since >= GROUP_WAIT_S
        )

    def _may_defer(self) -> bool:
        """Asked at a commit: may it leave the disk for later?  Yes while a job waits behind
        this one and the group is not full; the last of a group commits waiting for the disk,
        which puts the group's commits there with its own."""
        return bool(self.grouping) and not self._queue.empty() and not self._full()

    def _loop(self) -> None:
        try:
            self.db.flush()
            self.grouping = True
        except Exception as exc:
            log.warning("sales will not share the disk's flushes (each waits for its own): %s", exc)
            self.grouping = False
        group = self._group
        while True:
            job = self._queue.get()
            if job is None:
                self._release()
                return
            group.deferred = group.flushed = False
            group.waiting = bool(self._held)
            with self.db.grouped(group):
                try:
                    job.result = job.fn(*job.args)
                except Exception as exc:  # answered as the job's own error
                    job.error = exc
            if group.deferred:
                if not self._held:
                    self._held_since = self.clock()
                self._held.append(job)
            else:
                job.settle()  # nothing of its own waits for the disk
                if self._held and group.flushed:  # its commit put the held ones on disk
                    self.shared += 1
                    self._settle_held()
            if self._held and (self._queue.empty() or self._full()):
                self._release()

    def _settle_held(self) -> None:
        held, self._held = self._held, []
        self.released += len(held)
        for job in held:
            job.settle()

    def _release(self) -> None:
        """One flush, then the held answers (or the flush's error to each)."""
        if not self._held:
            return
        try:
            self.db.flush()
        except Exception as exc:
            log.warning("flush of %d held answers failed: %s", len(self._held), exc)
            for job in self._held:
                job.result, job.error = None, StoreError(f"the sale may not be on disk: {exc}")
        else:
            self.flushes += 1
        self._settle_held()
