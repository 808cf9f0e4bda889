"""The POS on pcsc:// with simulated cards inside a private pcscd (vpcd): tearing at every
step, refused cards, the consumption-password lockout on the card, and pcscd / reader
failures mid-shift.  pyscard and pcscd run for real in the POS process; only the card is
simulated (served from this test process by :class:`sim.vicc.VirtualCard`)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.cache import Cache
from sim import cardimage
from sim.cards import encoded_card
from sim.control import AgentControl
from sim.harness import pcscd
from sim.mifare import MifareClassic1K
from sim.vicc import VirtualCard
from sync.card import layout
from sync.card.keys import Keystore
from sync.db import Database
from tests.card_helpers import issue_image, server_keys
from tests.helpers import PosProc, ServerProc, id_card, wait_until

pytestmark = pytest.mark.slow


class Rig:
    def __init__(self, server: ServerProc, pos: PosProc, readers: pcscd.VirtualReaders, tmp: Path):
        self.server, self.pos, self.readers, self.tmp = server, pos, readers, tmp
        self.port = readers.slot(0)["port"]
        self.ctl = AgentControl(pos.url, timeout=10)
        self.keys = server_keys(server)
        self.vc: VirtualCard | None = None

    def present(self, card: MifareClassic1K) -> VirtualCard:
        self.remove()
        card.power_on()
        self.vc = VirtualCard(card, self.port).start()
        self.vc.wait_inserted()
        return self.vc

    def remove(self) -> None:
        if self.vc is not None:
            self.vc.remove()
            self.vc = None
        wait_until(lambda: "ready" in self.pos.status()["reader_status"], 5)

    def sale(self, amount: int, pin: str | None = None) -> dict[str, Any]:
        return self.ctl.sale(amount, pin=pin)

    def card(self, number: str, n: int, uid: str, topup: int = 20000, **kw: Any) -> MifareClassic1K:
        a = self.server.admin()
        a.call(
            "POST",
            "/v1/admin/accounts",
            {"number": number, "name": f"卡{n}", "type": "student", "id_card": id_card(n), **kw},
        )
        if topup:
            a.call(
                "POST",
                f"/v1/admin/accounts/{number}/topups",
                {"amount_fen": topup, "channel": "cash"},
            )
        path = self.tmp / f"{uid}.img"
        rec = issue_image(self.server, number, uid, path, self.keys)
        self.pos.wait_card_known(rec["card_no"])
        return cardimage.load(path)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("pcscpos")
    readers = pcscd.VirtualReaders(tmp / "readers")
    readers.start(2)
    with contextlib.ExitStack() as stop:  # stopped in reverse, also when a start fails
        stop.callback(readers.stop)
        server = ServerProc(tmp / "server").start()
        stop.callback(server.stop)
        pos = PosProc(
            tmp / "pos",
            server,
            token=server.enroll_token("canteen-pcsc"),
            reader="pcsc://" + readers.slot(0)["name"],
            env={"PCSCLITE_CSOCK_NAME": str(readers.socket_path)},
        ).start()
        stop.callback(pos.stop)
        r = Rig(server, pos, readers, tmp)
        yield r
        if r.vc is not None:
            r.vc.remove()


def _pin(n: int) -> str:
    c = id_card(n)
    return c[-7:-1] if c[-1] == "X" else c[-6:]


def test_tearing_after_every_apdu_never_half_sells(rig: Rig) -> None:
    card = rig.card("TEAR01", 301, "04C0FFEE")
    rig.present(card)
    assert rig.sale(100)["approved"]
    approved, declined = 1, 0
    sale_apdus = card.apdus
    assert sale_apdus == 17  # GET UID, 2 LOAD KEY, 4 AUTHENTICATE, 9 READ, 1 UPDATE
    # torn while reading (a few points; every point is covered in-process by
    # test_card_format), and at the write: not written, half written, written unanswered
    write = sale_apdus - 1
    plan = [(1, "partial"), (6, "partial"), (12, "partial")]
    plan += [(write, "before"), (write, "partial"), (write, "after")]
    for n, mode in plan:
        card.tear_after(n, mode)
        rig.present(card)
        out = rig.sale(100)
        assert out["state"] in ("approved", "declined"), out
        if out["approved"]:
            approved += 1
        else:
            declined += 1
            assert out["code"] in ("card_gone", "card_error"), out
            assert "nothing charged" in out["reason"] or "tap again" in out["reason"]
        card.tear_after(None)
        rig.present(card)  # presented again, the card sells normally
        again = rig.sale(100)
        assert again["approved"], (n, mode, again)
        approved += 1
    rig.remove()
    assert declined == len(plan)  # every tear before the answer to the write declined
    rig.pos.wait_synced()
    acct = rig.server.account("TEAR01")
    sales = [b for b in acct["bills"] if b["kind"] == "sale"]
    assert len(sales) == approved and acct["balance_fen"] == 20000 - 100 * approved
    # the card's own counters saw exactly the approved sales (the one that landed without
    # an answer was put back when the card came back)
    c = _counters(card, rig.keys)
    assert c.taps == approved and c.spent_fen == 100 * approved


def _counters(card: MifareClassic1K, keys: Keystore) -> layout.Counters:
    a = layout.Counters.decode(bytes(card.blocks[16]), keys, card.uid)
    b = layout.Counters.decode(bytes(card.blocks[17]), keys, card.uid)
    return layout.choose_slot(a, b)[1]


def test_refused_cards_with_clear_reasons(rig: Rig) -> None:
    good = rig.card("REF01", 302, "04A0A0A0")
    blob = b"".join(bytes(good.blocks[b]) for b in (4, 5, 6, 8, 9, 10, 12))

    def with_blob(uid: str, data: bytes, keys: Keystore | None = None) -> MifareClassic1K:
        return encoded_card(bytes.fromhex(uid), base64.b64encode(data).decode(), keys or rig.keys)

    cases: list[tuple[str, MifareClassic1K, str, str]] = []
    # clone: the same data on a card with another UID, trailers copied
    copied = MifareClassic1K(bytes.fromhex("04B0B0B0"), [bytearray(b) for b in good.blocks])
    cases.append(("clone, keys copied", copied, "foreign_card", "keys do not match"))
    # clone made by someone holding the keys: the signature binds the data to the UID
    cases.append(("clone, with keys", with_blob("04B0B0B1", blob), "clone", "clone"))
    # altered data: the issuer signature fails
    altered = bytearray(blob)
    altered[9] ^= 0x01
    cases.append(("altered", with_blob("04A0A0A0", bytes(altered)), "bad_signature", "signature"))
    # a card of another campus
    other = Keystore.generate("other")
    ident = layout.Identity("REF01", 1, "student", 1, None, "2026-01-01")
    foreign = layout.issue_blob(other, bytes.fromhex("04C1C1C1"), ident, blob[32:48])
    cases.append(("foreign", with_blob("04C1C1C1", foreign, other), "foreign_card", "keys"))
    # both counter slots damaged
    damaged = with_blob("04A0A0A0", blob)
    damaged.blocks[16][3] ^= 0xFF
    damaged.blocks[17][3] ^= 0xFF
    cases.append(("counters", damaged, "counters_damaged", "counters"))
    # old generation: a new card replaced it (R11)
    old = rig.card("REF02", 303, "04D0D0D0")
    issue_image(rig.server, "REF02", "04D0D0D1", rig.tmp / "new.img", rig.keys)
    new_no = rig.server.account("REF02")["cards"][-1]["card_no"]
    rig.pos.wait_card_known(new_no)
    cases.append(("replaced", old, "replaced", "R11"))
    # an identity claiming an old generation of the current card number (signed: the
    # issuer's own mistake or a stolen key): still refused
    h = bytearray(layout.Identity.decode(bytes(old.blocks[4]), bytes(old.blocks[5])).header())
    ident2 = layout.Identity(
        new_no, int.from_bytes(h[8:12], "big"), "student", 1, None, "2026-01-01"
    )
    stale = layout.issue_blob(rig.keys, bytes.fromhex("04D0D0D1"), ident2, blob[32:48])
    cases.append(("old generation", with_blob("04D0D0D1", stale), "replaced", "R11"))
    # expired (R13): the validity on the card is over
    rig.card("REF03", 304, "04E0E0E0", expires="2001-01-01")
    expired = cardimage.load(rig.tmp / "04E0E0E0.img")
    cases.append(("expired", expired, "expired", "expired"))

    for what, card, code, words in cases:
        rig.present(card)
        out = rig.sale(100)
        assert not out["approved"] and out["code"] == "declined", (what, out)
        assert out["detail"] == code, (what, out)
        assert words.lower() in out["reason"].lower(), (what, out)
    rig.remove()
    assert rig.server.account("REF01")["balance_fen"] == 20000


def test_wrong_password_locks_the_card_until_the_desk_clears(rig: Rig) -> None:
    card = rig.card("PIN01", 305, "04F0F0F0")
    rig.present(card)
    assert rig.sale(1000)["approved"]
    asked = rig.sale(4500)
    assert asked["needs_pin"] and asked["tries_left"] == 3
    lefts = []
    for _ in range(3):
        out = rig.sale(4500, pin="000000")
        assert out["code"] == "wrong_pin", out
        lefts.append(out["tries_left"])
    assert lefts == [2, 1, 0]
    locked = rig.sale(4500, pin=_pin(305))
    assert locked["code"] == "pin_locked" and "service desk" in locked["reason"]
    assert _counters(card, rig.keys).tries == 3  # the lockout lives on the card
    rig.pos.wait_synced()
    assert rig.server.account("PIN01")["pin_locked"]
    rig.server.admin().call("POST", "/v1/admin/accounts/PIN01/pin-reset")
    ok = rig.sale(4500, pin=_pin(305))
    assert ok["approved"], ok
    c = _counters(card, rig.keys)
    assert c.tries == 0 and c.spent_fen == 4500  # a correct password resets the tracked amount
    assert rig.sale(400)["approved"]  # 45.00 + 4.00 stays under the limit: no password
    rig.remove()
    rig.pos.wait_synced()
    acct = rig.server.account("PIN01")
    assert not acct["pin_locked"] and acct["balance_fen"] == 20000 - 1000 - 4500 - 400


def test_pcscd_killed_and_restarted_and_reader_unplugged(rig: Rig) -> None:
    card = rig.card("FAIL01", 306, "04ABABAB")
    rig.present(card)
    assert rig.sale(100)["approved"]
    rig.vc.remove()  # type: ignore[union-attr]
    rig.vc = None
    # pcscd dies mid-shift
    rig.readers.kill()
    wait_until(lambda: "pcscd" in rig.pos.status()["reader_error"], 10)
    screen = rig.ctl.state()
    assert screen["notice"] and "reader" in screen["notice"]
    rig.readers.restart()
    wait_until(lambda: not rig.pos.status()["reader_error"], 10)
    assert rig.ctl.state()["notice"] is None
    rig.present(card)
    assert rig.sale(100)["approved"]
    # the reader is unplugged, and comes back
    rig.vc.remove()  # type: ignore[union-attr]
    rig.vc = None
    rig.readers.restart(without_slots=frozenset({0}))
    wait_until(lambda: "not found" in rig.pos.status()["reader_error"], 10)
    rig.readers.restart()
    wait_until(lambda: not rig.pos.status()["reader_error"], 10)
    rig.present(card)
    assert rig.sale(100)["approved"]
    rig.remove()
    events = [e["event"] for e in rig.pos.status()["reader_events"]]
    assert any("pcscd" in e for e in events)
    assert any("not found" in e for e in events)
    assert sum(e.startswith("recovered") for e in events) >= 2
    log = (rig.tmp / "pos.log").read_text()
    assert "works again after" in log


def test_sim_card_endpoint_refuses_on_pcsc(rig: Rig) -> None:
    with pytest.raises(Exception, match="ykt sim card present"):
        rig.ctl.present("10000001")
    assert rig.pos.status()["reader"].startswith("pcsc://")


def test_a_card_of_the_earlier_counter_record_pays_and_is_rewritten(rig: Rig) -> None:
    """Cards in the field are not all rewritten at once: a card whose counters are counter
    record 1 (docs/card-format.md) pays through pcscd, and the POS writes record 2 into the
    other slot (the record 1 slot stays until the next write)."""
    uid = "04010101"
    issued = rig.card("OLD01", 307, uid)
    blob = b"".join(bytes(issued.blocks[b]) for b in (4, 5, 6, 8, 9, 10, 12))
    old = layout.Counters(0x0102, None, 0, 5, 0, 0, version=1)
    card = encoded_card(
        bytes.fromhex(uid),
        base64.b64encode(blob).decode(),
        rig.keys,
        bytes(issued.blocks[layout.B_TAG]),
        counters=old,
    )
    assert _counters(card, rig.keys).version == 1
    rig.present(card)
    assert rig.sale(100)["approved"]
    versions = sorted(_slots(card, rig.keys))
    assert versions == [1, 2]
    c = _counters(card, rig.keys)
    assert (c.version, c.taps, c.spent_fen, c.offline_fen) == (2, 6, 100, 0)
    assert rig.sale(200)["approved"]
    assert _slots(card, rig.keys) == [2, 2] and _counters(card, rig.keys).taps == 7
    rig.remove()
    rig.pos.wait_synced()
    assert rig.server.account("OLD01")["balance_fen"] == 20000 - 300


def _slots(card: MifareClassic1K, keys: Keystore) -> list[int]:
    """The counter record version of each valid slot."""
    got = (layout.Counters.decode(bytes(card.blocks[b]), keys, card.uid) for b in layout.B_SLOTS)
    return [c.version for c in got if c is not None]


def test_a_card_restored_from_an_old_image_is_blocked(rig: Rig) -> None:
    """A dump of the card taken early, written back after some sales: the POS sends the
    card's facts, the server has seen more sales on it than it shows, raises the alarm and
    blocks the card (docs/security.md); every terminal then refuses it."""
    card = rig.card("BACK01", 308, "04020202")
    rig.present(card)
    assert rig.sale(100)["approved"]
    image = [bytes(b) for b in card.blocks]  # the dump
    assert rig.sale(100)["approved"] and rig.sale(100)["approved"]
    rig.remove()
    rig.pos.wait_synced()
    for n, block in enumerate(image):
        card.blocks[n][:] = block  # written back
    rig.present(card)
    out = rig.sale(100)
    assert not out["approved"] and "blocked" in out["reason"], out
    acct = rig.server.account("BACK01")
    assert [c["status"] for c in acct["cards"]] == ["blocked"]
    assert acct["balance_fen"] == 20000 - 300
    alarms = rig.server.admin().call("GET", "/v1/admin/alarms")["alarms"]
    assert "card_rollback" in [a["kind"] for a in alarms]
    # the POS hears of the block through the feed: refused without asking the server
    card_no = acct["cards"][0]["card_no"]
    cache = Cache(Database(rig.pos.data / "cache.db", synchronous="NORMAL"))
    try:
        wait_until(lambda: getattr(cache.card(card_no), "status", "") == "blocked", 10, 0.05)
    finally:
        cache.db.close()
    again = rig.sale(100)
    assert (again["approved"], again["detail"]) == (False, "blocked"), again
    rig.remove()
