"""The ``sim://`` device provider: the registry (:mod:`drivers.registry`) finds it through the
``ykt.devices`` entry point named ``sim`` and opens simulated readers, cameras and card
dispensers (:mod:`sim.dispenser.local`) with it; an
agent with a simulated device mounts the control routes it adds (:mod:`edge.devices`):

==============================  =================================================================
``POST /control/sim/card``      tap a simulated card on the agent's ``sim://`` reader (made from
                                the server's record of that card number, :mod:`sim.cards`; kept
                                in ``DATA/sim-cards``, or in the folder ``sim://NAME?cards=DIR``
                                names, which several agents may share: one card, many tills)
``POST /control/sim/remove``    take the simulated card away
``POST /control/sim/frame``     show a picture to the agent's ``sim://`` camera and wait (up to
                                ``wait`` s) for it to be decoded
``GET /control/sim/dispenser``  the ``sim://`` dispenser's physical state (hopper, issued, rejected,
                                at the mouth, at the encoder, jammed)
``POST /control/sim/dispenser/  ``{"jam_at": "encoder"|"mouth"|null}``: the next move there jams
fault``                         (null clears)
``POST /control/sim/dispenser/  the holder takes the card at the mouth: its UID and card image
take``                          (the text of :mod:`sim.cardimage`)
==============================  =================================================================
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from drivers.errors import DeviceUrlError
from edge.devices import TerminalHost
from sim import camera as sim_camera
from sim import cardimage, cards
from sim import reader as sim_reader
from sim.dispenser import local as sim_dispenser
from sim.errors import SimUsageError


class SimCardIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    card_no: str = Field(min_length=1, max_length=32)
    uid: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8,20}$")


class FrameIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # ``wait``: a number, never true
    image_b64: str = Field(min_length=1, max_length=20_000_000)
    wait: float = Field(default=5.0, ge=0, le=30)


def _name(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or parts.path.lstrip("/")


def _reader_router(url: str, host: TerminalHost) -> APIRouter:
    router = APIRouter()
    name = _name(url)
    shared = parse_qs(urlsplit(url).query).get("cards")
    folder = Path(shared[-1]) if shared else None

    @router.post("/control/sim/card")
    def sim_card(body: SimCardIn) -> dict[str, Any]:
        """Tap a simulated card on this agent's ``sim://`` reader.  Without a UID the card
        carries the UID the server issued it with (as the real card would)."""
        reader = sim_reader.get(name)
        emu = cards.card_at(host, body.card_no, body.uid, folder)
        reader.present(emu)
        return {"presented": body.card_no, "uid": emu.uid.hex().upper(), "reader": reader.name}

    @router.post("/control/sim/remove")
    def sim_remove() -> dict[str, Any]:
        sim_reader.get(name).remove()
        return {"removed": True}

    return router


def _camera_router(url: str) -> APIRouter:
    router = APIRouter()
    name = _name(url)

    @router.post("/control/sim/frame")
    def sim_frame(body: FrameIn) -> dict[str, Any]:
        """Show a picture to this agent's ``sim://`` camera; waits (up to ``wait`` s) for the
        camera to decode it and says whether it read a code."""
        cam = sim_camera.get(name)
        try:
            data = base64.b64decode(body.image_b64, validate=True)
        except ValueError:
            raise SimUsageError("image_b64 is not base64") from None
        shown = cam.show_image(data)
        result = cam.wait_result(shown["presentation"], body.wait)
        return {**shown, **result}

    return router


class FaultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jam_at: Literal["encoder", "mouth"] | None


def _dispenser_router(url: str) -> APIRouter:
    router = APIRouter()
    name = _name(url)

    @router.get("/control/sim/dispenser")
    def dispenser_state() -> dict[str, Any]:
        return sim_dispenser.get(name).mech.summary()

    @router.post("/control/sim/dispenser/fault")
    def dispenser_fault(body: FaultIn) -> dict[str, Any]:
        disp = sim_dispenser.get(name)
        disp.mech.arm_jam(body.jam_at)
        return disp.mech.summary()

    @router.post("/control/sim/dispenser/take")
    def dispenser_take() -> dict[str, Any]:
        card = sim_dispenser.get(name).take()
        return {"uid": card.uid.hex().upper(), "image": cardimage.dumps(card)}

    return router


class SimDevices:
    """Simulated card readers, cameras and card dispensers (``sim://NAME``)."""

    def open(self, kind: str, url: str) -> Any:
        if kind == "reader":
            return sim_reader.open_url(url)
        if kind == "qr":
            return sim_camera.open_url(url)
        if kind == "dispenser":
            return sim_dispenser.open_url(url)
        raise DeviceUrlError(
            f"there is no simulated {kind} (sim:// makes readers, cameras and dispensers)"
        )

    def control_router(self, kind: str, url: str, host: TerminalHost) -> APIRouter:
        if kind == "reader":
            return _reader_router(url, host)
        if kind == "dispenser":
            return _dispenser_router(url)
        return _camera_router(url)


PROVIDER = SimDevices()
