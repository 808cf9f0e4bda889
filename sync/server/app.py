"""The central server's HTTP API (FastAPI).  Routes are thin: they authenticate, then call the
service modules (accounts, terminals, authorize, ingest, feed, policy).

Error shape, for every error: ``{"error": {"code": "...", "message": "..."}}`` with the status
of :mod:`sync.server.errors`.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from sync.bodylimit import MAX_BODY_BYTES, BodyLimit
from sync.bounds import MAX_ID
from sync.errors import YktError
from sync.records import to_json
from sync.server import (
    accounts,
    authorize,
    codes,
    holders,
    hot,
    ingest,
    ledger,
    policy,
    receipts,
    reconcile,
    recovery,
    reverse,
    terminals,
)
from sync.server.answers import error, error_response
from sync.server.api_auth import ApiAuth, bearer, client_of
from sync.server.api_models import (
    ERROR_RESPONSES,
    AccountHistoryOut,
    AccountOut,
    AlarmsOut,
    EnrolledOut,
    EnrollTokenOut,
    HealthOut,
    IssuedCardOut,
    KeystoreOut,
    LedgerCheckOut,
    LoginOut,
    LogoutOut,
    RecoveryOut,
    RevokedOut,
    RosterOut,
    TerminalsOut,
    TopupOut,
)
from sync.server.codes_models import (
    CodeKeysOut,
    CodeVerifyOut,
    ConfirmOut,
    ReversePaidOut,
    ReverseRequestOut,
)
from sync.server.context import Context, current_version
from sync.server.models import (
    AccountIn,
    AuthorizeIn,
    CardIn,
    CodeTextIn,
    ConfirmIn,
    EnrollIn,
    JournalIn,
    LoginIn,
    PolicyIn,
    RestoredIn,
    ResumeIn,
    ReversePayIn,
    RosterIn,
    StatusIn,
    TokenIn,
    TopupIn,
)
from sync.server.receipts import ReceiptKeyOut
from sync.server.routes_business import create_router
from sync.server.routes_merchants import create_merchant_router
from sync.server.routes_topups import create_router as create_topups_router
from sync.server.staff import Actor

log = logging.getLogger(__name__)

#: how often each server process refunds the reverse-scan payments that will meet no record
SETTLE_EVERY_S = 60.0
NumberPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
TerminalPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


#: The stable error code of a request field that fails validation (else "invalid").
FIELD_CODES = {"number": "bad_number", "id_card": "bad_id_card", "uid": "bad_uid"}


class ServerApp(FastAPI):
    """The FastAPI app, with the terminal routes of a lunch peak in front of it
    (:mod:`sync.server.hot`: their ordinary requests skip the framework's layers)."""

    hot_routes: hot.HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None if self.hot_routes is None else self.hot_routes.route(scope)
        if route is None:
            await super().__call__(scope, receive, send)
        else:
            await route(scope, receive, send, super().__call__)


def create_app(ctx: Context) -> FastAPI:
    api_auth = ApiAuth(ctx)
    poll = hot.LongPoll(ctx, api_auth)

    async def settle_reverse_payments() -> None:
        """Refund reverse-scan payments that will meet no record (sync/server/reconcile.py)."""
        while True:
            try:
                await run_in_threadpool(reconcile.settle, ctx)
            except (YktError, OSError):  # the database is away for a moment: next round
                log.exception("settling reverse-scan payments failed")
            await asyncio.sleep(SETTLE_EVERY_S)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ctx.notifier.bind(asyncio.get_running_loop())
        settler = asyncio.get_running_loop().create_task(settle_reverse_payments())
        yield
        settler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await settler
        await ctx.notifier.unbind()
        api_auth.close()
        if app.hot_routes is not None:
            app.hot_routes.one.close()

    app = ServerApp(
        title="ykt central server",
        version="1",
        description="Accounts, ledger, terminals, journal ingest and delta feed of the campus "
        "one-card system, and the business of card holders (app, WeChat, website: "
        "`/v1/app/…`, card-less `/v1/holder/…`), kiosks (card-present, `/v1/kiosk/…`) and the "
        "service desk (`/v1/admin/…`).  Terminal requests are signed (X-Ykt-* headers); staff "
        "requests carry a staff token and card holders a session token as a bearer token.  "
        'Every error is `{"error": {"code": …, "message": …}}` with a stable code.',
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.ctx = ctx
    # no request body over MAX_BODY_BYTES is buffered or parsed: 413 (sync.bodylimit)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.exception_handler(YktError)
    async def _ykt_error(request: Request, exc: YktError) -> JSONResponse:
        """Every error of ours answers with its own status and code (sync.errors)."""
        return error_response(exc, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. nested too deep)
            return error(422, "invalid", "the request body is not JSON that can be read")
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, f"http_{exc.status_code}"
        )
        return error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the offending input is not echoed back: it may be huge, secret or not even Unicode
        errors = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in exc.errors()]
        details = jsonable_encoder(errors, custom_encoder={Exception: str})
        first = details[0] if details else {}
        loc = [str(p) for p in first.get("loc", [])]
        kind = str(first.get("type", ""))
        malformed = kind not in ("missing", "json_invalid", "string_unicode") and not kind.endswith(
            ("_type", "_parsing")
        )  # present and of the right type, but not a valid value: the field's own code
        code = FIELD_CODES.get(loc[-1], "invalid") if malformed and len(loc) >= 2 else "invalid"
        return error(
            422, code, f"{'.'.join(loc)}: {first.get('msg', 'invalid request')}", details=details
        )

    # -- authentication (sync.server.api_auth) ----------------------------------------------
    Terminal = Annotated[dict[str, Any], Depends(api_auth.terminal)]
    Holder = Annotated[dict[str, Any], Depends(api_auth.holder)]
    # staff with one permission each (sync.server.staff); every call is audited
    Reader = Annotated[Actor, api_auth.staff("accounts.read")]
    Writer = Annotated[Actor, api_auth.staff("accounts.write")]
    StatusDesk = Annotated[Actor, api_auth.staff("status")]
    Cards = Annotated[Actor, api_auth.staff("cards")]
    Topups = Annotated[Actor, api_auth.staff("topup.cash")]
    Terminals = Annotated[Actor, api_auth.staff("terminals")]
    LedgerRead = Annotated[Actor, api_auth.staff("ledger")]
    PolicyRead = Annotated[Actor, api_auth.staff("policy.read")]
    PolicyWrite = Annotated[Actor, api_auth.staff("policy.write")]

    # -- public -------------------------------------------------------------------------------
    @app.get("/v1/health", tags=["public"], response_model=HealthOut)
    def health() -> dict[str, Any]:
        return {
            "ok": True,
            "campus_id": ctx.config.campus_id,
            "time_ms": ctx.now_ms(),
            "version": current_version(ctx.db),
        }

    # -- admin (service desk and operators) ---------------------------------------------------
    @app.post("/v1/admin/accounts", tags=["admin"], status_code=201, response_model=AccountOut)
    def add_account(body: AccountIn, actor: Writer) -> dict[str, Any]:
        return accounts.add_account(ctx, actor=actor.name, **body.model_dump())

    @app.post("/v1/admin/roster", tags=["admin"], response_model=RosterOut)
    def import_roster(body: RosterIn, actor: Writer) -> dict[str, Any]:
        """A roster CSV for a new intake: number,name,type,id_card[,limit][,expires]."""
        return accounts.import_roster(ctx, body.csv, actor=actor.name)

    @app.get("/v1/admin/accounts/{number}", tags=["admin"], response_model=AccountHistoryOut)
    def show_account(number: NumberPath, actor: Reader) -> dict[str, Any]:
        """Balances, limit, status, cards, bills and flow (R9)."""
        return accounts.show_account(ctx, number)

    @app.post("/v1/admin/accounts/{number}/status", tags=["admin"], response_model=AccountOut)
    def change_status(number: NumberPath, body: StatusIn, actor: StatusDesk) -> dict[str, Any]:
        """report-loss / unlock (R10), freeze / unfreeze (R12; only the desk unfreezes)."""
        return accounts.change_status(ctx, number, body.action, actor=actor.name)

    @app.post("/v1/admin/accounts/{number}/pin-reset", tags=["admin"], response_model=AccountOut)
    def pin_reset(number: NumberPath, actor: Writer) -> dict[str, Any]:
        return accounts.reset_pin_tries(ctx, number, actor=actor.name)

    @app.post(
        "/v1/admin/accounts/{number}/cards",
        tags=["admin"],
        status_code=201,
        response_model=IssuedCardOut,
    )
    def issue_card(number: NumberPath, body: CardIn, actor: Cards) -> dict[str, Any]:
        return accounts.issue_card(ctx, number, body.uid, actor=actor.name)

    @app.post("/v1/admin/accounts/{number}/topups", tags=["admin"], response_model=TopupOut)
    def topup(number: NumberPath, body: TopupIn, actor: Topups) -> dict[str, Any]:
        """R7: cash at the desk (permission ``topup.cash``, the finance role).  Money of the
        other channels enters only through an order paid at the channel's payment provider
        (``POST /v1/app/topups``)."""
        return accounts.topup(
            ctx, number, body.amount_fen, body.channel, body.request_id, actor.name
        )

    @app.post(
        "/v1/admin/terminals/tokens",
        tags=["admin"],
        status_code=201,
        response_model=EnrollTokenOut,
    )
    def enroll_token(body: TokenIn, actor: Terminals) -> dict[str, Any]:
        return terminals.create_enroll_token(
            ctx, body.role, body.name, body.simulated, body.merchant
        )

    @app.get("/v1/admin/terminals", tags=["admin"], response_model=TerminalsOut)
    def list_terminals(actor: Terminals) -> dict[str, Any]:
        return {"terminals": terminals.list_terminals(ctx)}

    @app.post("/v1/admin/terminals/{terminal_id}/revoke", tags=["admin"], response_model=RevokedOut)
    def revoke_terminal(terminal_id: TerminalPath, actor: Terminals) -> dict[str, Any]:
        return terminals.revoke(ctx, terminal_id)

    @app.get("/v1/admin/recovery", tags=["admin"], response_model=RecoveryOut)
    def recovery_status(actor: Terminals) -> dict[str, Any]:
        """Whether the server is recovering from a restore, and the terminals it waits for."""
        return recovery.status(ctx)

    @app.post("/v1/admin/recovery", tags=["admin"], response_model=RecoveryOut)
    def recovery_restored(body: RestoredIn, actor: Terminals) -> dict[str, Any]:
        """The database was restored from a backup (a PostgreSQL ``pg_restore``): refuse
        pay-outs and online approvals until every terminal has pushed again."""
        return recovery.enter(ctx, body.reason, actor.name)

    @app.post("/v1/admin/recovery/end", tags=["admin"], response_model=RecoveryOut)
    def recovery_end(body: ResumeIn, actor: Terminals) -> dict[str, Any]:
        """End the recovering state: when no terminal is waited for, or anyway with
        ``force`` (audited)."""
        return recovery.resume(ctx, actor.name, body.force)

    @app.get("/v1/admin/keystore", tags=["admin"], response_model=KeystoreOut)
    def admin_keystore(
        actor: Cards, role: Annotated[str, Query(pattern=r"^(desk|kiosk|pos|gate)$")] = "desk"
    ) -> dict[str, Any]:
        """A role-limited card keystore (for a service desk's ``card issue --reader``, or to
        install a terminal by hand); the issuer's private key never leaves the server."""
        if role in ("pos", "gate"):
            actor.require("terminals")
        return ctx.card_keys.for_role(role).to_dict()

    @app.get("/v1/admin/ledger/check", tags=["admin"], response_model=LedgerCheckOut)
    def ledger_check(actor: LedgerRead) -> dict[str, Any]:
        return ledger.check(ctx.db)

    @app.get("/v1/admin/alarms", tags=["admin"], response_model=AlarmsOut)
    def alarms(actor: LedgerRead) -> dict[str, Any]:
        rows = ctx.db.all("SELECT * FROM alarms ORDER BY id DESC LIMIT 500")
        return {"alarms": [dict(r) for r in rows]}

    @app.get("/v1/admin/policy", tags=["admin"])
    def get_policy(actor: PolicyRead) -> dict[str, Any]:
        """The policy terminals receive: offline risk limits, channels (R7), reissue fee
        (R11), automatic freeze rules (R12)."""
        return ctx.policy()

    @app.put("/v1/admin/policy", tags=["admin"])
    def put_policy(body: PolicyIn, actor: PolicyWrite) -> dict[str, Any]:
        return policy.set_policy(ctx, body.values)

    # -- card holders (the app, WeChat, the website): sign-in ---------------------------------
    @app.post("/v1/app/login", tags=["app"], response_model=LoginOut)
    def app_login(body: LoginIn, request: Request) -> dict[str, Any]:
        """R16: staff/student number (card number for temporary and consumer cards) + query
        password; wrong passwords lock the account and are limited per client (docs/api.md
        "Rate limits and lockouts")."""
        return holders.login(ctx, body.number, body.password, body.public_key, client_of(request))

    @app.post("/v1/app/logout", tags=["app"], response_model=LogoutOut)
    def app_logout(request: Request, who: Holder) -> dict[str, Any]:
        return holders.logout(ctx, bearer(request))

    # -- phone codes (R8, R18; docs/codes.md) -------------------------------------------------
    @app.post("/v1/app/codes/confirm", tags=["app"], response_model=ConfirmOut)
    def app_confirm(body: ConfirmIn, who: Holder, request: Request) -> dict[str, Any]:
        """R6: the holder confirms with the query password before a payment that goes over
        the daily limit (wrong passwords count toward the sign-in lockout).  The grant it
        returns covers one over-limit reverse-scan payment for ``confirm_ttl_s``."""
        return holders.confirm(
            ctx, who, body.password, body.serial, body.counter, client=client_of(request)
        )

    @app.post("/v1/app/reverse/describe", tags=["app"], response_model=ReverseRequestOut)
    def app_reverse_describe(body: ReversePayIn, who: Holder) -> dict[str, Any]:
        """What a scanned payment request asks for (terminal, amount), before paying it."""
        return reverse.describe(ctx, body.request)

    @app.post("/v1/app/reverse/pay", tags=["app"], response_model=ReversePaidOut)
    def app_reverse_pay(body: ReversePayIn, who: Holder, request: Request) -> dict[str, Any]:
        """Reverse scan: pay an offline terminal's payment request; returns the proof (QR text
        and short code) the terminal verifies offline.  Paying twice charges once."""
        return reverse.pay(
            ctx, who, body.request, body.password, body.grant, client=client_of(request)
        )

    @app.get("/v1/codes/keys", tags=["public"], response_model=CodeKeysOut)
    def code_keys() -> dict[str, Any]:
        """The campus id, tag, code-issuer public keys and validity window of phone codes."""
        return codes.public_info(ctx)

    @app.post("/v1/codes/verify", tags=["terminal"], response_model=CodeVerifyOut)
    def code_verify(body: CodeTextIn, term: Terminal) -> dict[str, Any]:
        """R18: verify an authentication code, as an enrolled gate (a signed request of a
        ``gate`` terminal): who it is and whether access is allowed.  Each code is admitted
        once."""
        return codes.verify_auth_code(ctx, body.text)

    @app.get("/v1/receipts/{terminal_id}/{seq}", tags=["public"], response_model=ReceiptKeyOut)
    def receipt_key(
        terminal_id: TerminalPath, seq: Annotated[int, Path(ge=1, le=2**53)]
    ) -> dict[str, Any]:
        """What checking a paper receipt needs (``ykt verify-receipt``): the terminal's public
        key, and the hash of the record the receipt names once it synced."""
        return receipts.receipt_key(ctx, terminal_id, seq)

    # -- terminals ----------------------------------------------------------------------------
    @app.post(
        "/v1/terminals/enroll", tags=["terminal"], status_code=201, response_model=EnrolledOut
    )
    def enroll(body: EnrollIn) -> dict[str, Any]:
        return terminals.enroll(ctx, body.token, body.public_key, body.role)

    @app.get("/v1/terminals/keystore", tags=["terminal"], response_model=KeystoreOut)
    def terminal_keystore(term: Terminal) -> dict[str, Any]:
        """The card keys this terminal's role needs (a POS: read identities, keep counters)."""
        return ctx.card_keys.for_role(term["role"]).to_dict()

    @app.post("/v1/pos/authorize", tags=["terminal"])
    def pos_authorize(body: AuthorizeIn, term: Terminal) -> dict[str, Any]:
        return to_json(authorize.authorize(ctx, term, body.model_dump()))

    @app.post("/v1/journal", tags=["terminal"])
    def push_journal(body: JournalIn, term: Terminal) -> dict[str, Any]:
        return to_json(ingest.push(ctx, term, body.records, body.acked))

    @app.get("/v1/feed", tags=["terminal"], response_model=dict[str, Any])
    async def pull_feed(
        request: Request,
        term: Terminal,
        since: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        wait: Annotated[float, Query(ge=0, le=hot.MAX_WAIT_S)] = 0,
        head: Annotated[int | None, Query(ge=0, le=hot.MAX_HEAD)] = None,
        acked: Annotated[int | None, Query(ge=0, le=hot.MAX_HEAD)] = None,
        stream: bool = False,
    ) -> Response:
        """The delta feed (:meth:`sync.server.hot.LongPoll.answer`; with ``stream``, every
        page as it comes, one JSON a line: :meth:`~sync.server.hot.LongPoll.pages`; the
        ordinary requests are served by :mod:`sync.server.hot`, this route answers the
        others)."""
        await request.body()  # read: what arrives next is the terminal going away
        ask = hot.FeedAsk(term, since, wait, head, acked)
        if stream:
            return hot.PageStream(lambda gone: poll.pages(ask, gone))
        gone = asyncio.ensure_future(hot.until_disconnect(request.receive))
        try:
            body = await poll.answer(ask, gone)
        finally:
            gone.cancel()
        return Response(body, media_type="application/json")

    # -- the business of card holders, kiosks and the desk (sync.server.routes_business) ------
    app.include_router(create_router(ctx, api_auth))
    # -- R7 top-ups by order, payment providers, reconciliation (sync.server.routes_topups) ---
    app.include_router(create_topups_router(ctx, api_auth))
    # -- merchants, operators, shift reports, settlement (sync.server.routes_merchants) --------
    app.include_router(create_merchant_router(ctx, api_auth))
    app.hot_routes = hot.HotRoutes(ctx, api_auth, poll)
    return app
