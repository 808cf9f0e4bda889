"""Everything a server operation needs: the database, the clock, randomness, configuration,
the policy terminals receive, and the notifier that wakes long-polling terminals.

Nothing here is state of its own process that other server processes would need: several
``ykt server`` processes can share one database (docs/operations.md).  What must be shared lives in the
database (feed versions, nonces, rate limits, sessions, counters); the notifier hears of
changes made by the other processes (PostgreSQL LISTEN/NOTIFY, or a short poll of the feed
version on SQLite); each process's random generator is seeded apart (:func:`boot_number`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from sync.card.keys import Keystore
from sync.clock import DEFAULT_TZ, Clock, SystemClock, campus_date
from sync.db import Database, Row, Tx
from sync.files import private_dir
from sync.passwords import DEFAULT_LOG2_N
from sync.rules import DEFAULT_CHANNELS, DEFAULT_PIN_MAX_TRIES
from sync.server import keys
from sync.server.schema import MIGRATIONS

log = logging.getLogger(__name__)

#: the PostgreSQL notification channel of feed changes
FEED_CHANNEL = "ykt_feed"
#: how often a process polls the feed version when the database cannot notify (SQLite)
POLL_S = 0.25
#: the parked long-polls one wake releases per turn of the event loop (Notifier._release)
WAKE_CHUNK = 50
#: another SQLite process's changes (the watcher cannot tell a status change from a plain sale
#: there) wake the parked long-polls at most this many answers a second (1,000 parked: every
#: 5 s; a handful: every POLL_S) …
LAZY_ANSWERS_PER_S = 200.0
#: … and at least every LAZY_MAX_S
LAZY_MAX_S = 10.0


#: The policy the server sends to terminals (docs/architecture.md offline risk limits, R7 channels, R11 fee,
#: R12 automatic freeze rules).  Operators change it with ``ykt admin policy set``.
DEFAULT_POLICY: dict[str, Any] = {
    "offline_max_purchase_fen": 5000,
    "offline_max_card_day_fen": 10000,
    # what one card spends offline since its last online approval, at every terminal together
    # (carried on the card: at most MAX_CARD_OFFLINE_FEN; docs/security.md)
    "offline_max_card_fen": 10000,
    "offline_max_total_fen": 500000,
    "pin_max_tries": DEFAULT_PIN_MAX_TRIES,
    "reissue_fee_fen": 2000,
    "channels": dict(DEFAULT_CHANNELS),
    "auto_freeze_negative_balance": True,
    "auto_freeze_pin_lockout": False,
    "auto_freeze_query_lockout": False,
    # phone codes (docs/codes.md): validity window and clock-skew tolerance of payment and
    # authentication codes, how long a reverse-scan payment request can be paid, how long a
    # query-password confirmation (R6) covers one over-limit payment, and how long a
    # reverse-scan payment waits for its terminal's record before it is refunded by itself
    # (docs/security.md).  A hold of an online authorization has no time limit: it lasts until
    # the terminal's journal has synced past it (sync/server/authorize.py).
    "code_valid_s": 300,
    "code_skew_s": 60,
    "reverse_valid_s": 600,
    "confirm_ttl_s": 600,
    "reverse_refund_s": 86400,
    # R7: how long a top-up order can be paid at its payment provider (sync.server.topups)
    "topup_order_ttl_s": 900,
    # a card whose counters went back (a copied card, or one restored from an old image) is
    # blocked as soon as the server sees it (docs/security.md); the alarm is raised either way
    "auto_block_card_rollback": True,
}


#: the ID-token algorithms single sign-on accepts when the operator pins none: public-key
#: algorithms only (sync.server.sso)
SSO_ALGORITHMS = ("RS256", "ES256", "EdDSA")


@dataclass
class ServerConfig:
    data_dir: Path
    #: ``postgresql://…`` to keep the data in PostgreSQL; None: SQLite in ``data_dir``
    db_url: str | None = None
    campus_id: str = "ynart"
    tz: str = DEFAULT_TZ
    password_log2_n: int = DEFAULT_LOG2_N
    max_skew_ms: int = 120_000
    seed: int | None = None
    #: campus single sign-on (R16), an OpenID Connect provider; None: off
    sso_issuer: str | None = None
    sso_client_id: str = ""
    sso_client_secret: str = ""
    sso_claim: str = "preferred_username"
    #: the ID-token algorithms the provider may use (sync.server.sso: pinned per provider)
    sso_algorithms: tuple[str, ...] = SSO_ALGORITHMS

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ykt.db"

    @property
    def db_target(self) -> str | Path:
        return self.db_url or self.db_path


class Notifier:
    """Wakes long-polling requests when the feed version moves, whichever server process moved
    it.  ``notify`` (thread-safe) wakes this process's waiters and, on PostgreSQL, sends a
    NOTIFY that wakes every process's.  One watcher task per process also reads the version
    every POLL_S (SQLite: the only way to see another process's change; PostgreSQL: a safety
    net), so the waiters themselves never query the database while nothing changes: each wake
    moves ``generation``, and a waiter reads the version only when it moved; the waiters woken
    together share one read of it (:meth:`version`).

    A change that only moves balances (``notify(lazy=True, versions=…)``: plain sales) wakes
    nobody: the account snapshots in the feed are for offline decisions, and they ride the next
    answer each terminal gets anyway (its long-poll's timeout, 20 s for the POS uplink, or a
    status change).  At a lunch peak 100 sales a second woke the 1,000 parked long-polls
    (coalesced, every 5 s) and each answer brought a new signed request from its terminal: the
    feed took most of the server.  A status change (a loss report, a freeze, a wrong password,
    a card blocked) wakes at once, as before.  The watcher knows the versions this process's
    plain sales took (``versions``), so it does not wake for them either; a move it cannot
    explain is another process's: on PostgreSQL its status changes arrived by NOTIFY (so
    nothing more is done), on SQLite it wakes, coalesced, at most :data:`LAZY_ANSWERS_PER_S`
    answers a second (:meth:`lazy_s`), so a status change made by another SQLite process is
    seen within :meth:`lazy_s` (docs/operations.md)."""

    def __init__(self) -> None:
        self.waiting = 0  # long-polls parked in wait() now
        self._fired_at = 0.0  # loop time of the last wake
        self._version: tuple[int, asyncio.Future[int]] | None = None  # generation, its read
        self._loop: asyncio.AbstractEventLoop | None = None
        # parked in wait(), in arrival order (a dict: each leaves it at once when it ends)
        self._waiters: dict[asyncio.Future[None], None] = {}
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._watch: asyncio.Task[None] | None = None
        self.closing = False  # the server is stopping: long-polls answer at once
        self.generation = 0  # moves at every wake (event loop thread only)
        # the feed version read first after the last wake (None: none read yet) and the
        # highest version known here (reads, pages): see :meth:`news_for`
        self.floor: int | None = None
        self.known = 0
        self._floor_due = True
        self._quiet: set[int] = set()  # versions of this process's balance-only changes

    def attach(self, db: Database) -> None:
        self._db = db

    def close(self) -> None:
        self.closing = True
        self._wake()  # this process's long-polls only: the other processes go on

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop
        db = self._db
        if db is None:
            return
        if db.can_listen():
            db.listen(FEED_CHANNEL, self._wake)
        self._watch = loop.create_task(self._poll(db))

    async def unbind(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def _poll(self, db: Database) -> None:
        """Another process may have moved the version (SQLite cannot notify); look every POLL_S."""

        # the versions up to ``judged`` are judged; those up to ``last`` (the previous look)
        # are judged now: a sale's versions are known to be quiet by then, as its notify
        # follows its commit within far less than POLL_S
        judged: int | None = None
        last: int | None = None
        loop = asyncio.get_running_loop()
        pending = False  # a move not explained yet waits for its coalesced wake
        while True:
            try:
                now = await run_in_threadpool(current_version, db)
                if judged is not None and last is not None and last != judged:
                    pending = self._unexplained(judged, last) or pending
                if now < (last if last is not None else now):  # the data was replaced
                    pending = True
                    self.known = now
                judged = last if last is not None and last <= now else now
                last = now
                if pending and not db.can_listen():
                    if loop.time() - self._fired_at >= self.lazy_s():
                        pending = False
                        self._fire()
                else:
                    pending = False  # PostgreSQL: NOTIFY woke for the other processes
            except Exception as exc:  # the database is busy or gone: try again later
                log.debug("feed version poll: %s", exc)
            await asyncio.sleep(POLL_S)

    def _unexplained(self, seen: int, now: int) -> bool:
        """Whether a version in (seen, now] is not one of this process's balance-only
        changes (forgetting those up to ``now``)."""
        if now < seen:  # the data was replaced
            return True
        with self._lock:
            quiet = self._quiet
            unexplained = any(v not in quiet for v in range(seen + 1, now + 1))
            self._quiet = {v for v in quiet if v > now}
        return unexplained

    def notify(self, lazy: bool = False, versions: list[int] | tuple[int, ...] = ()) -> None:
        """The feed version moved: wake the long-polls at once, or (``lazy``: only balances
        moved, in ``versions``, what the transaction took: ``Tx.versions``) not at all."""
        if lazy:
            with self._lock:
                self._quiet.update(versions)
            return
        db = self._db
        if db is not None and db.can_listen():
            try:
                db.notify(FEED_CHANNEL)
            except Exception as exc:  # waiters still wake at their next check
                log.warning("cannot notify other server processes: %s", exc)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        if self._loop is not None:
            self._fired_at = self._loop.time()
        self.generation += 1
        self._floor_due = True
        woken, self._waiters = self._waiters, {}
        self._release(deque(woken))

    def _release(self, woken: deque[asyncio.Future[None]]) -> None:
        """Wake the parked long-polls :data:`WAKE_CHUNK` at a time, one chunk per turn of the
        event loop.  Woken all at once, 1,000 of them ran before anything else did (tens of
        milliseconds that an online authorization waited); each chunk's pages are then built
        together (:meth:`sync.server.hot.LongPoll._page`)."""
        for _ in range(min(WAKE_CHUNK, len(woken))):
            fut = woken.popleft()
            if not fut.done():
                fut.set_result(None)
        if woken and self._loop is not None:
            self._loop.call_soon(self._release, woken)

    def lazy_s(self) -> float:
        """How long a balance-only change may wait for its wake: the parked long-polls over
        the answers a second they may cost, between POLL_S and LAZY_MAX_S."""
        return min(LAZY_MAX_S, max(POLL_S, self.waiting / LAZY_ANSWERS_PER_S))

    async def version(self, db: Database) -> int:
        """The feed version, read once for all the waiters of one generation (a wake answers
        hundreds of long-polls: they share one read, not one each)."""
        gen = self.generation
        cached = self._version
        if cached is None or cached[0] != gen or (cached[1].done() and cached[1].exception()):
            fut = asyncio.ensure_future(run_in_threadpool(current_version, db))
            fut.add_done_callback(functools.partial(self._read, gen, self._floor_due))
            self._floor_due = False
            cached = self._version = (gen, fut)
        return await asyncio.shield(cached[1])

    def _read(self, gen: int, floor: bool, fut: asyncio.Future[int]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._floor_due = self._floor_due or floor
            return
        version = fut.result()
        self.saw(version)
        # the floor is the first read after the *last* wake: a read begun before a later
        # wake, ending after that wake's own read, would lower it to a version older than the
        # change that woke, and a stream between the two would take its page for news seen
        # (it heard of a loss report only when its wait ended, 10-20 s late)
        if floor and gen == self.generation:
            self.floor = version

    def saw(self, version: int) -> None:
        """A feed version read here (a page's)."""
        self.known = max(self.known, version)

    def news_for(self, since: int, current: int) -> bool:
        """Whether a long-poll from ``since`` has news to answer at once, ``current`` being
        the version read for this wake.  A terminal ahead of every version known here has:
        the data was replaced (a restore).  Otherwise only a change the terminal has not seen
        and that woke the long-polls (a loss report, a freeze: not a plain sale, whose
        balances ride the next answer, :meth:`notify`) makes news: a terminal's ``since``
        from a page read after the last wake has seen them all.  (Compared with ``current``
        alone, every answer to a terminal was news again at its next request while sales
        moved the version, and 1,000 parked terminals polled the server without rest.)"""
        if since > self.known:
            return True
        return current > since and (self.floor is None or since < self.floor)

    async def wait(
        self, generation: int, timeout: float, gone: asyncio.Future[None] | None = None
    ) -> None:
        """Until a wake after ``generation`` (read it before reading the version), timeout,
        or ``gone`` is done (the long-poll's terminal went away)."""
        if self.generation != generation:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def end(_: object = None) -> None:
            if not fut.done():
                fut.set_result(None)

        timer = loop.call_later(timeout, end)
        if gone is not None:
            gone.add_done_callback(end)
        self._waiters[fut] = None
        self.waiting += 1
        try:
            await fut
        finally:
            timer.cancel()
            if gone is not None:
                gone.remove_done_callback(end)
            self._waiters.pop(fut, None)
            if not fut.done():  # cancelled: a wake skips it
                fut.cancel()
            self.waiting -= 1


@dataclass
class Context:
    config: ServerConfig
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=secrets.SystemRandom)
    notifier: Notifier = field(default_factory=Notifier)
    _card_keys: Keystore | None = None
    _code_issuer: keys.Issuer | None = None
    _keys_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.notifier.attach(self.db)

    @classmethod
    def open(cls, config: ServerConfig, clock: Clock | None = None) -> Context:
        private_dir(config.data_dir)  # the database and key files in it hold the campus keys
        db = Database(config.db_target, synchronous="FULL", migrations=MIGRATIONS)
        rng: random.Random = secrets.SystemRandom()
        if config.seed is not None:
            boot = boot_number(db)
            # processes sharing the database, and restarts, must not draw the same ids
            rng = random.Random(config.seed if boot == 1 else f"{config.seed}/{boot}")
        ctx = cls(config=config, db=db, clock=clock or SystemClock(), rng=rng)
        ctx.shared_keys()
        return ctx

    def shared_keys(self) -> None:
        """Make (or check) the keys every server process shares — the card keys and the
        phone-code issuer, kept in the database — before they are needed inside a transaction
        (making them takes one of its own)."""
        self.card_keys  # noqa: B018
        self.code_issuer  # noqa: B018

    @property
    def card_keys(self) -> Keystore:
        """The campus card keys (master keys and the issuer key): the server is the card
        issuer (:func:`sync.server.keys.card_keys`)."""
        with self._keys_lock:
            if self._card_keys is None:
                self._card_keys = keys.card_keys(
                    self.config.data_dir, self.db, self.config.campus_id
                )
            return self._card_keys

    @property
    def code_issuer(self) -> keys.Issuer:
        """The campus's phone-code issuer (:func:`sync.server.keys.code_issuer`)."""
        with self._keys_lock:
            if self._code_issuer is None:
                self._code_issuer = keys.code_issuer(self.config.data_dir, self.db)
            return self._code_issuer

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def today(self) -> str:
        return campus_date(self.now_ms(), self.config.tz)

    def date_of(self, ms: int) -> str:
        return campus_date(ms, self.config.tz)

    # -- settings and policy -------------------------------------------------------------------
    def setting(self, key: str, default: Any = None) -> Any:
        raw = self.db.scalar("SELECT value FROM settings WHERE key = ?", (key,))
        return default if raw is None else json.loads(raw)

    put_setting = staticmethod(keys.put_setting)

    def policy(self) -> dict[str, Any]:
        return self.policy_of(self.db.all(*POLICY_READ))

    @staticmethod
    def policy_of(rows: list[Row]) -> dict[str, Any]:
        """The policy from the rows of :data:`POLICY_READ` (sent with other statements)."""
        stored = (json.loads(rows[0]["value"]) if rows else None) or {}
        merged = dict(DEFAULT_POLICY)
        # keys a release retired (hold_ttl_s, auto_freeze_double_spend) are no longer policy
        merged.update((k, v) for k, v in stored.items() if k in DEFAULT_POLICY)
        merged["channels"] = {**DEFAULT_POLICY["channels"], **stored.get("channels", {})}
        return merged


#: the statement :meth:`Context.policy` reads, for a caller that sends it with others
#: (``Database.reads``, ``Tx.batch``); :meth:`Context.policy_of` takes its rows
POLICY_READ = ("SELECT value FROM settings WHERE key = ?", ("policy",))

#: the statement of :func:`next_version`, for a caller that sends it with others
#: (``Tx.batch``); :func:`took_version` takes its rows
NEXT_VERSION = ("UPDATE versions SET value = value + 1 WHERE name = 'feed' RETURNING value", ())


def next_version(tx: Tx) -> int:
    """Take the next feed version; every row a transaction changes gets the same one.

    The UPDATE also takes the write lock on the counter, so versions become visible in order."""
    return took_version(tx, tx.all(*NEXT_VERSION))


def took_version(tx: Tx, rows: list[Any]) -> int:
    """The version :data:`NEXT_VERSION` took (its rows), noted as this transaction's."""
    version = int(rows[0]["value"])
    tx.versions.append(version)
    tx.hold_durable()  # a terminal may keep it as its own as soon as it commits
    return version


def boot_number(db: Database) -> int:
    """Count this start of a server process on the database (1 for the first ever)."""
    with db.tx() as tx:
        tx.execute(
            "INSERT INTO versions (name, value) VALUES ('boot', 1) "
            "ON CONFLICT (name) DO UPDATE SET value = versions.value + 1"
        )
        return int(tx.scalar("SELECT value FROM versions WHERE name = 'boot'"))


def current_version(db: Database) -> int:
    return int(db.scalar("SELECT value FROM versions WHERE name = 'feed'"))
