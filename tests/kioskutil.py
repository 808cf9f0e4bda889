"""The self-service kiosk's test rig (issue 11): ``ykt kiosk`` with its holder's reader and its
encoder in a private pcscd (vpcd slots), the simulated CRT-591 on a pseudo-terminal
(``ykt sim dispenser``), a real server, and a real POS on a third vpcd slot that the same card
images are carried to.  Driven as a test engineer would: ``ykt sim kiosk``.  Each test module
starts its own (tests/test_kiosk*.py), so xdist spreads them over its workers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim import cardimage
from sim.control import AgentControl
from sim.harness import pcscd
from sim.harness.ykt import KioskProcess
from sim.mifare import MifareClassic1K
from sim.vicc import VirtualCard
from tests.card_helpers import issue_image, server_keys
from tests.helpers import PosProc, ServerProc, id_card, wait_until, ykt

HOLDER, ENCODER, POS = 0, 1, 2

NEW_PIN = "246802"
IDLE_S = 5  # the kiosk's idle timeout in these tests (--idle)


def initial_password(n: int) -> str:
    c = id_card(n)
    return c[-7:-1] if c[-1] == "X" else c[-6:]


class Dispenser:
    """One ``ykt sim dispenser`` unit on a pty, its encoder in the vpcd slot ENCODER."""

    def __init__(self, readers: pcscd.VirtualReaders, name: str, blanks: int) -> None:
        self.dir, self.name = str(readers.dir), name
        out = ykt(
            "sim", "dispenser", "start", "--dir", self.dir, "--name", name,
            "--blanks", str(blanks), "--encoder-slot", str(ENCODER), "--json",
        )  # fmt: skip
        self.url = f"serial://{json.loads(out.stdout)['device']}?baud=9600"

    def cli(self, *args: str) -> dict[str, Any]:
        out = ykt("sim", "dispenser", *args, "--dir", self.dir, "--name", self.name, "--json")
        return dict(json.loads(out.stdout))

    def take(self, out: Path) -> MifareClassic1K:
        self.cli("take", "--out", str(out))
        return cardimage.load(out)

    def stop(self) -> None:
        ykt("sim", "dispenser", "stop", "--dir", self.dir, "--name", self.name, check=False)


class Kiosk:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.stack = contextlib.ExitStack()
        self.readers = pcscd.VirtualReaders(tmp / "readers")
        self.readers.start(3)
        self.stack.callback(self.readers.stop)
        self.server = ServerProc(tmp / "server").start()
        self.stack.callback(lambda: self.server.stop())
        self.keys = server_keys(self.server)
        env = {"PCSCLITE_CSOCK_NAME": str(self.readers.socket_path)}
        self.env = env
        self.pos = PosProc(
            tmp / "pos",
            self.server,
            token=self.server.enroll_token("canteen-k"),
            reader="pcsc://" + self.readers.slot(POS)["name"],
            env=env,
        ).start()
        self.stack.callback(lambda: self.pos.stop())
        self.disp = Dispenser(self.readers, "kd", blanks=24)
        self.stack.callback(self.disp.stop)
        self.kiosk = self.start_kiosk(token=self.server.enroll_token("kiosk-1", role="kiosk"))
        self.stack.callback(lambda: self.kiosk.stop())
        self.cards: dict[int, VirtualCard] = {}
        self.stack.callback(self.remove_all)
        self.n = 600

    def start_kiosk(
        self, token: str | None = None, extra: tuple[str, ...] = (), **env: str
    ) -> KioskProcess:
        proc = KioskProcess(
            self.tmp / "kiosk",
            server_url=self.server.url,
            token=token,
            reader="pcsc://" + self.readers.slot(HOLDER)["name"],
            encoder="pcsc://" + self.readers.slot(ENCODER)["name"],
            dispenser=self.disp.url,
            camera="sim://kcam",  # the app's code is shown to it (ykt sim kiosk --auth-code)
            env={**self.env, **env},
            extra=("--idle", str(IDLE_S), *extra),
        )
        return proc.start()

    # -- cards --------------------------------------------------------------------------------
    def holder(self, kind: str = "student", topup: int = 30000) -> dict[str, Any]:
        """A new account with a card image the desk wrote; returns its facts and the image."""
        self.n += 1
        n, number = self.n, f"K{self.n}"
        self.server.add_account(number, n, kind, topup_fen=topup)
        uid = f"04{n:06X}"
        path = self.tmp / f"{number}.img"
        rec = issue_image(self.server, number, uid, path, self.keys)
        return {
            "number": number,
            "id_card": id_card(n),
            "password": initial_password(n),
            "card_no": rec["card_no"],
            "card": cardimage.load(path),
        }

    def present(self, slot: int, card: MifareClassic1K) -> None:
        self.remove(slot)
        card.power_on()
        vc = VirtualCard(card, self.readers.slot(slot)["port"]).start()
        vc.wait_inserted()
        self.cards[slot] = vc

    def remove(self, slot: int) -> None:
        vc = self.cards.pop(slot, None)
        if vc is not None:
            vc.remove()

    def remove_all(self) -> None:
        for slot in list(self.cards):
            self.remove(slot)

    # -- doing things -------------------------------------------------------------------------
    def sim(self, action: str, *args: str, check: bool = True) -> Any:
        out = ykt("sim", "kiosk", "--agent", self.kiosk.url, action, *args, "--json", check=check)
        return json.loads(out.stdout) if out.returncode == 0 else out

    def sale(self, card: MifareClassic1K, fen: int, pin: str | None = None) -> dict[str, Any]:
        self.present(POS, card)
        try:
            return AgentControl(self.pos.url, timeout=10).sale(fen, pin=pin)
        finally:
            self.remove(POS)
            wait_until(lambda: "ready" in self.pos.status()["reader_status"], 5)

    def balance(self, number: str) -> int:
        return int(self.server.account(number)["balance_fen"])


def running_kiosk(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Kiosk]:
    """A module fixture's body: the whole rig, stopped afterwards."""
    rig = Kiosk(tmp_path_factory.mktemp(name))
    try:
        yield rig
    finally:
        rig.stack.close()
