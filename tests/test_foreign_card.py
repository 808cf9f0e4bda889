"""Issue 3's acceptance with a card ykt did not write: :mod:`tests.foreign_vicc`, an independent
MIFARE Classic 1K behind ACR122U-style pseudo-APDUs, on vpcd slots of the private pcscd that
``ykt sim reader start`` runs.  Everything else is the commands a new user runs: desk staff
encode the blank card, the POS sells on it (also over the daily limit with the consumption
password), the card is taken away and put back; a second card (7-byte UID) is encoded on another
reader and carried over to the POS.

``tests/unit/test_foreign_card_emulator.py`` pins the foreign card itself to the documents it
follows (NXP MF1S50yyX, ACS ACR122U API), so that a ykt test passing on it means something."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.card.mifare_classic import decode_access
from sync.card import layout
from tests.card_helpers import server_keys
from tests.foreign_vicc import (
    CTRL_RESET,
    TRANSPORT_ACCESS,
    TRANSPORT_KEY,
    Acr122u,
    Classic1K,
    ForeignVicc,
)
from tests.helpers import PosProc, ServerProc, wait_until, ykt

BLANK_TRAILER = TRANSPORT_KEY + TRANSPORT_ACCESS + TRANSPORT_KEY


# -- the acceptance path on real pcscd + vpcd ------------------------------------------------------
@dataclass
class Rig:
    tmp: Path
    slots: list[dict[str, Any]]
    env: dict[str, str]
    server: ServerProc

    @property
    def admin(self) -> list[str]:
        return ["admin", "--server", self.server.url, "--token-file", str(self.server.token_file)]

    def reader(self, slot: int) -> str:
        return f"pcsc://{self.slots[slot]['name']}"

    def account(self, number: str, id_card: str, topup: str) -> None:
        add = ["--number", number, "--name", "张三", "--type", "student", "--id-card", id_card]
        ykt(*self.admin, "account", "add", *add)
        ykt(*self.admin, "topup", "--number", number, "--amount", topup, "--channel", "cash")

    def issue_cmd(self, number: str, slot: int) -> list[str]:
        issue = ["card", "issue", "--number", number, "--reader", self.reader(slot), "--json"]
        return [*self.admin, *issue]

    def issue(self, number: str, slot: int) -> dict[str, Any]:
        return dict(json.loads(ykt(*self.issue_cmd(number, slot), env=self.env).stdout))

    def pos(self, name: str, slot: int) -> PosProc:
        token = ykt(
            *self.admin, "terminal", "enroll", "--role", "pos", "--name", name
        ).stdout.strip()
        return PosProc(
            self.tmp / name, self.server, token=token, reader=self.reader(slot), env=self.env
        ).start()

    def sale(self, pos: PosProc, amount: str, *more: str) -> dict[str, Any]:
        return dict(
            json.loads(
                ykt("sim", "sale", "--agent", pos.url, "--json", "--amount", amount, *more).stdout
            )
        )

    def bills(self, number: str) -> tuple[int, list[int]]:
        acct = json.loads(ykt(*self.admin, "account", "show", "--number", number, "--json").stdout)
        return acct["balance_fen"], [b["amount_fen"] for b in acct["bills"]]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("foreign")
    r = tmp / "R"
    started = json.loads(
        ykt("sim", "reader", "start", "--slots", "2", "--dir", str(r), "--json").stdout
    )
    try:
        env = {**os.environ, "PCSCLITE_CSOCK_NAME": started["socket"]}
        server = ServerProc(tmp / "D").start()
        try:
            yield Rig(tmp, started["slots"], env, server)
        finally:
            server.stop()
    finally:
        ykt("sim", "reader", "stop", "--dir", str(r))


def _ykt_sectors_written(card: ForeignVicc, card_no: str) -> None:
    blocks = card.snapshot()
    for s in range(1, 6):  # ykt's sectors: its diversified keys, access bits 78 77 88
        t = blocks[s * 4 + 3]
        assert t[0:6] != TRANSPORT_KEY and t[10:16] != TRANSPORT_KEY, s
        assert decode_access(t[6:9]) == layout.ACCESS, (s, t[6:10].hex())
    for s in (0, *range(6, 16)):  # the rest stays blank
        assert blocks[s * 4 + 3] == BLANK_TRAILER, s
    assert blocks[layout.B_HEADER][:3] == layout.MAGIC
    assert blocks[layout.B_CARDNO].rstrip(b"\0").decode() == card_no


def _newest_counters(card: ForeignVicc, server: ServerProc) -> layout.Counters:
    """The card's trusted counters, read as a terminal does (the MACs tell the version)."""
    blocks, keys, uid = card.snapshot(), server_keys(server), card.reader.card.uid
    a, b = (layout.Counters.decode(blocks[n], keys, uid) for n in layout.B_SLOTS)
    return layout.choose_slot(a, b)[1]


@pytest.mark.slow
def test_pos_sells_on_a_foreign_simulated_card(rig: Rig) -> None:
    uid = bytes.fromhex("5A3C9E17")
    card = ForeignVicc(Acr122u(Classic1K(uid)), rig.slots[0]["port"])
    try:
        card.attach()
        rig.account("S2023001", "510102199901013052", "100.00")
        issued = rig.issue("S2023001", slot=0)
        assert issued["uid"] == uid.hex().upper() and issued["written"], issued
        _ykt_sectors_written(card, issued["card_no"])

        pos = rig.pos("canteen-1", slot=0)
        try:
            first = rig.sale(pos, "12.50")
            assert first["approved"] and first["balance_fen"] == 8750, first
            asked = rig.sale(pos, "45.00")  # ¥57.50 today > ¥50.00 (R6)
            assert asked["needs_pin"] and not asked["approved"], asked
            over = rig.sale(pos, "45.00", "--pin", "013052")
            assert over["approved"] and over["balance_fen"] == 4250, over

            card.detach()  # taken away …
            wait_until(lambda: pos.status()["reader_status"].endswith("ready"), 5)
            card.attach()  # … and put back
            again = rig.sale(pos, "1.00")
            assert again["approved"] and again["balance_fen"] == 4150, again

            # pulled away at the counter write, which reaches the card, its answer does not
            card.tear_after(1, applied=True, ins=0xD6)
            torn = rig.sale(pos, "1.00")
            assert card.torn.is_set() and torn["state"] in ("approved", "declined"), torn
            wait_until(lambda: pos.status()["reader_status"].endswith("ready"), 5)
            card.attach()
            last = rig.sale(pos, "1.00")
            balance = 4150 - 100 * (1 + torn["approved"])
            assert last["approved"] and last["balance_fen"] == balance, (torn, last)
            pos.wait_synced()
        finally:
            pos.stop()
        sales = [-1250, -4500, -100] + [-100] * (1 + torn["approved"])
        assert rig.bills("S2023001") == (balance, [10000, *sales])  # exactly the approved ones
        # on the card only the approved sales count (a declined torn write that reached the card
        # is taken back when the card returns); the password reset the R6 amount to ¥45.00
        newest = _newest_counters(card, rig.server)
        counted = (4 + torn["approved"], 4700 + 100 * torn["approved"], 0)
        assert (newest.taps, newest.spent_fen, newest.tries) == counted, (torn, newest)
    finally:
        card.detach()


@pytest.mark.slow
def test_card_encoded_at_the_desk_reader_pays_at_the_pos_reader(rig: Rig) -> None:
    """A 7-byte-UID card, encoded on slot 1 (the desk; pulled away once mid-way, so the second
    run finds sectors 1-2 with ykt's keys: each fails the transport key, is re-selected and
    opens with ykt's key B), then carried to slot 0 (the POS)."""
    uid = bytes.fromhex("04A2B3C4D5E680")
    card = ForeignVicc(Acr122u(Classic1K(uid)), rig.slots[1]["port"])
    pos = rig.pos("canteen-2", slot=0)
    try:
        card.attach()
        rig.account("S2023002", "51011919990101305X", "20.00")
        card.tear_after(8, applied=True, ins=0xD6)  # sector 2's trailer: written, no answer
        cut = ykt(*rig.issue_cmd("S2023002", slot=1), check=False, env=rig.env, timeout=60)
        assert cut.returncode != 0 and "run the same command again" in cut.stderr, cut.stderr
        assert card.snapshot()[11][6:9] == bytes.fromhex("787788")
        card.attach()
        resets = card.controls.count(CTRL_RESET)
        issued = rig.issue("S2023002", slot=1)
        assert card.controls.count(CTRL_RESET) - resets == 2  # sectors 1 and 2
        assert issued["uid"] == uid.hex().upper() and issued["written"], issued
        _ykt_sectors_written(card, issued["card_no"])
        card.detach()
        pos.wait_card_known(issued["card_no"])
        card.attach(rig.slots[0]["port"])
        sale = rig.sale(pos, "7.80")
        assert sale["approved"] and sale["balance_fen"] == 1220, sale
        assert sale["card_no"] == issued["card_no"], sale
        pos.wait_synced()
    finally:
        card.detach()
        pos.stop()
    assert rig.bills("S2023002") == (1220, [2000, -780])
    assert _newest_counters(card, rig.server).taps == 1
