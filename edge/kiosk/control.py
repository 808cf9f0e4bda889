"""The kiosk agent's local control API (loopback only) and its screen.

Guarded like the POS's (:mod:`edge.pos.control`): loopback clients only, ``Host`` must be the
agent's own loopback address and port (403 ``bad_host``), and every request that changes state
carries the per-boot token (``X-Ykt-Control-Token``, :mod:`edge.pos.controltoken`; 401
``bad_control_token``).  The screen gets the token inside the page.  The screen and
``ykt sim kiosk`` use the same routes:

=====================================  ========================================================
``GET  /control/state``                the screen; ``?after=V&wait=S`` long-polls for a change
``GET  /control/status``               terminal, devices, recent orders and card writes
``POST /control/home``                 back to the start screen, forgetting the visit
``POST /control/card/read``            balance of the card on the reader (R20, R9)
``POST /control/card/query-password``  ``{"old", "new"}`` (R4)
``POST /control/card/consume-password`` ``{"old", "new"}`` written onto the card (R5)
``POST /control/card/limit``           ``{"amount_fen", "pin"}`` (R6, consumption password)
``POST /control/card/transition``      the transition balance onto the account (R7)
``POST /control/card/correct``         card correction (R20)
``POST /control/card/electricity``     ``{"building", "room", "amount_fen", "password"}`` (R15)
``POST /control/holder/report-loss``   ``{"number", "password"}`` without the card (R10)
``POST /control/holder/unlock``        ``{"number", "password"}`` (R10)
``POST /control/holder/found-cards``   ``{"number", "password"}``: the lost-card query (R17)
``POST /control/reissue/quote``        ``{"number", "id_card"}`` or ``{"auth_code"}``: fee (R11)
``POST /control/reissue/scan``         the same by the app's code held up to the camera
``POST /control/reissue/confirm``      take a blank, encode, verify, issue to the mouth
``GET  /kiosk``                        the kiosk's touch screen
=====================================  ========================================================

Errors answer ``{"error": {"code", "message"}}``; the message is in plain words, Chinese first.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from edge.devices import control_routers
from edge.kiosk.agent import KioskAgent
from edge.kiosk.common import HolderError
from edge.pos.control import PAGE_HEADERS, guard
from kiosk_ui import page
from sync.errors import ServerRefused, YktError
from sync.money import MAX_AMOUNT_FEN

Pw = Annotated[StrictStr, Field(pattern=r"^[0-9]{6}$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChangeIn(_In):
    old: Pw
    new: Pw


class LimitIn(_In):
    amount_fen: StrictInt = Field(gt=0, le=MAX_AMOUNT_FEN)
    pin: Pw


class ElectricityIn(_In):
    building: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")
    room: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")
    amount_fen: StrictInt = Field(gt=0, le=MAX_AMOUNT_FEN)
    password: Pw


class HolderIn(_In):
    number: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    password: Pw


class QuoteIn(_In):
    number: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    id_card: StrictStr | None = Field(default=None, pattern=r"^[0-9]{17}[0-9Xx]$")
    auth_code: StrictStr | None = Field(default=None, min_length=8, max_length=512)


def _err(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_control_app(agent: KioskAgent, token: str) -> FastAPI:
    app = FastAPI(title="ykt kiosk control API", version="1")
    engine = agent.engine
    guard(app, agent.cfg.control_host, agent.cfg.control_port, token)

    @app.exception_handler(YktError)
    async def _ykt_error(request: Request, exc: YktError) -> JSONResponse:
        status = exc.status if isinstance(exc, ServerRefused) else exc.http_status
        return _err(status, exc.code, str(getattr(exc, "message", None) or exc))

    def run(fn: Any) -> Any:
        """A holder action, on the device thread."""
        return agent.call(fn)

    @app.get("/control/state")
    async def state(
        after: Annotated[int, Query(ge=-1)] = -1,
        wait: Annotated[float, Query(ge=0, le=60)] = 0,
    ) -> dict[str, Any]:
        if after < 0 or wait == 0:
            return engine.screen()
        return await run_in_threadpool(engine.wait, after, wait)

    @app.get("/control/status")
    def status() -> dict[str, Any]:
        return {**agent.status(), "screen": engine.screen()}

    @app.post("/control/home")
    def home() -> dict[str, Any]:
        return engine.home()

    @app.post("/control/touch")
    def touch() -> dict[str, Any]:
        """The holder touched the screen (keeps the visit from timing out)."""
        engine.touch()
        return {"ok": True}

    # -- with the card --------------------------------------------------------------------------
    @app.post("/control/card/read")
    def card_read() -> dict[str, Any]:
        return dict(run(engine.read_card))

    @app.post("/control/card/query-password")
    def card_query_password(body: ChangeIn) -> dict[str, Any]:
        return dict(run(lambda: engine.change_query_password(body.old, body.new)))

    @app.post("/control/card/consume-password")
    def card_consume_password(body: ChangeIn) -> dict[str, Any]:
        return dict(run(lambda: engine.change_consume_password(body.old, body.new)))

    @app.post("/control/card/limit")
    def card_limit(body: LimitIn) -> dict[str, Any]:
        return dict(run(lambda: engine.set_limit(body.amount_fen, body.pin)))

    @app.post("/control/card/transition")
    def card_transition() -> dict[str, Any]:
        return dict(run(engine.pull_transition))

    @app.post("/control/card/correct")
    def card_correct() -> dict[str, Any]:
        return dict(run(engine.correct))

    @app.post("/control/card/electricity")
    def card_electricity(body: ElectricityIn) -> dict[str, Any]:
        return dict(
            run(
                lambda: engine.electricity(body.building, body.room, body.amount_fen, body.password)
            )
        )

    # -- without the card -----------------------------------------------------------------------
    @app.post("/control/holder/report-loss")
    def report_loss(body: HolderIn) -> dict[str, Any]:
        return dict(run(lambda: engine.holder_status("report-loss", body.number, body.password)))

    @app.post("/control/holder/unlock")
    def unlock(body: HolderIn) -> dict[str, Any]:
        return dict(run(lambda: engine.holder_status("unlock", body.number, body.password)))

    @app.post("/control/holder/found-cards")
    def found_cards(body: HolderIn) -> dict[str, Any]:
        return dict(run(lambda: engine.found_cards(body.number, body.password)))

    # -- reissue --------------------------------------------------------------------------------
    @app.post("/control/reissue/quote")
    def reissue_quote(body: QuoteIn) -> dict[str, Any]:
        if body.auth_code:
            ident = {"auth_code": body.auth_code}
        elif body.number and body.id_card:
            ident = {"number": body.number, "id_card": body.id_card.upper()}
        else:
            raise HolderError(
                "bad_identity",
                "请输入学工号和身份证号，或出示手机认证码 / give the number and ID-card number, "
                "or show the app's authentication code",
            )
        return dict(run(lambda: engine.reissue_quote(ident)))

    @app.post("/control/reissue/scan")
    def reissue_scan() -> dict[str, Any]:
        """R11 by the app's authentication code held up to the kiosk's camera (15 s)."""
        return dict(run(engine.reissue_scan))

    @app.post("/control/reissue/confirm")
    def reissue_confirm() -> dict[str, Any]:
        return dict(run(engine.reissue_confirm))

    # -- the screen -----------------------------------------------------------------------------
    @app.get("/kiosk", response_class=HTMLResponse)
    def kiosk_page() -> HTMLResponse:
        meta = f'<meta name="ykt-control-token" content="{token}">'
        text = page("kiosk.html").replace("<head>", "<head>\n" + meta, 1)
        return HTMLResponse(text, headers=PAGE_HEADERS)

    @app.get("/static/kiosk.js")
    def kiosk_js() -> Response:
        return Response(page("kiosk.js"), media_type="text/javascript")

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse('<a href="/kiosk">kiosk screen</a>')

    devices: dict[str, str | None] = {
        "reader": agent.cfg.reader,
        "dispenser": agent.cfg.dispenser,
        "qr": agent.cfg.camera,
    }
    for router in control_routers(devices, agent):
        app.include_router(router)
    return app
