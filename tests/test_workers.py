"""The server's own worker threads (sync/server/workers.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sync.server.workers import Workers


def test_the_next_job_starts_while_the_event_loop_is_busy() -> None:
    """A job queued behind another starts as soon as that one ends, without waiting for the
    event loop (a thread held by a capacity limiter passes its turn on only once the loop
    has seen the job end: a busy loop stalled the POS's sales)."""
    second_started = threading.Event()

    async def main() -> list[str]:
        workers = Workers("test", 1)
        first = asyncio.ensure_future(workers.run(lambda: "first"))
        second = asyncio.ensure_future(workers.run(lambda: (second_started.set(), "second")[1]))
        await asyncio.sleep(0)  # both submitted
        # the loop is busy (blocked here): the second job must still start
        assert second_started.wait(10)
        got = [await first, await second]
        workers.close()
        return got

    assert asyncio.run(main()) == ["first", "second"]


def test_a_job_error_reaches_the_caller_and_the_threads_go_on() -> None:
    async def main() -> str:
        workers = Workers("test", 2)

        def boom() -> None:
            raise ValueError("bad")

        with pytest.raises(ValueError, match="bad"):
            await workers.run(boom)
        got = await workers.run(str.upper, "ok")
        workers.close()
        return got

    assert asyncio.run(main()) == "OK"
