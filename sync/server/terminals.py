"""Terminals: one-time enrollment tokens, Ed25519 enrollment, signed-request checks, revocation.

A terminal generates its key pair itself; the admin gives it a one-time token; the terminal
sends its public key with the token and from then on signs every request
(:func:`sync.protocol.sign_request`).  Unsigned, stale, replayed or foreign-signed requests are
refused here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from sync import protocol
from sync.crypto import VerifyKey
from sync.db.backend import Params, values_insert
from sync.errors import ProtocolError, SignatureError, StoreError
from sync.server import reconcile, roles
from sync.server.context import Context
from sync.server.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from sync.server.roles import ROLES

TOKEN_TTL_MS = 24 * 3600 * 1000
_NAME = re.compile(r"^[\w.-]{1,64}$")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_enroll_token(
    ctx: Context, role: str, name: str, simulated: bool = False, merchant: str = "DEFAULT"
) -> dict[str, Any]:
    """A one-time token that enrolls a terminal of ``role`` for ``merchant`` (whose account its
    sales credit).  ``simulated``: a test or demo terminal with simulated card readers, which
    the feed sends the cards' signed identities (with their consumption-password verifiers) to
    make simulated cards from: never on a live campus (docs/security.md)."""
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", "bad_role")
    if not _NAME.match(name or ""):
        raise Invalid("terminal name: 1-64 letters, digits, '.', '_' or '-'", "bad_name")
    token = secrets.token_urlsafe(18)
    while token.startswith("-"):  # `ykt pos --enroll -x…` would read it as an option
        token = secrets.token_urlsafe(18)
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        if tx.one("SELECT 1 FROM merchants WHERE code = ?", (merchant,)) is None:
            raise NotFound(f"no merchant {merchant!r} (ykt admin merchant add)", "no_merchant")
        tx.execute(
            "INSERT INTO enroll_tokens (token_hash, role, name, created_ms, expires_ms, "
            "simulated, merchant) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_token_hash(token), role, name, now, now + TOKEN_TTL_MS, int(simulated), merchant),
        )
    return {
        "token": token,
        "role": role,
        "name": name,
        "merchant": merchant,
        "expires_ms": now + TOKEN_TTL_MS,
        "simulated": simulated,
    }


def enroll(ctx: Context, token: str, public_key: str, role: str | None = None) -> dict[str, Any]:
    try:
        VerifyKey.from_b64(public_key)
    except ProtocolError as exc:
        raise Invalid(f"public_key: {exc}", "bad_key") from exc
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        row = tx.one("SELECT * FROM enroll_tokens WHERE token_hash = ?", (_token_hash(token),))
        if row is None or row["expires_ms"] < now:
            raise Unauthorized("enrollment token is unknown or expired", "bad_token")
        if row["used_by"] is not None:
            raise Unauthorized("enrollment token was already used", "token_used")
        if role is not None and row["role"] != role:
            raise Conflict(
                f"the token enrolls a {row['role']} terminal, but this is a {role} agent "
                "(the token is not used up)",
                "wrong_role",
            )
        n = int(tx.scalar("SELECT COUNT(*) FROM terminals")) + 1
        tid = f"T{n:05d}"
        tx.execute(
            "INSERT INTO terminals (id, name, role, pubkey, head_hash, enrolled_ms, simulated, "
            "merchant) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tid,
                row["name"],
                row["role"],
                public_key,
                protocol.genesis_hash(tid),
                now,
                int(row["simulated"]),
                row["merchant"],
            ),
        )
        tx.execute(
            "UPDATE enroll_tokens SET used_by = ? WHERE token_hash = ?", (tid, row["token_hash"])
        )
    return {
        "terminal_id": tid,
        "name": row["name"],
        "role": row["role"],
        "merchant": row["merchant"],
        "campus_id": ctx.config.campus_id,
        "tz": ctx.config.tz,
        "server_time_ms": now,
    }


def list_terminals(ctx: Context) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in ctx.db.all(
            "SELECT id, name, role, status, head_seq, enrolled_ms, last_seen_ms, simulated, "
            "merchant, reported_head FROM terminals ORDER BY id"
        )
    ]


def revoke(ctx: Context, terminal_id: str) -> dict[str, Any]:
    """A revoked terminal is refused on every request, so its unsynced records can never
    arrive: what it was approved online but never synced is released (holds, provisional
    claims on phone codes), and its reverse-scan payments still waiting for a record are
    refunded (docs/security.md).  Its unsynced offline sales are the merchant's loss."""
    with ctx.db.tx() as tx:
        row = tx.one("SELECT head_seq FROM terminals WHERE id = ?", (terminal_id,))
        if row is None:
            raise NotFound(f"no terminal {terminal_id}", "no_terminal")
        tx.execute("UPDATE terminals SET status = 'revoked' WHERE id = ?", (terminal_id,))
        released = int(
            tx.scalar("SELECT COUNT(*) FROM holds WHERE terminal_id = ?", (terminal_id,))
        )
        tx.execute("DELETE FROM holds WHERE terminal_id = ?", (terminal_id,))
        tx.execute(
            "DELETE FROM code_uses WHERE terminal_id = ? AND seq > ?",
            (terminal_id, row["head_seq"]),
        )
        refunded = reconcile.settle(ctx, terminal_id, tx)
    if released or refunded:
        ctx.notifier.notify()
    return {
        "terminal_id": terminal_id,
        "status": "revoked",
        "holds_released": released,
        "reverse_refunded": refunded,
    }


#: the claims at most in one INSERT (3 parameters each: well within either database's limit)
CLAIM_ROWS = 500


@dataclass
class _Claim:
    terminal_id: str
    nonce: str
    time_ms: int
    result: bool | None = None
    error: BaseException | None = None


class NonceCache:
    """Nonces seen inside the freshness window, kept in the database (``nonces``), so neither
    a restart nor a second server process reopens the window for replays, and a terminal whose
    clock runs a little behind is not refused after a restart.  A nonce is forgotten once the
    time it was stamped with has left the window: the request would be stale by then.

    Claims made at the same time share one commit (group commit): while one thread commits,
    the claims that arrive queue up, and the next thread to take the turn writes them all in
    one transaction, each INSERT still answering for its own nonce.  A feed wake answers
    hundreds of long-polls whose next signed requests all arrive together: one commit each
    made the online authorizations queue behind hundreds of commits for the writer lock."""

    def __init__(self, ctx: Context, window_ms: int) -> None:
        self.ctx = ctx
        self.window_ms = window_ms
        self._pruned_ms = 0
        self._lock = threading.Lock()  # the queue and the prune time
        self._turn = threading.Lock()  # the one thread writing a group
        self._queue: list[_Claim] = []
        # claims waiting on the event loop (claim_async) and the task writing them
        self._waiting: list[tuple[_Claim, asyncio.Future[None]]] = []
        self._drain: asyncio.Task[None] | None = None

    def claim(self, terminal_id: str, nonce: str, time_ms: int, now_ms: int) -> bool:
        item = _Claim(terminal_id, nonce, time_ms)
        with self._lock:
            self._queue.append(item)
        with self._turn:
            if item.result is None and item.error is None:  # nobody wrote it yet: write all
                with self._lock:
                    group, self._queue = self._queue, []
                    prune = now_ms - self._pruned_ms > self.window_ms // 4
                    if prune:
                        self._pruned_ms = now_ms
                self._write(group, now_ms if prune else None)
        if item.error is not None:
            raise item.error
        return bool(item.result)

    def rides(self, now_ms: int) -> bool:
        """Whether a claim made ``now_ms`` rides its request's transaction (:meth:`riding`):
        on PostgreSQL, when no prune is due."""
        with self._lock:
            due = now_ms - self._pruned_ms > self.window_ms // 4
        return not due and self.ctx.db.dialect == "postgresql"

    @contextmanager
    def riding(
        self,
        terminal_id: str,
        nonce: str,
        time_ms: int,
        now_ms: int,
        ride: bool,
        known: Known | None = None,
    ) -> Iterator[None]:
        """The claim of a request whose work runs inside the ``with`` block, on this thread.

        On PostgreSQL the claim (a plain ``INSERT``: the nonces' key refuses a nonce seen
        before) rides the first write transaction of the work, in its first round trip
        (:meth:`sync.db.Database.rider`): the claim commits with what the request did, or
        fails it and nothing of it stays.  A signed sale then costs two round trips fewer
        (its claim and its push's), which the one thread of the sales spent waiting at a
        lunch peak (docs/benchmarks.md, peak).  Work that committed no write (a decline read
        before any transaction, an error) is claimed after it, before its answer goes out.
        A replay is refused (``replayed_request``) whichever way its claim went, its answer
        never sent.  ``ride`` (:meth:`rides`, asked once for the request): else claimed
        first, as always, on SQLite (a statement costs no round trip there) and when a prune
        is due (:meth:`claim`, which prunes).

        ``known`` (only where the claim rides): the terminal's row was not read for this
        request; its signature was checked against the key of a row found active before
        (:meth:`TerminalAuth.signed`).  The claim then rides only while the row is still
        active with that key and role (the INSERT fails its transaction otherwise: nothing of
        the request stays), and a claim of its own reads the row first
        (:meth:`Known.confirm`)."""
        if not ride:
            assert known is None  # a row not read for this request needs the guard that rides
            self._claim_alone(terminal_id, nonce, time_ms, now_ms, None)
            yield
            return
        insert: tuple[str, Params] = (
            (
                "INSERT INTO nonces (terminal_id, nonce, ts_ms) VALUES (?, ?, ?)",
                (terminal_id, nonce, time_ms),
            )
            if known is None
            else known.guarded_insert(nonce, time_ms)
        )
        failure: BaseException | None = None
        with self.ctx.db.rider((insert,)) as rider:
            try:
                yield
            except BaseException as exc:  # answered below, once the claim is known
                failure = exc
        # out of the block: a claim of its own here does not take the rider along
        if not (rider is not None and rider.committed):
            self._claim_alone(terminal_id, nonce, time_ms, now_ms, known)
        if failure is not None:
            raise failure

    def _claim_alone(
        self, terminal_id: str, nonce: str, time_ms: int, now_ms: int, known: Known | None
    ) -> None:
        """Claim a nonce in a transaction of its own (:meth:`claim`), the row it was not
        read for (``known``) read first; refused: ``replayed_request``."""
        if known is not None:
            known.confirm(self.ctx)
        if not self.claim(terminal_id, nonce, time_ms, now_ms):
            raise Unauthorized("request was replayed", "replayed_request") from None

    async def claim_async(
        self,
        terminal_id: str,
        nonce: str,
        time_ms: int,
        now_ms: int,
    ) -> bool:
        """:meth:`claim` for a request waiting on the event loop: the claims that arrive
        while a group is written wait on the loop, not on a thread each, and the next group
        takes them all (written on a worker thread of its own).  A wake's 1,000 long-polls
        send their next signed requests together: their nonces take a few commits, not a
        thread and a commit each."""
        item = _Claim(terminal_id, nonce, time_ms)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((item, done))
        drain = self._drain
        if drain is None or drain.done() or drain.get_loop() is not loop:
            self._drain = loop.create_task(self._drain_loop())
        await asyncio.shield(done)
        if item.error is not None:
            raise item.error
        return bool(item.result)

    async def _drain_loop(self) -> None:
        writer = anyio.CapacityLimiter(1)
        while self._waiting:
            batch, self._waiting = self._waiting, []
            group = [c for c, _ in batch]
            now_ms = self.ctx.now_ms()

            def write(group: list[_Claim] = group, now_ms: int = now_ms) -> None:
                with self._turn:
                    with self._lock:
                        prune = now_ms - self._pruned_ms > self.window_ms // 4
                        if prune:
                            self._pruned_ms = now_ms
                    self._write(group, now_ms if prune else None)

            try:
                if self.ctx.db.writes_inline():  # SQLite: here on the loop (sync.server.hot)
                    write()
                else:  # a thread of its own: not behind the shared pool's queue
                    await anyio.to_thread.run_sync(write, limiter=writer)
            except BaseException as exc:  # the write never ran: every claim of it failed
                for c in group:
                    if c.result is None and c.error is None:
                        c.error = exc if isinstance(exc, Exception) else StoreError(repr(exc))
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _write(self, group: list[_Claim], prune_at: int | None) -> None:
        """Write ``group``'s claims in one transaction of one INSERT a :data:`CLAIM_ROWS`
        (a wake's few hundred claims in one round trip, not one each); a claim is
        admitted if its row is among those the INSERT added (``RETURNING``).  A nonce twice
        in one group (a replay sent in parallel) is added once: its first claim is admitted,
        the other refused."""
        try:
            # not exclusive: the INSERT claims or finds each nonce by itself, so a signed
            # request does not queue behind a journal batch for the writer lock.  Not
            # durable: a claim lost at a power cut matters only if what the request did was
            # kept, and the request's own durable commit, after the claim, keeps the claim
            # too (sync.db.Database.tx); a fsync a request less.  Its statements and its
            # commit go in one round trip (``last``)
            statements: list[tuple[str, Params]] = []
            if prune_at is not None:
                statements.append(
                    ("DELETE FROM nonces WHERE ts_ms < ?", (prune_at - self.window_ms,))
                )
            for at in range(0, len(group), CLAIM_ROWS):
                sql, params = values_insert(
                    "nonces",
                    ("terminal_id", "nonce", "ts_ms"),
                    [(c.terminal_id, c.nonce, c.time_ms) for c in group[at : at + CLAIM_ROWS]],
                )
                statements.append(
                    (
                        sql + " ON CONFLICT (terminal_id, nonce) DO NOTHING "
                        "RETURNING terminal_id, nonce",
                        params,
                    )
                )
            with self.ctx.db.tx(exclusive=False, durable=False) as tx:
                answers = tx.batch(statements, last=True)
            added = {
                (str(r["terminal_id"]), str(r["nonce"]))
                for rows in answers[1 if prune_at is not None else 0 :]
                for r in rows
            }
        except BaseException as exc:  # every claim of the group failed with it
            for c in group:
                c.error = exc
            if not isinstance(exc, Exception):
                raise
            return
        for c in group:
            key = (c.terminal_id, c.nonce)
            c.result = key in added
            added.discard(key)  # the same nonce again in this group: a replay


#: a terminal's row as a signed request is checked against
TERMINAL_READ = (
    "SELECT id, name, role, pubkey, status, simulated, head_seq FROM terminals WHERE id = ?"
)


def admit(tid: str, row: Mapping[str, Any] | None) -> None:
    """Refuse a request signed as ``tid`` whose row (its ``status`` at least) is ``row``
    unless it is an active terminal.  Checked before a request's work, and again by the work
    that gives a terminal money or records (an online authorization's hold, a push) inside
    its transaction, under the writer lock a revocation takes too: a revocation committed
    between the check and that transaction (whose release of the terminal's holds came
    before the hold) refuses the request instead."""
    if row is None:
        raise Unauthorized(f"unknown terminal {tid}", "unknown_terminal")
    if row["status"] != "active":
        raise Forbidden(f"terminal {tid} is revoked", "terminal_revoked")


@dataclass(frozen=True)
class Known:
    """A terminal's row found active by an earlier request's check, not read again for this
    one (:meth:`TerminalAuth.signed`): its key and role, which a terminal keeps for life (a
    new key is a new enrollment); only its status changes, once (revocation)."""

    terminal_id: str
    pubkey: str
    role: str

    def guarded_insert(self, nonce: str, time_ms: int) -> tuple[str, Params]:
        """The nonce's claim, made only while the row is still active with this key and role:
        otherwise ``1 / 0`` fails the transaction it rides (PostgreSQL: ``division_by_zero``),
        and nothing that transaction did stays.  The row is read under the writer lock of the
        transaction (every write of the hot routes takes it, and so does a revocation), so a
        revocation commits either before (the request fails) or after (it releases what the
        request was given: holds, claims on codes)."""
        return (
            "INSERT INTO nonces (terminal_id, nonce, ts_ms) SELECT ?, ?, ? "
            "WHERE 1 / (SELECT COUNT(*) FROM terminals WHERE id = ? AND status = 'active' "
            "AND pubkey = ? AND role = ?) = 1",
            (self.terminal_id, nonce, time_ms, self.terminal_id, self.pubkey, self.role),
        )

    def confirm(self, ctx: Context) -> None:
        """Read the row again; refuse the request as :meth:`TerminalAuth.check` would."""
        row = ctx.db.one(TERMINAL_READ, (self.terminal_id,))
        admit(self.terminal_id, row)
        assert row is not None
        if row["pubkey"] != self.pubkey or row["role"] != self.role:
            raise Unauthorized(
                f"terminal {self.terminal_id}'s key is not the one it signed with",
                "bad_signature",
            )


class TerminalAuth:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.nonces = NonceCache(ctx, ctx.config.max_skew_ms)
        self._keys: dict[tuple[str, str], VerifyKey] = {}
        #: the rows of terminals an earlier check found active (this process), by id: at most
        #: one a terminal ever enrolled (only a row read from the database is kept)
        self._active: dict[str, dict[str, Any]] = {}

    @contextmanager
    def signed(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        endpoint: str,
    ) -> Iterator[dict[str, Any]]:
        """A terminal's signed request whose work runs inside the ``with`` block, on this
        thread: the terminal row of a correctly signed, fresh request (:meth:`check`), its role
        for ``endpoint`` (:func:`sync.server.roles.require`), and its nonce claimed with the
        work's first write transaction (:meth:`NonceCache.riding`).

        Where the claim rides (PostgreSQL), the row of a terminal found active by an earlier
        request is not read again: the signature is checked against its key and the claim
        rides only while the row is still active with that key (:meth:`Known.guarded_insert`);
        work that committed no write reads the row before its claim of its own
        (:meth:`Known.confirm`).  A sale at a lunch peak then costs one round trip fewer on
        the sales' one thread (docs/benchmarks.md, peak).  A request refused because the
        terminal is revoked or unknown forgets the row."""
        tid = headers.get(protocol.H_TERMINAL) or ""
        try:
            ride = self.nonces.rides(self.ctx.now_ms())
            term, (tid, nonce, time_ms, now), cached = self._checked(
                method, target, body, headers, ride
            )
            roles.require(term, endpoint)
            known = Known(tid, str(term["pubkey"]), str(term["role"])) if cached else None
            with self.nonces.riding(tid, nonce, time_ms, now, ride, known):
                yield term
        except (Unauthorized, Forbidden) as exc:
            if exc.code in ("unknown_terminal", "terminal_revoked", "bad_signature"):
                self._active.pop(tid, None)
            raise

    def authenticate(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """The terminal row of a correctly signed, fresh, unreplayed request."""
        row, (tid, nonce, time_ms, now) = self.check(method, target, body, headers)
        if not self.nonces.claim(tid, nonce, time_ms, now):
            raise Unauthorized("request was replayed", "replayed_request")
        return row

    async def authenticate_async(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        run: Callable[..., Awaitable[Any]],
    ) -> dict[str, Any]:
        """:meth:`authenticate` from the event loop: the checks on a worker thread (``run``),
        the nonce claimed in a group with the others arriving together
        (:meth:`NonceCache.claim_async`)."""
        checked: tuple[dict[str, Any], tuple[str, str, int, int]] = await run(
            self.check, method, target, body, headers
        )
        row, (tid, nonce, time_ms, now) = checked
        if not await self.nonces.claim_async(tid, nonce, time_ms, now):
            raise Unauthorized("request was replayed", "replayed_request")
        return row

    def check(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], tuple[str, str, int, int]]:
        """The terminal row of a correctly signed, fresh request, and its nonce claim
        (terminal, nonce, signed time, now) still to be made."""
        row, claim, _ = self._checked(method, target, body, headers, False)
        return row, claim

    def _checked(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        may_keep: bool,
    ) -> tuple[dict[str, Any], tuple[str, str, int, int], bool]:
        """:meth:`check`, and whether the row is one an earlier check found active, not read
        again (only if ``may_keep``: :meth:`signed`, whose claim checks it in the work's
        transaction)."""
        tid = headers.get(protocol.H_TERMINAL)
        if not tid:
            raise Unauthorized("request is not signed by a terminal", "unsigned")
        row = self._active.get(tid) if may_keep else None
        kept = row is not None
        if row is None:
            found = self.ctx.db.one(TERMINAL_READ, (tid,))
            admit(tid, found)
            assert found is not None
            row = self._active[tid] = dict(found)
        key = self._keys.get((tid, row["pubkey"]))
        if key is None:
            key = self._keys[(tid, row["pubkey"])] = VerifyKey.from_b64(row["pubkey"])
        try:
            time_ms, nonce = protocol.verify_request(key, method, target, body, headers)
        except SignatureError as exc:
            raise Unauthorized(f"bad request signature: {exc}", "bad_signature") from exc
        now = self.ctx.now_ms()
        if abs(now - time_ms) > self.ctx.config.max_skew_ms:
            raise Unauthorized("request is stale (check the terminal's clock)", "stale_request")
        return dict(row), (tid, nonce, time_ms, now), kept
