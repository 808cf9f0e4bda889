"""A fault-injecting TCP proxy: one listening port in front of one upstream (a terminal's way
to the server), its faults switched at any moment from another thread.

Modes (:class:`Mode`):

- ``clean``: bytes pass as they come;
- ``partition``: every open connection is reset and new ones are reset at once (the far end is
  unreachable, fast);
- ``blackhole``: connections are accepted and everything sent is swallowed, nothing answers
  (the far end is unreachable, slow: the client's timeouts decide); when the mode ends, every
  connection that lost bytes is reset;
- ``delay``: each piece waits ``delay_s`` before it is passed on;
- ``cut_request``: each connection (a new one, or one kept alive, counted from the switch) is
  cut (both ways reset) after a random number of the bytes the client sends (mid-request: the
  server may have read part, or all, of it);
- ``cut_answer``: each connection is cut after a random number of the bytes the server
  answers (mid-answer: the server has done what was asked, the client never hears it);
- ``trickle``: the answer is passed on a few bytes at a time, with a pause between pieces.

The event loop runs in a daemon thread of its own; :meth:`FaultProxy.set_mode` is safe from any
thread.  The cut points come from the proxy's own seeded generator; when bytes arrive is up to
the processes on both ends, so a run is not replayed byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["FaultProxy", "Mode"]


class Mode(StrEnum):
    CLEAN = "clean"
    PARTITION = "partition"
    BLACKHOLE = "blackhole"
    DELAY = "delay"
    CUT_REQUEST = "cut_request"
    CUT_ANSWER = "cut_answer"
    TRICKLE = "trickle"


#: the upper bound of a random cut point, bytes (a request or answer of the POS is smaller
#: than a few kB; a feed page larger)
CUT_MAX = 4096


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    #: bytes still allowed in each direction before the cut; None: no cut
    up_left: int | None = None
    down_left: int | None = None
    swallowed: bool = False

    def abort(self) -> None:
        """Reset both ways, dropping what is still buffered (a fault)."""
        for w in (self.client, self.upstream):
            if w is not None and not w.is_closing():
                w.transport.abort()

    def close(self) -> None:
        """Close both ways once what is buffered is sent (the end of a connection)."""
        for w in (self.client, self.upstream):
            if w is not None and not w.is_closing():
                w.close()


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1:``port`` (0: any free port, :attr:`port` after :meth:`start`) and
    forwards to 127.0.0.1:``upstream_port``."""

    upstream_port: int
    seed: int = 0
    port: int = 0
    delay_s: float = 0.3
    trickle_bytes: int = 16
    trickle_pause_s: float = 0.02
    #: how many connections met each fault (``connections`` in all, ``reset``, ``swallowed``,
    #: ``cut_request``, ``cut_answer``, ``upstream_down``) and how often each mode was set
    #: (``mode_MODE``)
    counts: Counter[str] = field(default_factory=Counter)
    _mode: Mode = Mode.CLEAN
    _conns: set[_Conn] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # -- from any thread ----------------------------------------------------------------------
    def start(self) -> FaultProxy:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", self.port)
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
            ready.set()
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"proxy-{self.upstream_port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Switch the fault; waits until the proxy has switched."""
        if self._loop is None:
            raise RuntimeError("the proxy is not running")
        done = asyncio.run_coroutine_threadsafe(self._switch(mode), self._loop)
        done.result(10)

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for c in list(self._conns):
                c.abort()
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- in the loop --------------------------------------------------------------------------
    async def _switch(self, mode: Mode) -> None:
        old, self._mode = self._mode, mode
        if mode != old:
            self.counts[f"mode_{mode}"] += 1
        for c in list(self._conns):
            if mode == Mode.PARTITION or (old == Mode.BLACKHOLE and c.swallowed):
                c.abort()
            # a kept-alive connection is cut too, at a point counted from now
            c.up_left = self._rng.randint(1, CUT_MAX) if mode == Mode.CUT_REQUEST else None
            c.down_left = self._rng.randint(1, CUT_MAX) if mode == Mode.CUT_ANSWER else None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts["connections"] += 1
        conn = _Conn(writer)
        mode = self._mode
        if mode == Mode.PARTITION:
            self.counts["reset"] += 1
            conn.abort()
            return
        if mode == Mode.CUT_REQUEST:
            conn.up_left = self._rng.randint(1, CUT_MAX)
        elif mode == Mode.CUT_ANSWER:
            conn.down_left = self._rng.randint(1, CUT_MAX)
        self._conns.add(conn)
        try:
            if mode == Mode.BLACKHOLE:
                conn.swallowed = True
                self.counts["swallowed"] += 1
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, conn.upstream = await asyncio.open_connection(
                    "127.0.0.1", self.upstream_port
                )
            except OSError:
                self.counts["upstream_down"] += 1
                return
            await asyncio.gather(
                self._pipe(conn, reader, conn.upstream, up=True),
                self._pipe(conn, up_reader, writer, up=False),
            )
        finally:
            self._conns.discard(conn)
            conn.close()

    async def _trickle(self, dst: asyncio.StreamWriter, data: bytes) -> bytes:
        """Pass ``data`` on a few bytes at a time while the mode lasts; returns what is left
        when it ends (passed on at once)."""
        while data and self._mode == Mode.TRICKLE:
            dst.write(data[: self.trickle_bytes])
            data = data[self.trickle_bytes :]
            await dst.drain()
            await asyncio.sleep(self.trickle_pause_s)
        return data

    async def _pipe(
        self,
        conn: _Conn,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        *,
        up: bool,
    ) -> None:
        try:
            while data := await src.read(65536):
                mode = self._mode
                if mode == Mode.BLACKHOLE:
                    conn.swallowed = True
                    continue
                left = conn.up_left if up else conn.down_left
                if left is not None and len(data) >= left:
                    dst.write(data[:left])
                    with contextlib.suppress(ConnectionError):
                        await dst.drain()
                    self.counts["cut_request" if up else "cut_answer"] += 1
                    conn.abort()
                    return
                if left is not None:
                    if up:
                        conn.up_left = left - len(data)
                    else:
                        conn.down_left = left - len(data)
                if mode == Mode.DELAY:
                    await asyncio.sleep(self.delay_s)
                if mode == Mode.TRICKLE and not up:
                    data = await self._trickle(dst, data)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            conn.abort()
            return
        if dst.can_write_eof() and not dst.is_closing():  # a half-close is passed on
            with contextlib.suppress(ConnectionError, OSError):
                dst.write_eof()
