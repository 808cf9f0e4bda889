"""Who is calling, for every route of the API (FastAPI dependencies):

- **staff** (``Authorization: Bearer <staff token>``; the bootstrap admin token is the
  superuser): :meth:`ApiAuth.staff` checks one permission of :mod:`sync.server.staff` and writes
  the request, with its outcome, to the audit log;
- **card holders** (``Authorization: Bearer <session>`` from ``/v1/app/login``, R16);
- **terminals** (signed requests, :mod:`sync.server.terminals`), each route open to the roles
  :mod:`sync.server.roles` lists for it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sync.server import holders, roles, staff, terminals
from sync.server.context import Context
from sync.server.errors import ServiceError, Unauthorized
from sync.server.staff import Actor
from sync.server.workers import Workers

T = TypeVar("T")


def client_of(request: Request) -> str:
    """The client address of a request (the per-client limits of :mod:`sync.server.holders`
    and :mod:`sync.server.ratelimit`).  Behind a reverse proxy it is the proxy's: see
    docs/operations.md."""
    return request.client.host if request.client else "unknown"


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise Unauthorized("sign in first (Authorization: Bearer …)", "bad_session")
    return header[7:].strip()


#: the threads that work for feed long-polls (:meth:`ApiAuth.feed_thread`).  Few: their work
#: is a round trip or two each, and every thread more in a wake is one more taking the GIL
#: from the thread of the POS's sales (:mod:`sync.server.hot`) at each of its round trips;
#: at a lunch peak on PostgreSQL ×2, 16 → 2 threads took authorize p99 from about 0.8 to
#: 0.6 s, and the holders' from about 0.5 to 0.1 s (docs/benchmarks.md, peak)
FEED_THREADS = 2
#: the route whose thread work runs on the feed's own threads
FEED_PATH = "/v1/feed"


class ApiAuth:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.terminal_auth = terminals.TerminalAuth(ctx)
        self.feed_workers = Workers("ykt-feed", FEED_THREADS)

    async def feed_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker thread of the feed's own few (:data:`FEED_THREADS`).

        A wake answers every parked long-poll at once and each terminal then sends its next
        signed request: on the shared thread pool the online authorizations, journal pushes
        and holders' requests queued behind hundreds of them.  On threads of their own, the
        feed's answers and checks take turns among themselves while the other requests go on
        (they share the CPU, but no queue)."""
        return await self.feed_workers.run(fn, *args)

    def close(self) -> None:
        """Let the feed's threads end (the app's shutdown)."""
        self.feed_workers.close()

    # -- terminals ---------------------------------------------------------------------------
    async def terminal(self, request: Request) -> dict[str, Any]:
        """The terminal that signed the request, if its role may call this route
        (:data:`sync.server.roles.ENDPOINTS`; 403 ``wrong_role`` otherwise)."""
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        run = self.feed_thread if request.url.path == FEED_PATH else run_in_threadpool
        term = await self.terminal_auth.authenticate_async(
            request.method, target, body, request.headers, run=run
        )
        route = request.scope.get("route")
        roles.require(term, f"{request.method} {getattr(route, 'path', request.url.path)}")
        return term

    # -- card holders ------------------------------------------------------------------------
    def holder(self, request: Request) -> dict[str, Any]:
        token = bearer(request)
        return holders.session_account(self.ctx, token)

    # -- staff -------------------------------------------------------------------------------
    def staff(self, permission: str) -> Any:
        """A dependency: the staff member, who must hold ``permission``; every call is audited."""
        ctx = self.ctx

        async def dep(request: Request) -> AsyncIterator[Actor]:
            header = request.headers.get("authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else ""
            actor = await run_in_threadpool(staff.authenticate, ctx, token)
            route = request.scope.get("route")
            action = getattr(route, "name", None) or f"{request.method} {request.url.path}"
            target = ",".join(str(v) for v in request.path_params.values())
            raw = await request.body()
            try:
                detail: Any = json.loads(raw) if raw else None
            except ValueError:
                detail = {"body": "(not JSON)"}
            if request.url.query:
                detail = {"query": str(request.url.query)[:500], "body": detail}

            async def log(outcome: str) -> None:
                await run_in_threadpool(staff.audit, ctx, actor, action, target, outcome, detail)

            try:
                actor.require(permission)
            except ServiceError as exc:
                await log(f"denied: {exc.code}")
                raise
            try:
                yield actor
            except ServiceError as exc:
                await log(f"error: {exc.code}")
                raise
            except StarletteHTTPException as exc:
                await log(f"error: http_{exc.status_code}")
                raise
            except Exception:
                await log("error: internal")
                raise
            await log("ok")

        return Depends(dep, scope="function")
