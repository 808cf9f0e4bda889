"""The terminal's background link to the server: pushes the journal in batches and pulls the
delta feed (long-poll), with exponential backoff and jitter while the server is unreachable.
It resumes after restarts from the journal's acked sequence and the cache's feed version.
A terminal that moves no money by journal (a kiosk) runs the feed half alone (``journal=None``).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edge.cache import Cache
from edge.journal import Journal
from edge.link import Link
from sync.client import ServerClient
from sync.errors import ServerRefused, SyncError, YktError
from sync.records import Alarm, FeedPage, to_json

log = logging.getLogger(__name__)


class Backoff:
    """Exponential backoff with jitter: ``min(cap, base·2ⁿ)`` scaled by a random 0.5–1.0."""

    def __init__(self, rng: random.Random, base: float = 0.25, cap: float = 5.0) -> None:
        self.rng, self.base, self.cap, self.n = rng, base, cap, 0

    def next(self) -> float:
        delay: float = min(self.cap, self.base * (2.0**self.n)) * (0.5 + self.rng.random() / 2)
        self.n = min(self.n + 1, 30)
        return delay

    def reset(self) -> None:
        self.n = 0


@dataclass(frozen=True)
class Retry:
    """Wait ``delay`` seconds before trying again; ``early``: a new record (a push) or a
    successful push (a feed pull) ends the wait."""

    delay: float
    early: bool


class Uplink:
    def __init__(
        self,
        journal: Journal | None,
        cache: Cache,
        client_factory: Callable[[], ServerClient],
        link: Link,
        rng: random.Random,
        batch: int = 500,
        poll_wait_s: float = 20.0,
    ) -> None:
        self.journal = journal
        self.cache = cache
        self.client_factory = client_factory
        self.link = link
        self.rng = rng
        self.batch = batch
        self.poll_wait_s = poll_wait_s
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._feed_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.synced = threading.Condition()  # notified after every ack and every feed page
        self.last_push_error = ""
        self.last_pull_ms: int | None = None  # when a feed page was last stored
        #: run after the queue is drained while online (the till pushes its shift reports)
        self.after_push: Callable[[ServerClient], object] | None = None
        #: told the alarms the server raised on a pushed batch, before the ack is taken
        self.alarm_sink: Callable[[list[Alarm]], None] | None = None

    def start(self) -> None:
        loops = [("uplink-feed", self._feed_loop)]
        if self.journal is not None:
            loops.insert(0, ("uplink-push", self._push_loop))
        for name, fn in loops:
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._feed_wake.set()

    def kick(self) -> None:
        """A record was journaled: push now."""
        self._kick.set()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def _notify(self) -> None:
        with self.synced:
            self.synced.notify_all()

    # -- push ---------------------------------------------------------------------------------
    def _push_loop(self) -> None:
        assert self.journal is not None  # started only with a journal
        client = self.client_factory()
        backoff = Backoff(self.rng)
        while not self._stop.is_set():
            self._kick.wait(timeout=5.0)
            self._kick.clear()
            while self.journal.queued > 0 and not self._stop.is_set():
                retry = self.push_batch(client, backoff)
                if retry is None:
                    continue
                if retry.early:
                    self._kick.wait(retry.delay)  # a new sale (or stop) retries at once
                    self._kick.clear()
                else:
                    self._stop.wait(retry.delay)
            after = self.after_push
            if after is not None and self.link.online and not self._stop.is_set():
                try:
                    after(client)
                except Exception:  # the push thread never dies of it
                    log.exception("pushing after the journal failed")

    def push_batch(self, client: ServerClient, backoff: Backoff) -> Retry | None:
        """Push the oldest unsent batch and take the server's ack.  None: it went through
        (push the next one now); else how long to wait before trying again."""
        assert self.journal is not None, "a feed-only uplink pushes nothing"
        batch = self.journal.unsent(self.batch)
        before = self.journal.acked
        try:
            resp = client.push(batch, acked=before)
        except SyncError as exc:
            self.last_push_error = str(exc)
            if not isinstance(exc, ServerRefused):  # refused: the server is up
                self.link.down(str(exc))
            delay = backoff.next()
            log.warning("journal push failed (%s); retrying in %.1fs", exc, delay)
            return Retry(delay, early=True)
        self.link.up()
        self._feed_wake.set()  # the server is back: the feed need not sit out its backoff
        for alarm in resp.alarms:
            log.error("server raised an alarm on our journal: %s", alarm)
        sink = self.alarm_sink
        if resp.alarms and sink is not None:
            sink(resp.alarms)
        if self._server_behind(resp.ack, before):
            backoff.reset()
            return None  # push again from the server's ack
        try:
            self.journal.set_acked(resp.ack)
        except YktError as exc:
            # e.g. an ack beyond our head: this journal is not the one the server knows
            # (restored or replaced); the operator must look, the thread goes on
            log.error("bad ack from server: %s", exc)
            self.last_push_error = f"bad ack from server: {exc}"
        self._notify()
        if self.journal.acked <= before:
            alarms = [to_json(a) for a in resp.alarms]
            if not self.last_push_error:
                self.last_push_error = f"server did not advance the ack: {alarms}"
            delay = backoff.next()
            log.warning("server did not advance the ack (%s); retrying in %.1fs", alarms, delay)
            return Retry(delay, early=False)
        backoff.reset()
        self.last_push_error = ""
        return None

    def _server_behind(self, ack: int, acked_before: int) -> bool:
        """The server's ack is below what it had acked before the request was sent: its data
        was restored from a backup and lost our later records.  Queue them again."""
        if self.journal is None or not 0 <= ack < acked_before:
            return False
        queued = self.journal.rewind(ack)
        if queued:
            log.warning(
                "the server acks only up to record %d, below the %d it had acked (restored from "
                "a backup?): sending %d records again",
                ack,
                acked_before,
                queued,
            )
        return queued > 0

    # -- feed ---------------------------------------------------------------------------------
    def _feed_loop(self) -> None:
        client = self.client_factory()
        backoff = Backoff(self.rng)
        while not self._stop.is_set():
            if self.link.online and self.poll_wait_s > 0:
                retry = self.pull_stream(client, backoff)
            else:
                retry = self.pull_page(client, backoff)
            if retry is None:
                continue
            if retry.early:
                self._feed_wake.clear()
                self._feed_wake.wait(retry.delay)  # a successful push (or stop) ends the wait
            else:
                self._stop.wait(retry.delay)

    def pull_page(self, client: ServerClient, backoff: Backoff) -> Retry | None:
        """Pull one page of the feed (a long poll while online) into the cache.  None: pull
        the next one now; else how long to wait before trying again."""
        wait = self.poll_wait_s if self.link.online else 0
        journal = self.journal
        acked = journal.acked if journal is not None else 0
        head = journal.head_seq if journal is not None else None
        try:
            resp = client.feed(
                self.cache.version, wait=wait, head=head, acked=acked if journal else None
            )
        except SyncError as exc:
            self.link.down(str(exc))
            delay = backoff.next()
            log.warning("feed pull failed (%s); retrying in %.1fs", exc, delay)
            return Retry(delay, early=True)
        return self._store(resp, acked, backoff)

    def pull_stream(self, client: ServerClient, backoff: Backoff) -> Retry | None:
        """Hold a feed stream (online) and store each page as it arrives (a page at least
        every :attr:`poll_wait_s`), until the server ends it (after 90–120 s).  A loss report
        reaches this terminal as a page on the open request: the server does not take a new
        signed request from every terminal at once for it (docs/api.md).  None: open the
        next one now; else how long to wait."""
        journal = self.journal
        acked = journal.acked if journal is not None else 0
        head = journal.head_seq if journal is not None else None
        pages = client.feed_stream(
            self.cache.version,
            wait=self.poll_wait_s,
            head=head,
            acked=acked if journal else None,
        )
        try:
            for resp in pages:
                # the ack the journal had when the stream opened: every page's is at least
                # that unless the server lost data (a later value may be above a page built
                # before a push's ack came back)
                retry = self._store(resp, acked, backoff)
                if retry is not None or self._stop.is_set():
                    return retry
        except SyncError as exc:
            self.link.down(str(exc))
            delay = backoff.next()
            log.warning("feed stream failed (%s); retrying in %.1fs", exc, delay)
            return Retry(delay, early=True)
        finally:
            pages.close()
        return None

    def _store(self, resp: FeedPage, acked: int, backoff: Backoff) -> Retry | None:
        """Store a feed page in the cache; ``acked``: the journal's ack when it was asked."""
        try:
            self.cache.apply(resp)
        except YktError as exc:  # a page the cache cannot take (e.g. a bad policy)
            delay = backoff.next()
            log.error("feed page not stored (%s); retrying in %.1fs", exc, delay)
            return Retry(delay, early=False)
        was_online = self.link.online
        self.last_pull_ms = self.link.clock.now_ms()
        self.link.up()
        backoff.reset()
        self._notify()
        if self._server_behind(resp.ack, acked) or not was_online:
            self.kick()  # drain the queue now
        return None
