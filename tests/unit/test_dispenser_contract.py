"""The dispenser contract (tests/dispenser_contract.py) on both implementations, in this
process: the in-process ``sim://`` dispenser, and the CRT-591 driver opened by URL on a
pseudo-terminal whose other end is the simulated unit (:mod:`sim.dispenser.crt591`, served by
a thread).  The encoder is an in-process simulated reader here; tests/test_dispenser_sim.py
runs the same contract with the unit in its own process and the encoder in pcscd."""

from __future__ import annotations

import os
import select
import threading
import tty
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from drivers.registry import open_device
from sim import reader as sim_reader
from sim.dispenser import local
from sim.dispenser.crt591 import Crt591Device
from sim.dispenser.mechanism import Mechanism, State, blank_uids
from tests.dispenser_contract import BLANKS, LOW_AT, REJECT_CAPACITY, Rig, read_blank, run_contract


def _encoder_uid(reader: sim_reader.SimReader) -> str | None:
    card = reader.current_card()
    if card is None:
        return None
    uid = read_blank(card)
    card.close()  # the card stays: a dispenser holds it
    return uid


@contextmanager
def sim_rig() -> Iterator[Rig]:
    reader = sim_reader.open_url("sim://contract-encoder")
    disp = open_device(
        "dispenser",
        f"sim://contract?encoder=contract-encoder&blanks={BLANKS}&low={LOW_AT}"
        f"&reject={REJECT_CAPACITY}&seed=11",
    )
    assert isinstance(disp, local.SimDispenser)
    yield Rig(
        disp,
        lambda: _encoder_uid(reader),
        disp.mech.arm_jam,  # type: ignore[arg-type]
        lambda: disp.take().uid.hex().upper(),
        disp.mech.summary,
    )
    reader.close()


class ThreadUnit:
    """The simulated CRT-591 on the master side of a pseudo-terminal, served by a thread."""

    def __init__(self, mech: Mechanism) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.unit = Crt591Device(mech, lambda b: os.write(self.master, b) and None)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if ready:
                self.unit.feed(os.read(self.master, 4096))
            else:
                self.unit.tick()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        os.close(self.master)
        os.close(self.slave)


@contextmanager
def serial_rig() -> Iterator[Rig]:
    reader = sim_reader.open_url("sim://pty-encoder")
    state = State(blank_uids(BLANKS, 5), low_at=LOW_AT, reject_capacity=REJECT_CAPACITY)
    cards: dict[str, object] = {}

    def arrive(uid: str) -> None:
        if uid not in cards:
            cards[uid] = local.cardimage.new_card(bytes.fromhex(uid))
        reader.present(cards[uid], stays=True)  # type: ignore[arg-type]

    mech = Mechanism(state, arrive, lambda uid: reader.remove())
    unit = ThreadUnit(mech)
    disp = open_device("dispenser", f"serial://{unit.path}?baud=9600")
    try:
        yield Rig(disp, lambda: _encoder_uid(reader), mech.arm_jam, mech.take, mech.summary)  # type: ignore[arg-type]
    finally:
        disp.close()
        unit.stop()
        reader.close()


@pytest.mark.parametrize("make", [sim_rig, serial_rig], ids=["sim", "crt591-pty"])
def test_every_dispenser_keeps_the_contract(make: object) -> None:
    with make() as rig:  # type: ignore[operator]
        run_contract(rig)


def test_the_agents_control_routes_for_a_sim_dispenser() -> None:
    """``/control/sim/dispenser…`` (sim/devices.py) on the dispenser the agent opened, through
    ASGI in this process (no socket)."""
    import asyncio

    import httpx
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from drivers.errors import YktError
    from sim.devices import PROVIDER

    url = "sim://routes?blanks=2&seed=3"
    disp = open_device("dispenser", url)
    app = FastAPI()
    app.include_router(PROVIDER.control_router("dispenser", url, None))  # type: ignore[arg-type]

    @app.exception_handler(YktError)
    def refused(_request: object, exc: YktError) -> JSONResponse:  # as the agents answer
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
            assert (await http.get("/control/sim/dispenser")).json()["hopper"] == 2
            bad = await http.post("/control/sim/dispenser/fault", json={"jam_at": "sideways"})
            assert bad.status_code == 422
            armed = await http.post("/control/sim/dispenser/fault", json={"jam_at": "mouth"})
            assert armed.json()["jam_armed"] == "mouth"
            await http.post("/control/sim/dispenser/fault", json={"jam_at": None})
            disp.to_encoder()
            disp.to_mouth()
            taken = (await http.post("/control/sim/dispenser/take")).json()
            assert local.cardimage.loads(taken["image"]).uid.hex().upper() == taken["uid"]
            empty = await http.post("/control/sim/dispenser/take")
            assert empty.status_code == 409 and "mouth" in empty.json()["error"]
            state = (await http.get("/control/sim/dispenser")).json()
            assert state["issued"] == state["taken"] == [taken["uid"]]

    asyncio.run(scenario())
    disp.close()
