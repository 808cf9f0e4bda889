"""One POS in the simulator: the real journal, cache, deciders, engine and uplink steps on
its own files, a clock of its own (skew), and a client whose transport is the simulated network.

A crash (:class:`sim.fleet.net.Crash`, armed to fire at the n-th crash point: before or after
a journal write, a reverse-scan request, an ack or a feed page stored; before a request
leaves; while its answer is on the way) unwinds the call in
progress; :meth:`SimTerminal.restart` then drops every in-memory object and starts again from
the files as ``ykt pos`` does (edge/pos/agent.py): open reverse-scan requests are voided.
The journal's SQLite file keeps exactly what was committed (a process crash; the files are
opened with ``synchronous=OFF``: the operating system, which survives, has every commit).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.cache import Cache
from edge.journal import Journal
from edge.link import Link
from edge.pos.cardkeys import KeyProvider
from edge.pos.decide import Decider
from edge.pos.decide_qr import QrDecider
from edge.pos.engine import Engine
from edge.uplink import Backoff, Uplink
from sim.fleet.net import Crash, Net
from sim.reader import SimReader
from sync.client import ServerClient
from sync.clock import Clock
from sync.crypto import SigningKey
from sync.db import Database
from sync.errors import YktError

SYNC_PAGES = 8  # feed pages a forced sync step (the heal) pulls at most
SYNC_BATCHES = 8  # journal batches one sync step pushes at most


class SkewClock:
    """The terminal's clock: the campus clock plus this terminal's error."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.offset_ms = 0

    def now_ms(self) -> int:
        return self.base.now_ms() + self.offset_ms


class SimTerminal:
    def __init__(
        self,
        name: str,
        terminal_id: str,
        key: SigningKey,
        data: Path,
        base_clock: Clock,
        net: Net,
        rng: random.Random,
        campus_id: str,
        tz: str,
    ) -> None:
        self.name, self.id, self.key, self.data = name, terminal_id, key, data
        self.clock = SkewClock(base_clock)
        self.net = net
        self.rng = rng
        self.campus_id, self.tz = campus_id, tz
        self.crash_in: int | None = None  # crash at the n-th crash point from now
        self.crashes = 0
        self.retry_at_ms = 0
        self.reader = SimReader(name)
        self._open()

    # -- life ---------------------------------------------------------------------------------
    def _hook(self, where: str) -> None:
        if self.crash_in is None:
            return
        self.crash_in -= 1
        if self.crash_in <= 0:
            self.crash_in = None
            raise Crash(f"{self.name} died at {where}")

    def _wrap(self, obj: Any, name: str) -> None:
        real: Callable[..., Any] = getattr(obj, name)
        hook = self._hook

        def dying(*args: Any, **kw: Any) -> Any:
            hook(f"before {name}")
            out = real(*args, **kw)
            hook(f"after {name}")
            return out

        setattr(obj, name, dying)

    def _open(self) -> None:
        self.journal = Journal(
            Database(self.data / "journal.db", synchronous="OFF"),
            self.id,
            self.key,
            self.clock,
            self.tz,
        )
        self._wrap(self.journal, "append")
        self._wrap(self.journal, "open_order")
        self._wrap(self.journal, "set_acked")
        self.cache = Cache(Database(self.data / "cache.db", synchronous="OFF"))
        self._wrap(self.cache, "apply")
        self.link = Link(self.clock)
        self.client = ServerClient(
            "http://server.sim",
            terminal_id=self.id,
            key=self.key,
            clock=self.clock,
            transport=self.net.transport(self.id, self._hook),
        )
        self.keys = KeyProvider(self.data / "card-keys.json", self.client.keystore, role="pos")
        self.decider = Decider(
            self.journal, self.cache, self.client, self.link, self.clock, self.tz, self.keys
        )
        self.qr = QrDecider(self.decider, self.id, self.campus_id, self.key, self.rng)
        self.engine = Engine(self.decider, self.clock, self.qr)
        self.uplink = Uplink(
            self.journal, self.cache, lambda: self.client, self.link, self.rng, poll_wait_s=0
        )
        self.push_backoff = Backoff(self.rng)
        self.feed_backoff = Backoff(self.rng)
        try:  # edge/pos/agent.py: a request shown when the terminal stopped can no longer be paid
            self.qr.close_open("the terminal started again")
        except YktError:
            pass

    def restart(self) -> None:
        """The process died: a new one starts on the same files."""
        self.crash_in = None
        self.journal.db.close()
        self.cache.db.close()
        self.reader = SimReader(self.name)
        self._open()

    def close(self) -> None:
        self.journal.db.close()
        self.cache.db.close()

    # -- background sync (the uplink's two loops, one step each) -------------------------------
    def sync(self, force: bool = False) -> bool:
        """Pull the feed, then push the journal, as far as one step goes.  False when a
        request failed (the next try waits out the backoff, unless ``force``)."""
        now = self.clock.base.now_ms()
        if not force and now < self.retry_at_ms:
            return False
        for _ in range(SYNC_PAGES if force else 1):  # the next page comes at the next step
            version = self.cache.version
            retry = self.uplink.pull_page(self.client, self.feed_backoff)
            if retry is not None:
                self.retry_at_ms = now + int(retry.delay * 1000)
                return False
            if self.cache.version == version:
                break
        for _ in range(SYNC_BATCHES):
            if self.journal.queued <= 0:
                break
            retry = self.uplink.push_batch(self.client, self.push_backoff)
            if retry is not None:
                self.retry_at_ms = now + int(retry.delay * 1000)
                return False
        return True

    def push(self) -> None:
        """A record was journaled: the uplink pushes at once (its ``kick``)."""
        if self.link.online and self.journal.queued > 0:
            self.uplink.push_batch(self.client, self.push_backoff)
