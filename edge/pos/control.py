"""The POS agent's local control API (loopback only) and its screens.

Who may call it (docs/security.md, "What each terminal holds"): clients on loopback only;
requests whose ``Host`` is the agent's own loopback address and port only (a page of another
origin that resolved its name to 127.0.0.1, DNS rebinding, sends its own ``Host`` and is
refused, 403 ``bad_host``); and every request that changes state (any method but GET and HEAD)
carries the per-boot token in ``X-Ykt-Control-Token`` (:mod:`edge.pos.controltoken`; 401
``bad_control_token`` without it).  The screens get the token inside the page they are served.

Used by the cashier screen, the customer screen (``kiosk_ui``) and ``ykt sim``:

===============================  =================================================================
``GET  /control/state``          the screen; ``?after=V&wait=S`` long-polls for a change
``POST /control/amount``         key an amount (``{"amount_fen": 1250}``) and arm the reader
                                 (a card already lying on it pays at once); with
                                 ``"confirm": false`` only shown until ``/control/confirm``
``POST /control/confirm``        arm the reader for the amount shown
``POST /control/pin``            key the consumption password (``{"pin": "013052"}``)
``POST /control/cancel``         back to idle
``GET  /control/status``         terminal id, link, queue, feed version, reader, camera
``GET  /control/timings``        where the time of the last card decisions went (benchmarks)
``POST /control/qr``             a phone code as a scanner hands it over (``{"text": …}``)
``POST /control/reverse``        start a reverse scan (offline only, R8)
``POST /control/proof``          the reverse-scan proof's short code, keyed (``{"code": …}``)
``GET  /control/request.svg``    the reverse-scan request as a QR picture (404 when none is shown)
``GET  /control/till``           who is signed in, the open shift, whether sales need a cashier
``POST /control/cashier/sign-in`` an operator signs in (``{"number", "pin"}``; opens a shift)
``POST /control/cashier/sign-out`` the operator signs out
``POST /control/shift/open``     open a shift; ``/control/shift/close`` closes it: the Z report
``GET  /control/shifts``         the reports of closed shifts (and whether the server has them)
``POST /control/refund``         refund a sale of today (``{"sale": "17", "supervisor",
                                 "supervisor_pin"[, "amount_fen"]}``)
``GET  /control/receipts``       the print queue: counts, the last receipts, print latencies
``POST /control/reprint``        print a receipt again (``{"seq": 12}``; default the last one)
``GET  /cashier``                the cashier's screen
``GET  /customer``               the customer's screen
===============================  =================================================================

Devices from a provider add their own routes (:mod:`edge.devices`): with a ``sim://`` reader or
camera, the simulator's ``/control/sim/*`` (:mod:`sim.devices`); with real hardware, none.
"""

from __future__ import annotations

import hmac
import html
import io
import ipaddress
from typing import Annotated, Any

import segno
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from edge.devices import control_routers
from edge.errors import TillInvalid
from edge.pos import controltoken
from edge.pos.agent import PosAgent
from kiosk_ui import page
from sync.bounds import Fen
from sync.errors import YktError


# Strict types: money is an integer number of fen with the bounds of sync/bounds.py, never "12"
# or true; a boolean is true or false, never 1.
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AmountIn(_In):
    amount_fen: Fen
    confirm: bool = True


class PinIn(_In):
    pin: str = Field(pattern=r"^[0-9]{6}$")  # ASCII digits only (a PIN pad's keys)


class CodeIn(_In):
    text: str = Field(min_length=1, max_length=1000)


class ReprintIn(_In):
    seq: int | None = Field(default=None, ge=1, le=2**53)


class ProofCodeIn(_In):
    code: str = Field(min_length=1, max_length=32)


class SignInIn(_In):
    number: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    pin: str = Field(pattern=r"^[0-9]{6,12}$")


class RefundIn(_In):
    """A refund of a sale of this terminal (``sale``: its journal sequence number, or
    ``TERMINAL:SEQ`` as a receipt prints it)."""

    sale: str | None = Field(default=None, pattern=r"^([A-Za-z0-9_-]{1,32}:)?[0-9]{1,19}$")
    #: instead of ``sale``: the newest unrefunded sale of today of the card lying on the reader
    card: bool = False
    amount_fen: Fen | None = None
    supervisor: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    supervisor_pin: str = Field(pattern=r"^[0-9]{6,12}$")


def _err(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _loopback(host: str | None) -> bool:
    if host in (None, "testclient", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` headers of requests for the control API on ``host``:``port``: the
    loopback names with the agent's port (and without it on port 80)."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    if _loopback(host.strip("[]")):
        names.add(f"[{host}]" if ":" in host else host)
    out = {f"{n}:{port}" for n in names}
    if port == 80:
        out |= names
    return frozenset(n.lower() for n in out)


#: the pages that hold the token: a browser must not cache them, nor let another page frame them
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _with_token(name: str, token: str) -> HTMLResponse:
    """A screen with the control token in a ``<meta>`` its own scripts read."""
    meta = f'<meta name="ykt-control-token" content="{html.escape(token)}">'
    text = page(name).replace("<head>", "<head>\n" + meta, 1)
    return HTMLResponse(text, headers=PAGE_HEADERS)


def guard(app: FastAPI, host: str, port: int, token: str) -> None:
    """The control API's trust boundary, one for every agent (POS, kiosk): loopback clients
    only, the agent's own ``Host`` (no DNS rebinding), the per-boot token for any state change
    (docs/security.md); and its answers to malformed requests."""
    hosts = allowed_hosts(host, port)
    want = token.encode()

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Any:
        if not _loopback(request.client.host if request.client else None):
            return _err(403, "loopback_only", "the control API answers only on loopback")
        if request.headers.get("host", "").lower() not in hosts:
            return _err(
                403,
                "bad_host",
                "the control API answers only requests for its own loopback address and port",
            )
        if request.method not in ("GET", "HEAD"):
            got = request.headers.get(controltoken.HEADER, "").encode()
            if not hmac.compare_digest(got, want):
                return _err(
                    401,
                    "bad_control_token",
                    "a request that changes state needs the agent's control token (header "
                    f"{controltoken.HEADER}, from DATA/{controltoken.FILE}; ykt sim finds it "
                    "by itself, or give --token-file)",
                )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _err(422, "invalid", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return _err(exc.status_code, "http", f"{request.method} {request.url.path}: {exc.detail}")


def create_control_app(agent: PosAgent, token: str) -> FastAPI:
    app = FastAPI(title="ykt POS control API", version="1")
    engine = agent.engine
    guard(app, agent.cfg.control_host, agent.cfg.control_port, token)

    @app.exception_handler(YktError)
    async def _ykt_error(request: Request, exc: YktError) -> JSONResponse:
        return _err(exc.http_status, exc.code, str(exc))

    @app.get("/control/state")
    async def state(
        after: Annotated[int, Query(ge=-1)] = -1,
        wait: Annotated[float, Query(ge=0, le=60)] = 0,
    ) -> dict[str, Any]:
        if after < 0 or wait == 0:
            return engine.screen()
        return await run_in_threadpool(engine.wait, after, wait)

    @app.post("/control/amount")
    def amount(body: AmountIn) -> dict[str, Any]:
        out = engine.key_amount(body.amount_fen, confirm=body.confirm)
        agent.amount_keyed()
        return out

    @app.post("/control/confirm")
    def confirm() -> dict[str, Any]:
        out = engine.confirm()
        agent.amount_keyed()
        return out

    def journaled(out: dict[str, Any]) -> dict[str, Any]:
        """``out`` of an action that may have journaled a sale: the uplink sends it now."""
        agent.uplink.kick()
        return out

    @app.post("/control/pin")
    def pin(body: PinIn) -> dict[str, Any]:
        return journaled(engine.key_pin(body.pin))

    @app.post("/control/cancel")
    def cancel() -> dict[str, Any]:
        return engine.cancel()

    @app.get("/control/status")
    def status() -> dict[str, Any]:
        return agent.status()

    @app.get("/control/timings")
    def timings() -> dict[str, Any]:
        return {"taps": agent.timings()}

    # -- receipts ----------------------------------------------------------------------------
    @app.get("/control/receipts")
    def receipts() -> dict[str, Any]:
        return {
            "counts": agent.receipts.counts(),
            "recent": agent.receipts.recent(),
            "latencies_ms": list(agent.counter.latencies_ms),
            "printer": agent.counter.status()["printer"],
        }

    @app.post("/control/reprint")
    def reprint(body: ReprintIn) -> dict[str, Any]:
        try:
            rid = agent.receipts.reprint(body.seq)
        except LookupError as exc:
            return _err(404, "no_receipt", str(exc))  # type: ignore[return-value]
        return {"queued": rid, "counts": agent.receipts.counts()}

    # -- phone codes -------------------------------------------------------------------------
    @app.post("/control/qr")
    def qr_text(body: CodeIn) -> dict[str, Any]:
        """A code read by other means (a keyboard-wedge scanner, a test): decided like a code
        from the camera."""
        engine.on_code(body.text)
        return journaled(engine.screen())

    @app.post("/control/reverse")
    def reverse() -> dict[str, Any]:
        return engine.start_reverse()

    @app.post("/control/proof")
    def proof(body: ProofCodeIn) -> dict[str, Any]:
        return journaled(engine.key_proof_code(body.code))

    @app.get("/control/request.svg")
    def request_svg() -> Response:
        text = engine.screen().get("request_text")
        if not text:
            return _err(404, "no_request", "no reverse-scan request is shown")
        buf = io.BytesIO()
        segno.make(text, error="m", micro=False).save(buf, kind="svg", scale=6, border=4)
        return Response(buf.getvalue(), media_type="image/svg+xml")

    # -- the till: operators, shifts, refunds (edge.pos.till) -------------------------------
    till = agent.till

    @app.get("/control/till")
    def till_state() -> dict[str, Any]:
        """Who is signed in, the open shift, whether sales need a cashier, whether a refund
        waits for a card to be tapped."""
        return {**till.state(), "waiting_for_tap": agent.tap_waiting}

    @app.post("/control/cashier/sign-in")
    def sign_in(body: SignInIn) -> dict[str, Any]:
        return till.sign_in(body.number, body.pin)

    @app.post("/control/cashier/sign-out")
    def sign_out() -> dict[str, Any]:
        return till.sign_out()

    @app.post("/control/shift/open")
    def shift_open() -> dict[str, Any]:
        return till.open_shift()

    @app.post("/control/shift/close")
    def shift_close() -> dict[str, Any]:
        """Close the shift: its Z report (pushed to the server now, or when it is back)."""
        report = till.close_shift()
        agent.uplink.kick()
        return report

    @app.get("/control/shifts")
    def shifts() -> dict[str, Any]:
        return {"shifts": till.shifts()}

    @app.post("/control/refund")
    def refund(body: RefundIn) -> dict[str, Any]:
        """Refund a sale of this terminal from today, with a supervisor's PIN."""
        if (body.sale is None) == (not body.card):
            raise TillInvalid("name the sale (sale) or tap the card (card: true)", "invalid")
        sale = body.sale if body.sale is not None else till.sale_of_account(agent.card_account())
        out = till.refund(sale, body.supervisor, body.supervisor_pin, body.amount_fen)
        if not out["offline"]:  # online: say what the server made of it (a moment at most)
            agent.wait_acked(out["seq"], 3.0)
        return {**journaled(out), "server": till.verdict(out["seq"])}

    @app.get("/cashier", response_class=HTMLResponse)
    def cashier() -> HTMLResponse:
        return _with_token("cashier.html", token)

    @app.get("/customer", response_class=HTMLResponse)
    def customer() -> HTMLResponse:
        return _with_token("customer.html", token)

    @app.get("/static/screen.js")
    def screen_js() -> Response:
        return Response(page("screen.js"), media_type="text/javascript")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page("index.html")

    for router in control_routers({"reader": agent.cfg.reader, "qr": agent.cfg.camera}, agent):
        app.include_router(router)
    return app
