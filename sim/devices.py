"""The ``sim://`` device provider: the registry (:mod:`drivers.registry`) finds it through the
``ykt.devices`` entry point named ``sim`` and opens simulated readers and cameras with it; an
agent with a simulated device mounts the control routes it adds (:mod:`edge.devices`):

==============================  =================================================================
``POST /control/sim/card``      tap a simulated card on the agent's ``sim://`` reader (made from
                                the server's record of that card number, :mod:`sim.cards`; kept
                                in ``DATA/sim-cards``, or in the folder ``sim://NAME?cards=DIR``
                                names, which several agents may share: one card, many tills)
``POST /control/sim/remove``    take the simulated card away
``POST /control/sim/frame``     show a picture to the agent's ``sim://`` camera and wait (up to
                                ``wait`` s) for it to be decoded
==============================  =================================================================
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from drivers.errors import DeviceUrlError
from edge.devices import TerminalHost
from sim import camera as sim_camera
from sim import cards
from sim import reader as sim_reader
from sim.errors import SimUsageError


class SimCardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card_no: StrictStr = Field(min_length=1, max_length=32)
    uid: StrictStr | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8,20}$")


class FrameIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
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


class SimDevices:
    """Simulated card readers and cameras (``sim://NAME``)."""

    def open(self, kind: str, url: str) -> Any:
        if kind == "reader":
            return sim_reader.open_url(url)
        if kind == "qr":
            return sim_camera.open_url(url)
        raise DeviceUrlError(f"there is no simulated {kind} (sim:// makes readers and cameras)")

    def control_router(self, kind: str, url: str, host: TerminalHost) -> APIRouter:
        if kind == "reader":
            return _reader_router(url, host)
        return _camera_router(url)


PROVIDER = SimDevices()
