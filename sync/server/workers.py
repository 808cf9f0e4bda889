"""Threads of their own for one kind of the server's blocking work (:class:`Workers`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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
