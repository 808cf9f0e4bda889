"""The central server's HTTP API (FastAPI).  Routes are thin: they authenticate, then call the
service modules (accounts, terminals, authorize, ingest, feed, policy).

Error shape, for every error: ``{"error": {"code": "...", "message": "..."}}`` with the status
of :mod:`sync.server.errors`.
"""

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from edge.errors import StoreError
from sync.server import accounts, authorize, feed, holders, ingest, ledger, policy, terminals
from sync.server.context import Context, current_version
from sync.server.errors import ServiceError, Unauthorized
from sync.server.models import (
    AccountIn,
    AuthorizeIn,
    CardIn,
    EnrollIn,
    JournalIn,
    LoginIn,
    PolicyIn,
    RosterIn,
    StatusIn,
    TokenIn,
    TopupIn,
)

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


def create_app(ctx: Context) -> FastAPI:
    auth = terminals.TerminalAuth(ctx)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.notifier.bind(asyncio.get_running_loop())
        yield

    app = FastAPI(
        title="ykt central server",
        version="1",
        description="Accounts, ledger, terminals, journal ingest and delta feed of the campus "
        "one-card system.  Terminal requests are signed (X-Ykt-* headers); admin requests "
        "carry the admin token as a bearer token.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        first = details[0] if details else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return _error(
            422, "invalid", f"{where}: {first.get('msg', 'invalid request')}", details=details
        )

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error on %s: %s", request.url.path, exc)
        return _error(503, "store_unavailable", "the database is unavailable; retry later")

    # -- authentication ----------------------------------------------------------------------
    admin_hash = ctx.setting("admin_token_sha256")

    def admin(request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        digest = hashlib.sha256(token.encode()).hexdigest()
        if not token or not admin_hash or not hmac.compare_digest(digest, admin_hash):
            raise Unauthorized("admin token required (Authorization: Bearer …)", "bad_admin_token")
        return "admin"

    async def terminal(request: Request) -> dict[str, Any]:
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return await run_in_threadpool(
            auth.authenticate, request.method, target, body, request.headers
        )

    def bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise Unauthorized("sign in first (Authorization: Bearer <session>)", "bad_session")
        return header[7:]

    def holder(request: Request) -> dict[str, Any]:
        return holders.session_account(ctx, bearer(request))

    Admin = Annotated[str, Depends(admin)]
    Terminal = Annotated[dict[str, Any], Depends(terminal)]
    Holder = Annotated[dict[str, Any], Depends(holder)]

    # -- public -------------------------------------------------------------------------------
    @app.get("/v1/health", tags=["public"])
    def health() -> dict[str, Any]:
        return {
            "ok": True,
            "campus_id": ctx.config.campus_id,
            "time_ms": ctx.now_ms(),
            "version": current_version(ctx.db),
        }

    # -- admin --------------------------------------------------------------------------------
    @app.post("/v1/admin/accounts", tags=["admin"], status_code=201)
    def add_account(body: AccountIn, actor: Admin) -> dict[str, Any]:
        return accounts.add_account(ctx, actor=actor, **body.model_dump())

    @app.post("/v1/admin/roster", tags=["admin"])
    def import_roster(body: RosterIn, actor: Admin) -> dict[str, Any]:
        return accounts.import_roster(ctx, body.csv, actor=actor)

    @app.get("/v1/admin/accounts/{number}", tags=["admin"])
    def show_account(number: str, actor: Admin) -> dict[str, Any]:
        return accounts.show_account(ctx, number)

    @app.post("/v1/admin/accounts/{number}/status", tags=["admin"])
    def change_status(number: str, body: StatusIn, actor: Admin) -> dict[str, Any]:
        return accounts.change_status(ctx, number, body.action, actor=actor)

    @app.post("/v1/admin/accounts/{number}/pin-reset", tags=["admin"])
    def pin_reset(number: str, actor: Admin) -> dict[str, Any]:
        return accounts.reset_pin_tries(ctx, number, actor=actor)

    @app.post("/v1/admin/accounts/{number}/cards", tags=["admin"], status_code=201)
    def issue_card(number: str, body: CardIn, actor: Admin) -> dict[str, Any]:
        return accounts.issue_card(ctx, number, body.uid, actor=actor)

    @app.post("/v1/admin/accounts/{number}/topups", tags=["admin"])
    def topup(number: str, body: TopupIn, actor: Admin) -> dict[str, Any]:
        return accounts.topup(ctx, number, body.amount_fen, body.channel, body.request_id, actor)

    @app.post("/v1/admin/terminals/tokens", tags=["admin"], status_code=201)
    def enroll_token(body: TokenIn, actor: Admin) -> dict[str, Any]:
        return terminals.create_enroll_token(ctx, body.role, body.name)

    @app.get("/v1/admin/terminals", tags=["admin"])
    def list_terminals(actor: Admin) -> dict[str, Any]:
        return {"terminals": terminals.list_terminals(ctx)}

    @app.post("/v1/admin/terminals/{terminal_id}/revoke", tags=["admin"])
    def revoke_terminal(terminal_id: str, actor: Admin) -> dict[str, Any]:
        return terminals.revoke(ctx, terminal_id)

    @app.get("/v1/admin/ledger/check", tags=["admin"])
    def ledger_check(actor: Admin) -> dict[str, Any]:
        return ledger.check(ctx.db)

    @app.get("/v1/admin/alarms", tags=["admin"])
    def alarms(actor: Admin) -> dict[str, Any]:
        rows = ctx.db.all("SELECT * FROM alarms ORDER BY id DESC LIMIT 500")
        return {"alarms": [dict(r) for r in rows]}

    @app.get("/v1/admin/policy", tags=["admin"])
    def get_policy(actor: Admin) -> dict[str, Any]:
        return ctx.policy()

    @app.put("/v1/admin/policy", tags=["admin"])
    def put_policy(body: PolicyIn, actor: Admin) -> dict[str, Any]:
        return policy.set_policy(ctx, body.values)

    # -- card holders (the app, WeChat, the website) ------------------------------------------
    @app.post("/v1/app/login", tags=["app"])
    def app_login(body: LoginIn) -> dict[str, Any]:
        """R16: staff/student number (card number for temporary and consumer cards) + query
        password."""
        return holders.login(ctx, body.number, body.password)

    @app.post("/v1/app/logout", tags=["app"])
    def app_logout(request: Request, who: Holder) -> dict[str, Any]:
        return holders.logout(ctx, bearer(request))

    @app.get("/v1/app/me", tags=["app"])
    def app_me(who: Holder) -> dict[str, Any]:
        """The signed-in holder's account: balance, transition balance, limit, status."""
        return accounts.show_account(ctx, who["number"], history=False)

    # -- terminals ----------------------------------------------------------------------------
    @app.post("/v1/terminals/enroll", tags=["terminal"], status_code=201)
    def enroll(body: EnrollIn) -> dict[str, Any]:
        return terminals.enroll(ctx, body.token, body.public_key)

    @app.post("/v1/pos/authorize", tags=["terminal"])
    def pos_authorize(body: AuthorizeIn, term: Terminal) -> dict[str, Any]:
        terminals.require_role(term, "pos")
        return authorize.authorize(ctx, term, body.model_dump())

    @app.post("/v1/journal", tags=["terminal"])
    def push_journal(body: JournalIn, term: Terminal) -> dict[str, Any]:
        full = ctx.db.one("SELECT * FROM terminals WHERE id = ?", (term["id"],))
        assert full is not None
        return ingest.ingest(ctx, dict(full), body.records)

    @app.get("/v1/feed", tags=["terminal"])
    async def pull_feed(
        term: Terminal,
        since: Annotated[int, Query(ge=0)] = 0,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            current = await run_in_threadpool(current_version, ctx.db)
            remaining = deadline - loop.time()
            if current != since or remaining <= 0:
                break
            await ctx.notifier.wait(min(remaining, 1.0))
        return await run_in_threadpool(feed.delta, ctx, term, since)

    return app
