"""The terminal routes a lunch peak is made of, served without the framework's layers.

At a canteen's busiest minutes nearly every request is one of three: a POS's online
``POST /v1/pos/authorize``, its ``POST /v1/journal`` push, and the feed long-poll
``GET /v1/feed`` every terminal holds.  Through FastAPI each crossed a dozen layers (its
middlewares, routing, the dependency solver, response encoding) on the event loop's thread,
and the loop was the server's bottleneck: py-spy put the business of a sale at a few percent
of the server and the layers at most of it (docs/benchmarks.md, peak).

:class:`HotRoutes` serves those three when the request is an ordinary one: a JSON body of the
route's model within :data:`~sync.bodylimit.MAX_BODY_BYTES`, or the feed's four query
parameters in their plain form.  The checks are the same ones, in the same order, and the
answers the same: the signed request is checked and its nonce claimed
(:class:`~sync.server.terminals.TerminalAuth`), the role checked (:mod:`sync.server.roles`),
then the service runs; an error answers through
:func:`sync.server.answers.error_response`, as on every route.
A sale takes one worker-thread hop (check, claim, authorize) where it took three.

Anything else (no or another content type, a body that is not JSON or not of the model, an
odd query, a body over the limit) goes to the FastAPI route of the same path, which stays
the reference: it answers with its own validation errors, and it documents the route in the
OpenAPI schema.  A body already read is handed on as it came.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync.bodylimit import MAX_BODY_BYTES, content_length, send_json
from sync.bounds import MAX_ID
from sync.errors import YktError
from sync.records import to_bytes
from sync.server import authorize, feed, ingest, merchants, roles
from sync.server.answers import error_response
from sync.server.api_auth import ApiAuth
from sync.server.context import Context
from sync.server.errors import Forbidden
from sync.server.models import AuthorizeIn, JournalIn
from sync.server.workers import GroupCommit

log = logging.getLogger(__name__)

T = TypeVar("T")
#: runs ``fn(*args)`` for a coroutine: on a worker thread, or where it is
Run = Callable[..., Awaitable[Any]]
#: a feed page's JSON and its version
Page = tuple[bytes, int]
#: the most feed pages built in one job on a worker thread (:meth:`LongPoll._page`) …
PAGE_BATCH = 100
#: … and on the event loop (SQLite): a wake's pages a few milliseconds a turn, the sales between
INLINE_BATCH = 10

#: the longest a feed long-poll waits (``wait``), seconds
MAX_WAIT_S = 30.0
#: the longest a feed stream lasts, seconds (its ``head`` report is as old at most; a terminal
#: opens the next one at once) …
MAX_STREAM_S = 120.0
#: … and each stream lasts a random part of its later quarter: streams opened together (a
#: server's restart, a network back) are renewed apart the next time
STREAM_SPREAD = 0.25
#: a long-poll with no news ends at a random point of the later half of its ``wait``: a wake
#: answers every parked poll at once, their next polls arrive together, and with a fixed end
#: they would all end together again ``wait`` seconds later, and again and again: at a lunch
#: peak on PostgreSQL each such burst (500 polls a process) queued the online authorizations
#: for about a second (docs/benchmarks.md, peak).  Spread, the ends come a few dozen a second.
WAIT_SPREAD = 0.5
#: … on a tick of the event loop's clock of this many seconds: the waits that end within one
#: tick end together, and their pages are built as one batch from one read of what they share
#: (:class:`sync.server.feed.FeedShare`).  Apart, each quiet page of a stream read its own
#: rows: a wake begins every stream's wait at once, so their quiet pages came 100 a second
#: for the two seconds before the next report at a lunch peak, a read each: on PostgreSQL ×2
#: the feed process rose from 0.13 to 0.2 of a core there (0.38 in a run whose sales stalled
#: then) and its backends from 0.03 to 0.06 (docs/benchmarks.md, peak)
WAIT_TICK_S = 0.25


#: the largest journal head a terminal reports (``head``, ``acked``)
MAX_HEAD = 2**62

AUTHORIZE = "/v1/pos/authorize"
JOURNAL = "/v1/journal"
FEED = "/v1/feed"


def _on_tick(at: float) -> float:
    """The first tick of the loop's clock (:data:`WAIT_TICK_S`) at or after ``at``."""
    return math.ceil(at / WAIT_TICK_S) * WAIT_TICK_S


async def until_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (call it once the request's body is read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


@dataclass(frozen=True)
class FeedAsk:
    """A feed request, checked: its terminal (the row its signature was checked against),
    ``since``, ``wait``, ``head`` (the terminal's journal head: its records not synced yet are
    reported by the settlement report) and ``acked`` (the head the server acked to it: above
    what the server holds, it was restored from a backup, :mod:`sync.server.recovery`)."""

    term: dict[str, Any]
    since: int
    wait: float
    head: int | None
    acked: int | None


class LongPoll:
    """The feed long-poll (``GET /v1/feed``), for the hot route and the FastAPI one alike."""

    def __init__(self, ctx: Context, api_auth: ApiAuth) -> None:
        self.ctx = ctx
        self.pages_share = feed.FeedShare()
        self._asked: list[tuple[dict[str, Any], int, asyncio.Future[Page]]] = []
        self._building: set[asyncio.Task[None]] = set()
        self._filling = False  # a batch is on its way (the next starts when it ends)
        self.feed_thread = api_auth.feed_thread

    async def answer(
        self, ask: FeedAsk, gone: asyncio.Future[None], run: Run | None = None
    ) -> bytes:
        """The page of the feed after ``ask.since``, once there is one or ``ask.wait`` seconds
        have passed (or the server stops, or the terminal goes away: ``gone``).  ``run`` runs
        its database work (by default on the feed's own threads)."""
        run = run or self.feed_thread
        deadline = await self._open(ask, run)
        body, _ = await self._next(ask.term, ask.since, deadline, gone, run)
        return body

    async def pages(
        self, ask: FeedAsk, gone: asyncio.Future[None], run: Run | None = None
    ) -> AsyncIterator[bytes]:
        """The feed as a stream (``stream=1``): each page after ``since`` as soon as there
        is news, and one whenever ``wait`` seconds (spread as :data:`WAIT_SPREAD` says) pass
        without any (whose account snapshots ride it, as a long-poll's answer at its timeout
        does), on the one request, for :data:`MAX_STREAM_S` at most (spread as
        :data:`STREAM_SPREAD` says); with ``wait`` 0, one page.

        A wake answers every parked long-poll at once, and each answer brings its terminal's
        next signed request (a new request parsed, its signature checked, its nonce claimed,
        its head stored, the version read): at a lunch peak on PostgreSQL, 1,000 of those a
        wake took the 2-core machine for about a second while the online authorizations
        queued (docs/benchmarks.md, peak).  A stream sends the page on the request it has and
        goes on waiting, its wait begun again as a new long-poll's would be.  It does not end
        when a wait passes without news either: a wake begins every stream's wait at once, so
        the streams that ended so came back together (a fifth of them, with reports 12 s
        apart), just before the next wake, as a second burst of signed requests.  Every page
        checks its terminal's row as the request's signature check did (still active, the
        same key: :meth:`sync.server.feed.FeedShare.pages`), so a terminal revoked or
        re-keyed meanwhile gets no further page."""
        run = run or self.feed_thread
        loop = asyncio.get_running_loop()
        ends = _on_tick(loop.time() + MAX_STREAM_S * (1.0 - STREAM_SPREAD * self.ctx.rng.random()))
        deadline = await self._open(ask, run)
        since = ask.since
        while True:
            body, since = await self._next(ask.term, since, min(deadline, ends), gone, run)
            yield body
            now = loop.time()
            if ask.wait <= 0 or now >= ends or gone.done() or self.ctx.notifier.closing:
                return
            deadline = self._wait_end(now, ask.wait)

    async def _open(self, ask: FeedAsk, run: Run) -> float:
        """Store the reported ``head``; the loop time the request's wait ends at."""
        if ask.head is not None:
            await run(merchants.report_head, self.ctx, ask.term["id"], ask.head, ask.acked)
        return self._wait_end(asyncio.get_running_loop().time(), ask.wait)

    def _wait_end(self, now: float, wait: float) -> float:
        """When a wait of ``wait`` seconds begun ``now`` ends: at a random point of its later
        half (:data:`WAIT_SPREAD`), on the next tick (:data:`WAIT_TICK_S`); no wait: now."""
        if wait <= 0:
            return now
        return _on_tick(now + wait * (1.0 - WAIT_SPREAD * self.ctx.rng.random()))

    async def _next(
        self,
        term: dict[str, Any],
        since: int,
        deadline: float,
        gone: asyncio.Future[None],
        run: Run,
    ) -> Page:
        """The next page after ``since`` once there is news or at ``deadline``: its JSON and
        its version."""
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        notifier = ctx.notifier
        seen = notifier.generation
        news = notifier.news_for(since, await notifier.version(ctx.db))
        while True:
            remaining = deadline - loop.time()
            if news or remaining <= 0 or notifier.closing or gone.done():
                break
            await notifier.wait(seen, remaining, gone)
            if notifier.generation != seen:  # woken: the version may have moved
                seen = notifier.generation
                news = await notifier.version(ctx.db) != since
        return await self._page(term, since, run)

    def _page(self, term: dict[str, Any], since: int, run: Run) -> asyncio.Future[Page]:
        """The page after ``since`` for ``term``: built with the others asked for meanwhile
        (a wake releases the parked requests :data:`~sync.server.context.WAKE_CHUNK` a turn
        of the event loop), a batch at a time, in one job of ``run`` with their terminals'
        rows read in one statement (:meth:`sync.server.feed.FeedShare.pages`).  A page at a
        time, a wake's thousand pages were a thousand thread hops and statements.  A batch
        is :data:`PAGE_BATCH` pages on a worker thread; where the database work runs on the
        event loop (SQLite) :data:`INLINE_BATCH`, one batch a turn, so that the sales in
        between are not held up for the whole wake."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Page] = loop.create_future()
        self._asked.append((term, since, fut))
        if not self._filling:
            self._filling = True
            loop.call_soon(self._build, run)
        return fut

    def _build(self, run: Run) -> None:
        """Start the next batch (the last one ended)."""
        size = INLINE_BATCH if self.ctx.db.writes_inline() else PAGE_BATCH
        batch, self._asked = self._asked[:size], self._asked[size:]
        task = asyncio.ensure_future(self._fill(batch, run))
        self._building.add(task)
        task.add_done_callback(self._building.discard)

    def _built(self, run: Run) -> None:
        if self._asked:
            asyncio.get_running_loop().call_soon(self._build, run)
        else:
            self._filling = False

    async def _fill(
        self, batch: list[tuple[dict[str, Any], int, asyncio.Future[Page]]], run: Run
    ) -> None:
        ctx = self.ctx
        notifier = ctx.notifier

        def build() -> list[Page | None]:
            got = self.pages_share.pages(ctx, [(term, since) for term, since, _ in batch])
            for page in got:
                if page is not None:
                    notifier.saw(page.version)
            return [None if page is None else (to_bytes(page), page.version) for page in got]

        try:
            pages = await run(build)
        except BaseException as exc:  # every page of the batch fails alike (the database)
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._built(run)
        for (term, _, fut), page in zip(batch, pages, strict=True):
            if fut.done():  # its request went away meanwhile
                continue
            if page is None:
                fut.set_exception(
                    Forbidden(f"terminal {term['id']} is revoked", "terminal_revoked")
                )
            else:
                fut.set_result(page)


#: the media type of a feed stream: one page of JSON a line
NDJSON = b"application/x-ndjson"


async def send_pages(
    pages: AsyncIterator[bytes], scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer with the pages of a feed stream (:meth:`LongPoll.pages`), one JSON a line, each
    sent as it comes.  An error before the first page answers as on every route; after it,
    the stream ends there (the status is gone) and the terminal asks again."""
    started = False
    try:
        async for page in pages:
            if not started:
                headers = [(b"content-type", NDJSON)]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                started = True
            await send({"type": "http.response.body", "body": page + b"\n", "more_body": True})
    except YktError as exc:
        if not started:
            await error_response(exc, FEED)(scope, receive, send)
            return
        log.warning("feed stream ended early: %s", exc)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class PageStream(Response):
    """A feed stream as a route's answer (the FastAPI route of ``GET /v1/feed``):
    ``open_pages(gone)`` gives the pages, ``gone`` being done once the terminal went away."""

    def __init__(self, open_pages: Callable[[asyncio.Future[None]], AsyncIterator[bytes]]) -> None:
        super().__init__(media_type=NDJSON.decode())
        self.open_pages = open_pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(until_disconnect(receive))
        try:
            await send_pages(self.open_pages(gone), scope, receive, send)
        finally:
            gone.cancel()


# -- the ordinary requests -----------------------------------------------------------------------
_UINT = re.compile(rb"[0-9]{1,19}")
_WAIT = re.compile(rb"[0-9]{1,6}(\.[0-9]{1,9})?")
_FEED_BOUNDS = {b"since": MAX_ID, b"head": MAX_HEAD, b"acked": MAX_HEAD}
_FLAG = {b"0": False, b"1": True}


def feed_query(raw: bytes) -> dict[str, Any] | None:
    """``since``, ``wait``, ``head``, ``acked`` and ``stream`` of a feed query in their plain
    form (each at most once, digits, within the route's bounds; ``stream`` 0 or 1), or None
    for anything else."""
    out: dict[str, Any] = {}
    if not raw:
        return out
    for part in raw.split(b"&"):
        name, eq, value = part.partition(b"=")
        key = name.decode("ascii", "replace")
        if not eq or key in out:
            return None
        if name == b"wait":
            if _WAIT.fullmatch(value) is None or float(value) > MAX_WAIT_S:
                return None
            out[key] = float(value)
        elif name in _FEED_BOUNDS:
            if _UINT.fullmatch(value) is None or int(value) > _FEED_BOUNDS[name]:
                return None
            out[key] = int(value)
        elif name == b"stream" and value in _FLAG:
            out[key] = _FLAG[value]
        else:
            return None
    return out


def _json_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


async def _read(receive: Receive) -> bytes | None:
    """The whole body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the body already read given back first."""
    given = False

    async def again() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def _model(model: type[BaseModel], body: bytes) -> BaseModel | None:
    try:
        return model.model_validate(json.loads(body))
    except (ValueError, RecursionError, ValidationError):  # json's errors, nesting too deep
        return None


class HotRoutes:
    """Serves the ordinary requests of the hot routes; hands the rest to ``fallback`` (the
    FastAPI app)."""

    def __init__(self, ctx: Context, api_auth: ApiAuth, poll: LongPoll) -> None:
        self.ctx = ctx
        self.auth = api_auth.terminal_auth
        self.feed_thread = api_auth.feed_thread
        self.poll = poll
        #: the one thread of the hot routes' transactions (off SQLite), whose queued sales
        #: share the disk's flush
        self.one = GroupCommit(ctx.db, "ykt-hot")
        self.routes: dict[
            tuple[str, str], Callable[[Scope, Receive, Send, ASGIApp], Awaitable[None]]
        ]
        self.routes = {
            ("POST", AUTHORIZE): self._authorize,
            ("POST", JOURNAL): self._journal,
            ("GET", FEED): self._feed,
        }

    def route(
        self, scope: Scope
    ) -> Callable[[Scope, Receive, Send, ASGIApp], Awaitable[None]] | None:
        if scope["type"] != "http" or scope.get("root_path"):
            return None
        return self.routes.get((scope["method"], scope["path"]))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` here on the event loop's thread when the database allows it
        (:meth:`sync.db.Database.writes_inline`: SQLite), else on the feed's threads.  On a
        worker thread a transaction gives the GIL up at every statement and waits for it
        again behind the loop and the other threads, all the while holding the one writer
        turn: at a lunch peak a sale's transaction held it 5–10 times longer than alone, and
        the writer turn was the server's limit (docs/benchmarks.md, peak).  Here a sale's
        transactions take about a millisecond of the loop."""
        if self.ctx.db.writes_inline():
            return fn(*args)
        return await self.feed_thread(fn, *args)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, work: Callable[[], bytes]
    ) -> None:
        """Run ``work`` (on the loop as :meth:`_run` does, else on the one thread of
        :attr:`one`: the writer turn is one for all processes on PostgreSQL, and more threads
        only fought over the GIL while holding it; measured at the peak, authorize p50 77 →
        11 ms); send its JSON or the error it raised."""
        try:
            if self.ctx.db.writes_inline():
                body = work()
            else:
                body = await self.one.run(work)
        except YktError as exc:
            await error_response(exc, scope["path"])(scope, receive, send)
            return
        await send_json(send, 200, body)

    async def _posted(
        self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp, model: type[BaseModel]
    ) -> tuple[bytes, BaseModel, Headers] | None:
        """The body and model of an ordinary POST, or None (then handed to ``fallback``)."""
        length = content_length(scope)
        if length is None or length > MAX_BODY_BYTES or not _json_body(scope):
            await fallback(scope, receive, send)
            return None
        body = await _read(receive)
        if body is None:  # gone before its body arrived: nobody to answer
            return None
        parsed = _model(model, body)
        if parsed is None:
            await fallback(scope, _replay(body, receive), send)
            return None
        return body, parsed, Headers(scope=scope)

    @staticmethod
    def _target(scope: Scope) -> str | None:
        query: bytes = scope.get("query_string", b"")
        if not query:
            return str(scope["path"])
        try:
            return f"{scope['path']}?{query.decode('ascii')}"
        except UnicodeDecodeError:
            return None

    async def _authorize(
        self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp
    ) -> None:
        def serve(term: dict[str, Any], req: BaseModel) -> Any:
            return authorize.authorize(self.ctx, term, req.model_dump())

        await self._signed_post(scope, receive, send, fallback, AuthorizeIn, serve)

    async def _journal(self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
        def serve(term: dict[str, Any], push: BaseModel) -> Any:
            assert isinstance(push, JournalIn)
            return ingest.push(self.ctx, term, push.records, push.acked)

        await self._signed_post(scope, receive, send, fallback, JournalIn, serve)

    async def _signed_post(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        fallback: ASGIApp,
        model: type[BaseModel],
        serve: Callable[[dict[str, Any], BaseModel], Any],
    ) -> None:
        """A terminal's signed POST: the signature, the role, then ``serve(terminal, body)``
        with the request's nonce claimed in its first write transaction
        (:meth:`~sync.server.terminals.TerminalAuth.signed`), whose answer goes out as
        JSON."""
        target = self._target(scope)
        if target is None:
            await fallback(scope, receive, send)
            return
        got = await self._posted(scope, receive, send, fallback, model)
        if got is None:
            return
        body, parsed, headers = got
        endpoint = f"POST {scope['path']}"

        def work() -> bytes:
            with self.auth.signed("POST", target, body, headers, endpoint) as term:
                return to_bytes(serve(term, parsed))

        await self._answer(scope, receive, send, work)

    async def _feed(self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
        query = feed_query(scope.get("query_string", b""))
        target = self._target(scope)
        if query is None or target is None or content_length(scope) or _chunked(scope):
            await fallback(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:
            return
        try:
            term = await self.auth.authenticate_async(
                "GET", target, body, Headers(scope=scope), run=self._run
            )
            roles.require(term, f"GET {FEED}")
            ask = FeedAsk(
                term,
                query.get("since", 0),
                query.get("wait", 0.0),
                query.get("head"),
                query.get("acked"),
            )
            gone = asyncio.ensure_future(until_disconnect(receive))
            try:
                if query.get("stream"):
                    await send_pages(self.poll.pages(ask, gone, self._run), scope, receive, send)
                    return
                page = await self.poll.answer(ask, gone, self._run)
            finally:
                gone.cancel()
        except YktError as exc:
            await error_response(exc, FEED)(scope, receive, send)
            return
        await send_json(send, 200, page)


def _chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])
