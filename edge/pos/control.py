"""The POS agent's local control API (loopback only) and its screens.

Used by the cashier screen, the customer screen (``kiosk_ui``) and ``ykt sim``:

==========================  =====================================================
``GET  /control/state``     the screen; ``?after=V&wait=S`` long-polls for a change
``POST /control/amount``    key an amount (``{"amount_fen": 1250}``) and arm the reader (a card
                            already lying on it pays at once)
``POST /control/pin``       key the consumption password (``{"pin": "013052"}``)
``POST /control/cancel``    back to idle
``GET  /control/status``    terminal id, link, queue, feed version, reader
``POST /control/sim/card``  tap a simulated card on a ``sim://`` reader (made from the
                            server's record of that card number)
``POST /control/sim/remove`` take the simulated card away
``GET  /control/timings``   where the time of the last card decisions went (benchmarks)
``GET  /cashier``, ``/customer``   the screens
==========================  =====================================================
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from edge.errors import EdgeError, RuleError
from edge.money import MAX_AMOUNT_FEN
from edge.pos.agent import PosAgent
from edge.pos.decide_qr import ReverseRefused
from edge.pos.engine import EngineError
from kiosk_ui import page
from sim import camera as sim_camera
from sim import reader as sim_reader
from sim.errors import SimError


# Strict types: money is an integer number of fen, never "12" or true (edge.money).
class AmountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_fen: StrictInt = Field(gt=0, le=MAX_AMOUNT_FEN)
    confirm: StrictBool = True


class PinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pin: StrictStr = Field(pattern=r"^[0-9]{6}$")  # ASCII digits only (a PIN pad's keys)


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=1000)


class ProofCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=32)


class FrameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_b64: str = Field(min_length=1, max_length=20_000_000)
    wait: float = Field(default=5.0, ge=0, le=30)


class SimCardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card_no: StrictStr = Field(min_length=1, max_length=32)
    uid: StrictStr | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8,20}$")


def _err(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _loopback(host: str | None) -> bool:
    if host in (None, "testclient", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_control_app(agent: PosAgent) -> FastAPI:
    app = FastAPI(title="ykt POS control API", version="1")
    engine = agent.engine

    @app.middleware("http")
    async def loopback_only(request: Request, call_next: Any) -> Any:
        if not _loopback(request.client.host if request.client else None):
            return _err(403, "loopback_only", "the control API answers only on loopback")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _err(422, "invalid", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return _err(exc.status_code, "http", f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return _err(409, "bad_state", str(exc))

    @app.exception_handler(ReverseRefused)
    async def _reverse_refused(request: Request, exc: ReverseRefused) -> JSONResponse:
        return _err(409, "reverse_refused", str(exc))

    @app.exception_handler(EdgeError)
    async def _edge_error(request: Request, exc: EdgeError) -> JSONResponse:
        return _err(422, "invalid", str(exc))

    @app.exception_handler(SimError)
    async def _sim_error(request: Request, exc: SimError) -> JSONResponse:
        return _err(409, "sim", str(exc))

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

    @app.post("/control/pin")
    def pin(body: PinIn) -> dict[str, Any]:
        out = engine.key_pin(body.pin)
        agent.uplink.kick()
        return out

    @app.post("/control/cancel")
    def cancel() -> dict[str, Any]:
        return engine.cancel()

    @app.get("/control/status")
    def status() -> dict[str, Any]:
        return agent.status()

    @app.get("/control/timings")
    def timings() -> dict[str, Any]:
        return {"taps": agent.timings()}

    @app.post("/control/sim/card")
    def sim_card(body: SimCardIn) -> dict[str, Any]:
        """Tap a simulated card on this agent's ``sim://`` reader.  Without a UID the card
        carries the UID the server issued it with (as the real card would)."""
        if not agent.cfg.reader.startswith("sim://"):
            raise SimError(
                f"this agent reads {agent.cfg.reader}, not a simulated reader (sim://): put "
                "cards on a pcsc:// reader with `ykt sim card present`"
            )
        reader = agent.reader
        if not isinstance(reader, sim_reader.SimReader):
            raise SimError("the simulated reader is not open yet")
        emu = agent.sim_card(body.card_no, body.uid)
        reader.present(emu)
        return {"presented": body.card_no, "uid": emu.uid.hex().upper(), "reader": reader.name}

    @app.post("/control/sim/remove")
    def sim_remove() -> dict[str, Any]:
        reader = agent.reader
        if isinstance(reader, sim_reader.SimReader):
            reader.remove()
        return {"removed": True}

    # -- phone codes -------------------------------------------------------------------------
    @app.post("/control/qr")
    def qr_text(body: CodeIn) -> dict[str, Any]:
        """A code read by other means (a keyboard-wedge scanner, a test): decided like a code
        from the camera."""
        engine.on_code(body.text)
        agent.uplink.kick()
        return engine.screen()

    @app.post("/control/reverse")
    def reverse() -> dict[str, Any]:
        return engine.start_reverse()

    @app.post("/control/proof")
    def proof(body: ProofCodeIn) -> dict[str, Any]:
        out = engine.key_proof_code(body.code)
        agent.uplink.kick()
        return out

    @app.get("/control/request.svg")
    def request_svg() -> Response:
        text = engine.screen().get("request_text")
        if not text:
            return _err(404, "no_request", "no reverse-scan request is shown")
        import io

        import segno

        buf = io.BytesIO()
        segno.make(text, error="m", micro=False).save(buf, kind="svg", scale=6, border=4)
        return Response(buf.getvalue(), media_type="image/svg+xml")

    @app.post("/control/sim/frame")
    def sim_frame(body: FrameIn) -> dict[str, Any]:
        """Show a picture to this agent's ``sim://`` camera; waits (up to ``wait`` s) for the
        camera to decode it and says whether it read a code."""
        cam = agent.camera
        if not (agent.cfg.camera or "").startswith("sim://"):
            raise SimError(
                f"not_sim_camera: this agent's camera is {agent.cfg.camera or 'none'}, "
                "not a simulated camera"
            )
        if not isinstance(cam, sim_camera.SimCamera):
            raise SimError("the simulated camera is not open yet")
        try:
            data = base64.b64decode(body.image_b64, validate=True)
        except ValueError:
            raise RuleError("image_b64 is not base64") from None
        shown = cam.show_image(data)
        result = cam.wait_result(shown["presentation"], body.wait)
        return {**shown, **result}

    @app.get("/cashier", response_class=HTMLResponse)
    def cashier() -> str:
        return page("cashier.html")

    @app.get("/customer", response_class=HTMLResponse)
    def customer() -> str:
        return page("customer.html")

    @app.get("/static/screen.js")
    def screen_js() -> Response:
        return Response(page("screen.js"), media_type="text/javascript")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page("index.html")

    return app
