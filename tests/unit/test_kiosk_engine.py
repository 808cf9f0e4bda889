"""The kiosk engine's state machines in-process: the reissue order (R11) with the simulated
dispenser and encoder (:mod:`sim.dispenser.local`, :mod:`sim.reader`), a crash mid-encode and
the restart that finishes the order, jams, an empty hopper, desk-only cards; the consumption
password written onto the card (R5); the idle timeout.  The server is a fake that issues real
signed identities (:mod:`tests.unit.fakes` keys), so every card written is checked by the card
application as a POS would check it."""

from __future__ import annotations

import base64
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.errors import DeviceUnavailable, DispenserLineError
from drivers.reader.base import PresentCard
from edge.cache import Cache
from edge.errors import EngineError
from edge.kiosk import reissue as reissue_mod
from edge.kiosk.common import HolderError, KioskFault
from edge.kiosk.engine import KioskEngine
from edge.kiosk.orders import KioskJournal
from sim import reader as sim_reader
from sim.dispenser import local as sim_dispenser
from sync.card import layout
from sync.card.app import CampusCard
from sync.card.keys import Keystore
from sync.clock import ManualClock
from sync.db import Database
from sync.errors import ServerRefused, ServerUnavailable
from sync.records import UNSET, AccountSnapshot, CardRow, FeedPage
from tests.unit.fakes import CARD_ACCT, CARD_NO, NOON_MS, PIN, card_keystore, issued_card

NUMBER, ID_CARD, FEE = "S2026001", "110101200401011234", 2000
_names = itertools.count(1)


class FakeServer:
    """The kiosk endpoints of the server, as :class:`edge.kiosk.upstream.KioskServer` calls
    them: one order per order id, the fee charged once per order (R11)."""

    def __init__(self, keys: Keystore, balance: int = 5000, card_type: str = "student") -> None:
        self.keys = keys
        self.balance = balance
        self.card_type = card_type
        self.orders: dict[str, dict[str, Any]] = {}
        self.charges = 0
        self.pin = PIN
        self.limit = 5000

    def _blob(self, uid: str, card_no: str, generation: int, pin: str) -> str:
        ident = layout.Identity(
            card_no, CARD_ACCT, "student", generation, "2030-12-31", "2026-01-01"
        )
        verifier = layout.make_verifier(self.keys, CARD_ACCT, pin, log2n=10)
        return base64.b64encode(
            layout.issue_blob(self.keys, bytes.fromhex(uid), ident, verifier)
        ).decode()

    def _refuse(self) -> None:
        if self.card_type not in ("student", "staff"):
            raise ServerRefused(409, "desk_only", "consumer cards are reissued at the service desk")

    def reissue_quote(self, identity: dict[str, str]) -> dict[str, Any]:
        self._refuse()
        return {"number": NUMBER, "name": "张三", "type": self.card_type, "via": "number+id_card",
                "fee_fen": FEE, "balance_fen": self.balance, "balance_after_fen": self.balance - FEE}  # fmt: skip

    def reissue(self, order_id: str, uid: str, identity: dict[str, str]) -> dict[str, Any]:
        self._refuse()
        assert identity == {"number": NUMBER, "id_card": ID_CARD}
        order = self.orders.get(order_id)
        if order is None:
            self.charges += 1
            self.balance -= FEE
            order = self.orders[order_id] = {"uid": uid, "status": "open"}
        order["uid"] = uid  # a retry may name another blank
        card = {
            "card_no": "20260002", "uid": uid, "generation": 2, "account_id": CARD_ACCT,
            "number": NUMBER, "name": "张三", "type": "student", "expires": "2030-12-31",
            "limit_fen": 5000, "counters": {"day": None, "spent_fen": 0},
            "tag": f"{int(uid, 16):032X}", "identity": self._blob(uid, "20260002", 2, self.pin),
        }  # fmt: skip
        return {"order_id": order_id, "status": order["status"], "created": True,
                "fee_fen": FEE, "balance_fen": self.balance, "transition_fen": 0, "card": card}  # fmt: skip

    def reissue_done(self, order_id: str) -> dict[str, Any]:
        self.orders[order_id]["status"] = "done"
        return {"order_id": order_id, "balance_fen": self.balance}

    def read_card(self, proof: dict[str, Any]) -> dict[str, Any]:
        return {"card_no": proof["card_no"], "number": NUMBER, "name": "张三", "type": "student",
                "status": "normal", "balance_fen": self.balance, "transition_fen": 0,
                "limit_fen": self.limit, "expires": "2030-12-31"}  # fmt: skip

    def change_consume_password(self, proof: dict[str, Any], old: str, new: str) -> dict[str, Any]:
        assert old == self.pin
        self.pin = new
        blob = self._blob(proof["uid"], proof["card_no"], proof["generation"], new)
        return {"card_no": proof["card_no"], "changed": "consume_password",
                "write": {"identity": blob, "pin_tries": 0}}  # fmt: skip

    def set_limit(self, proof: dict[str, Any], limit_fen: int, pin: str) -> dict[str, Any]:
        if pin != self.pin:
            raise ServerRefused(403, "wrong_pin", "wrong consumption password (R5)")
        self.limit = limit_fen
        return {"card_no": proof["card_no"], "changed": "limit", "write": {"limit_fen": limit_fen}}


class Rig:
    """A kiosk's devices in-process: the holder's reader, the encoder, the dispenser."""

    def __init__(self, tmp: Path, blanks: int = 5) -> None:
        n = next(_names)
        self.issuer = card_keystore()
        self.kiosk_keys = self.issuer.for_role("kiosk")
        self.reader = sim_reader.open_url(f"sim://kh{n}")
        self.encoder = sim_reader.open_url(f"sim://ke{n}")
        self.disp = sim_dispenser.open_url(f"sim://kd{n}?encoder=ke{n}&blanks={blanks}&seed={n}")
        self.server = FakeServer(self.issuer)
        self.clock = ManualClock(NOON_MS)
        self.db = tmp / "kiosk.db"
        self.journal = KioskJournal(self.db, self.clock)
        self.engine = self.new_engine()

    def new_engine(self) -> KioskEngine:
        return KioskEngine(self, self.server, self.journal, self.clock, random.Random(1))  # type: ignore[arg-type]

    def restart(self) -> KioskEngine:
        """What a restarted kiosk has: the same journal file and devices, a new engine."""
        self.journal.close()
        self.journal = KioskJournal(self.db, self.clock)
        self.engine = self.new_engine()
        return self.engine

    # -- edge.kiosk.engine.Devices --------------------------------------------------------------
    def holder_card(self) -> PresentCard | None:
        return self.reader.current_card()

    def encoder_card(self, timeout: float) -> PresentCard:
        card = self.encoder.current_card()
        if card is None:
            raise DeviceUnavailable("no card at the encoder")
        return card

    def dispenser(self) -> sim_dispenser.SimDispenser:
        return self.disp

    def keys(self) -> Keystore:
        return self.kiosk_keys

    shown: str | None = None  # the code held up to the camera

    def read_code(self, timeout: float) -> str | None:
        return self.shown

    # -- checks ---------------------------------------------------------------------------------
    def take_and_read(self) -> layout.Identity:
        """The holder takes the card at the mouth; a terminal reads it (signature, UID)."""
        emu = self.disp.take()
        card = self.reader.present(emu)
        try:
            return CampusCard(card, self.issuer.for_role("pos")).read().identity
        finally:
            self.reader.remove()

    def close(self) -> None:
        self.journal.close()
        for dev in (self.disp, self.reader, self.encoder):
            dev.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


IDENT = {"number": NUMBER, "id_card": ID_CARD}


def test_a_reissue_takes_one_blank_charges_once_and_hands_out_a_working_card(rig: Rig) -> None:
    quote = rig.engine.reissue_quote(IDENT)
    assert (quote["fee_fen"], quote["balance_after_fen"]) == (FEE, 3000)
    assert rig.engine.screen()["state"] == "quote"
    out = rig.engine.reissue_confirm()
    assert out["fee_fen"] == FEE and out["balance_fen"] == 3000 and out["card_no"] == "20260002"
    summary = rig.disp.mech.summary()
    assert (
        summary["issued"] == [out["uid"]] and summary["rejected"] == [] and summary["hopper"] == 4
    )
    assert rig.engine.screen()["state"] == "take_card"
    assert rig.server.charges == 1 and rig.server.orders[out["order_id"]]["status"] == "done"
    ident = rig.take_and_read()
    assert (ident.card_no, ident.generation) == ("20260002", 2)
    order = rig.journal.get(out["order_id"])
    assert order is not None and order.step == "at_mouth" and order.identity == {}


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _crash_after(monkeypatch: pytest.MonkeyPatch, apdus: int) -> None:
    class Dying:
        def __init__(self, card: PresentCard) -> None:
            self.card, self.left = card, apdus
            self.reader, self.atr, self.detected_ns = card.reader, card.atr, card.detected_ns

        @property
        def uid(self) -> bytes:
            return self.card.uid

        def transmit(self, apdu: bytes) -> bytes:
            self.left -= 1
            if self.left < 0:
                raise Crash
            return self.card.transmit(apdu)

        def exclusive(self) -> Any:
            return self.card.exclusive()

        def reset(self) -> None:
            self.card.reset()

        def close(self) -> None:
            self.card.close()

    monkeypatch.setattr(reissue_mod, "_maybe_crashing", Dying)


@pytest.mark.parametrize("apdus", [1, 9, 20])
def test_a_crash_mid_encode_ends_with_one_fee_one_card_and_the_half_card_rejected(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, apdus: int
) -> None:
    rig.engine.reissue_quote(IDENT)
    _crash_after(monkeypatch, apdus)
    with pytest.raises(Crash):
        rig.engine.reissue_confirm()
    half = rig.disp.mech.summary()["at_encoder"]
    assert half is not None
    monkeypatch.undo()
    recovered = rig.restart().recover()
    assert [o["step"] for o in recovered] == ["at_mouth"]
    summary = rig.disp.mech.summary()
    assert summary["rejected"] == [half]  # the half-encoded card is never handed out
    assert len(summary["issued"]) == 1 and summary["issued"][0] != half
    assert rig.server.charges == 1  # the same order asked again: no second fee
    (order,) = rig.server.orders.values()
    assert order["uid"] == summary["issued"][0] and order["status"] == "done"
    assert rig.take_and_read().card_no == "20260002"


def test_a_crash_before_the_server_knew_undoes_the_order(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.engine.reissue_quote(IDENT)

    def dead(*a: Any) -> Any:
        raise Crash

    monkeypatch.setattr(rig.server, "reissue", dead)
    with pytest.raises(Crash):
        rig.engine.reissue_confirm()
    monkeypatch.undo()
    (order,) = rig.journal.open_orders()
    assert order.step == "ordered"  # asked, maybe not received: asked again at restart
    recovered = rig.restart().recover()
    assert [o["step"] for o in recovered] == ["at_mouth"]
    assert rig.server.charges == 1
    assert rig.disp.mech.summary()["rejected"] == []  # the untouched blank was used


@pytest.mark.parametrize("where", ["encoder", "mouth"])
def test_a_jam_is_reset_and_the_order_finishes(rig: Rig, where: str) -> None:
    rig.engine.reissue_quote(IDENT)
    rig.disp.mech.arm_jam(where)  # type: ignore[arg-type]
    out = rig.engine.reissue_confirm()
    summary = rig.disp.mech.summary()
    assert summary["issued"] == [out["uid"]]
    assert rig.server.charges == 1
    assert rig.take_and_read().generation == 2


def test_an_empty_hopper_is_said_before_anything_is_charged(tmp_path: Path) -> None:
    rig = Rig(tmp_path, blanks=0)
    try:
        with pytest.raises(KioskFault) as err:
            rig.engine.reissue_quote(IDENT)
        assert err.value.code == "hopper_empty"
        screen = rig.engine.screen()
        assert [n["code"] for n in screen["notices"]] == ["dispenser"]
        assert "服务台" in screen["notices"][0]["text"] and rig.server.charges == 0
    finally:
        rig.close()


def test_a_consumer_card_is_sent_to_the_desk(rig: Rig) -> None:
    rig.server.card_type = "consumer"
    with pytest.raises(HolderError) as err:
        rig.engine.reissue_quote(IDENT)
    assert err.value.code == "desk_only" and "服务台" in str(err.value) and "desk" in str(err.value)
    assert rig.engine.screen()["message"] == str(err.value)


def test_the_consumption_password_is_written_onto_the_card(rig: Rig) -> None:
    emu = issued_card(rig.issuer)
    rig.reader.present(emu, stays=True)
    with pytest.raises(HolderError) as err:
        rig.engine.change_consume_password("000000", "246802")
    assert err.value.code == "wrong_pin" and "2" in str(err.value)
    out = rig.engine.change_consume_password(PIN, "246802")
    assert out["written"] and out["card_no"] == CARD_NO
    view = CampusCard(rig.reader.current_card(), rig.issuer.for_role("pos")).read()  # type: ignore[arg-type]
    pos = CampusCard(rig.reader.current_card(), rig.issuer.for_role("pos"))  # type: ignore[arg-type]
    assert pos.check_pin(view, "246802") and not pos.check_pin(view, PIN)
    assert view.counters.tries == 0  # the correct password cleared the wrong try


def test_a_locked_card_cannot_change_its_password(rig: Rig) -> None:
    emu = issued_card(rig.issuer)
    rig.reader.present(emu, stays=True)
    for _ in range(3):
        with pytest.raises(HolderError):
            rig.engine.change_consume_password("000000", "246802")
    with pytest.raises(HolderError) as err:
        rig.engine.change_consume_password(PIN, "246802")
    assert err.value.code == "pin_locked"


def test_without_a_card_the_screen_asks_for_it(rig: Rig) -> None:
    with pytest.raises(HolderError) as err:
        rig.engine.read_card()
    assert err.value.code == "no_card" and "读卡区" in rig.engine.screen()["message"]


def test_the_idle_timeout_forgets_the_visit(rig: Rig) -> None:
    rig.engine.idle_s = 0.05
    rig.reader.present(issued_card(rig.issuer), stays=True)
    rig.engine.read_card()
    assert rig.engine.screen()["state"] == "card"
    screen = rig.engine.wait(rig.engine.screen()["version"], 2.0)
    assert screen["state"] == "idle" and screen["account"] is None and screen["message"] == ""


def test_a_reader_gone_is_said_and_what_needs_no_card_still_works(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def gone() -> None:
        raise DeviceUnavailable("pcscd: no reader")

    monkeypatch.setattr(rig, "holder_card", gone)
    with pytest.raises(KioskFault) as err:
        rig.engine.read_card()
    assert err.value.code == "reader_gone"
    assert "读卡器故障" in rig.engine.screen()["message"] and "reissue" in str(err.value)
    assert rig.engine.reissue_quote(IDENT)["fee_fen"] == FEE  # a reissue needs no card


def test_a_server_that_cannot_be_reached_is_said_in_plain_words(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*a: Any) -> Any:
        raise ServerUnavailable(0, "unreachable", "connection refused")

    monkeypatch.setattr(rig.server, "reissue_quote", down)
    with pytest.raises(KioskFault) as err:
        rig.engine.reissue_quote(IDENT)
    assert err.value.code == "server_unavailable"
    screen = rig.engine.screen()
    assert "连不上" in screen["message"] and [n["code"] for n in screen["notices"]] == ["server"]
    monkeypatch.undo()
    rig.engine.reissue_quote(IDENT)
    assert rig.engine.screen()["notices"] == []  # said while it lasts


def test_a_server_unreachable_mid_order_keeps_the_order_and_charges_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.engine.reissue_quote(IDENT)

    def down(*a: Any) -> Any:
        raise ServerUnavailable(0, "unreachable", "connection refused")

    monkeypatch.setattr(rig.server, "reissue_done", down)
    with pytest.raises(KioskFault) as err:
        rig.engine.reissue_confirm()
    assert "fee is charged once" in str(err.value)
    (order,) = rig.journal.open_orders()
    assert order.step == "encoded" and rig.disp.mech.summary()["at_mouth"] is None
    monkeypatch.undo()
    assert [o["step"] for o in rig.restart().recover()] == ["at_mouth"]
    assert rig.server.charges == 1 and rig.disp.mech.summary()["rejected"] == []


def test_an_order_the_server_refused_to_make_is_undone(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.engine.reissue_quote(IDENT)

    def refused(*a: Any) -> Any:
        raise ServerRefused(429, "rate_limited", "too many reissue attempts")

    monkeypatch.setattr(rig.server, "reissue", refused)
    with pytest.raises(KioskFault) as err:
        rig.engine.reissue_confirm()
    assert err.value.code == "rate_limited" and "nothing was charged" in str(err.value)
    assert rig.journal.open_orders() == [] and rig.server.charges == 0
    summary = rig.disp.mech.summary()
    assert summary["at_encoder"] is None and summary["issued"] == []  # the blank: reject bin
    assert rig.engine.screen()["state"] == "fault"


def test_a_reissue_by_the_code_held_up_to_the_camera(rig: Rig) -> None:
    with pytest.raises(HolderError) as err:
        rig.engine.reissue_scan(0.1)
    assert err.value.code == "no_code" and "认证码" in str(err.value)
    rig.shown = "YKT1-AUTH-CODE-TEXT"
    assert rig.engine.reissue_scan(0.1)["fee_fen"] == FEE
    assert rig.engine.screen()["state"] == "quote"


def test_going_home_forgets_the_identity_keyed(rig: Rig) -> None:
    rig.engine.reissue_quote(IDENT)
    rig.engine.home()
    with pytest.raises(EngineError):
        rig.engine.reissue_confirm()
    assert rig.server.charges == 0 and rig.journal.open_orders() == []


def test_a_card_taken_away_takes_its_account_off_the_screen(rig: Rig) -> None:
    rig.reader.present(issued_card(rig.issuer), stays=True)
    rig.engine.read_card()
    assert rig.engine.showing_card and rig.engine.screen()["account"] is not None
    rig.engine.card_left()
    screen = rig.engine.screen()
    assert screen["state"] == "idle" and screen["account"] is None


def test_line_noise_on_a_move_is_reset_and_the_order_finishes(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispenser's answer to a move was lost (DispenserLineError: the outcome unknown):
    the kiosk resets, asks where the card is, and carries on."""
    rig.engine.reissue_quote(IDENT)
    real = rig.disp.to_mouth
    calls = []

    def noisy() -> None:
        calls.append(1)
        real()  # the card did move; only the answer was lost
        if len(calls) == 1:
            raise DispenserLineError("a short frame: the answer was lost", "")

    monkeypatch.setattr(rig.disp, "to_mouth", noisy)
    out = rig.engine.reissue_confirm()
    assert rig.disp.mech.summary()["at_mouth"] == out["uid"] and rig.server.charges == 1
    assert len(calls) == 2  # asked again: at the mouth already, nothing moved


def _feed(status: str, version: int, policy: dict[str, Any] | None = None) -> FeedPage:
    acct = AccountSnapshot(
        id=CARD_ACCT, number=NUMBER, name="张三", type="student", status=status,
        balance_fen=5000, transition_fen=0, limit_fen=5000, spent_day="", spent_fen=0,
        pin_tries=0, expires="2030-12-31", version=version,
    )  # fmt: skip
    card = CardRow(card_no=CARD_NO, account_id=CARD_ACCT, uid="", generation=1, status="active")
    return FeedPage(
        version=version, accounts=[acct], cards=[card], policy=policy if policy else UNSET
    )


def test_with_the_server_away_the_feed_refuses_a_lost_card_and_says_the_fee(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delta feed's hotlist and policy (edge.cache) are what the kiosk knows offline."""
    cache = Cache(Database(":memory:"))
    engine = KioskEngine(rig, rig.server, rig.journal, rig.clock, random.Random(1), cache=cache)  # type: ignore[arg-type]

    def down(*a: Any) -> Any:
        raise ServerUnavailable(0, "unreachable", "connection refused")

    monkeypatch.setattr(rig.server, "read_card", down)
    monkeypatch.setattr(rig.server, "reissue_quote", down)
    monkeypatch.setattr(rig.server, "holder_status", down, raising=False)
    rig.reader.present(issued_card(rig.issuer), stays=True)
    with pytest.raises(KioskFault) as fault:  # nothing pulled yet: only "cannot reach"
        engine.read_card()
    assert fault.value.code == "server_unavailable"
    cache.apply(_feed("lost", 1, {"reissue_fee_fen": 2500, "pin_max_tries": 5}))
    with pytest.raises(HolderError) as refused:
        engine.read_card()
    assert refused.value.code == "card_lost" and "reported lost" in str(refused.value)
    assert "已挂失" in engine.screen()["message"]
    with pytest.raises(KioskFault) as quote:  # not about the card on the reader
        engine.reissue_quote(IDENT)
    assert quote.value.code == "server_unavailable" and "补卡工本费 ¥25.00" in str(quote.value)
    with pytest.raises(KioskFault):  # a card-less action never borrows the card's verdict
        engine.holder_status("unlock", NUMBER, "123456")
    cache.apply(_feed("normal", 2))  # unlocked: the server's word again
    with pytest.raises(KioskFault):
        engine.read_card()
