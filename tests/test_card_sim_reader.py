"""The card path on the in-process ``sim://`` reader (the same card code and emulator as on
pcscd): ``ykt sim sale --card`` keeps working, R5/R6 live on the card across taps, restarts
and offline sales, clones and unknown cards are refused."""

from __future__ import annotations

from pathlib import Path

from sim import cardimage
from sim.control import AgentControl
from sync.card import layout
from sync.card.keys import Keystore
from tests.helpers import PosProc, ServerProc, free_port, ykt


def _card_counters(pos: PosProc, card: dict) -> layout.Counters:
    keys = Keystore.load(pos.data / "card-keys.json")
    img = cardimage.load(pos.data / "sim-cards" / f"{card['card_no']}-{card['uid']}.img")
    a = layout.Counters.decode(bytes(img.blocks[16]), keys, img.uid)
    b = layout.Counters.decode(bytes(img.blocks[17]), keys, img.uid)
    return layout.choose_slot(a, b)[1]


def test_limit_and_lockout_live_on_the_card(server: ServerProc, pos: PosProc) -> None:
    card = server.add_account("S1", 11, topup_fen=20000)
    ctl = AgentControl(pos.url)
    assert ctl.sale(3000, card["card_no"])["approved"]
    assert _card_counters(pos, card).spent_fen == 3000
    asked = ctl.sale(2500, card["card_no"])
    assert asked["needs_pin"] and asked["code"] == "needs_pin"
    for left in (2, 1, 0):
        wrong = ctl.sale(2500, card["card_no"], pin="111111")
        assert wrong["code"] == "wrong_pin" and wrong["tries_left"] == left
    assert ctl.sale(2500, card["card_no"], pin=card["password"])["code"] == "pin_locked"
    # the POS restarts: the card still knows (its image is kept like a real card)
    pos.stop()
    pos.start()
    ctl = AgentControl(pos.url)
    assert ctl.sale(2500, card["card_no"], pin=card["password"])["code"] == "pin_locked"
    server.admin().call("POST", "/v1/admin/accounts/S1/pin-reset")
    ok = ctl.sale(2500, card["card_no"], pin=card["password"])
    assert ok["approved"] and ok["balance_fen"] == 20000 - 3000 - 2500
    c = _card_counters(pos, card)
    assert (c.spent_fen, c.tries, c.taps) == (2500, 0, 2)
    pos.wait_synced()
    acct = server.account("S1")
    assert acct["balance_fen"] == 14500 and not acct["pin_locked"]


def test_offline_sales_use_the_card_counters(
    server: ServerProc, pos: PosProc, tmp_path: Path
) -> None:
    card = server.add_account("S2", 12, topup_fen=20000)
    pos.wait_card_known(card["card_no"])
    ctl = AgentControl(pos.url)
    assert ctl.sale(4000, card["card_no"])["approved"]
    pos.wait_synced()
    server.stop()
    off = ctl.sale(500, card["card_no"])
    assert off["approved"] and off["offline"]
    over = ctl.sale(1000, card["card_no"])  # 40 + 5 + 10 > 50: the card says so, offline too
    assert over["needs_pin"]
    done = ctl.sale(1000, card["card_no"], pin=card["password"])
    assert done["approved"] and done["offline"]
    server.start()
    pos.wait_synced(30)
    assert server.account("S2")["balance_fen"] == 20000 - 4000 - 500 - 1000


def test_clone_and_unknown_cards_are_refused(server: ServerProc, pos: PosProc) -> None:
    card = server.add_account("S3", 13, topup_fen=5000)
    ctl = AgentControl(pos.url)
    clone = ctl.sale(100, card["card_no"], uid="04123456")
    assert not clone["approved"] and clone["code"] == "declined" and clone["detail"] == "clone"
    assert "clone" in clone["reason"]
    unknown = ctl.sale(100, "99999999")
    assert not unknown["approved"] and "unknown card" in unknown["reason"]
    assert ctl.sale(100, card["card_no"])["approved"]
    # an older card of the account stops working once a new one is issued (R11)
    new = server.admin().call("POST", "/v1/admin/accounts/S3/cards", {})
    pos.wait_card_known(new["card_no"])
    old = ctl.sale(100, card["card_no"])
    assert not old["approved"] and "R11" in old["reason"]
    assert ctl.sale(100, new["card_no"])["approved"]


def test_pos_with_a_keystore_installed_by_hand(server: ServerProc, tmp_path: Path) -> None:
    import json
    import stat

    keys = tmp_path / "pos-keys.json"
    admin = ["admin", "--server", server.url, "--token-file", str(server.token_file)]
    out = ykt(*admin, "keys", "export", "--role", "pos", "--out", str(keys), "--json")
    assert json.loads(out.stdout)["keys"] == ["ctr_mac", "ctr_write", "id_read", "pin"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert "issuer_private" not in keys.read_text()
    card = server.add_account("S4", 14, topup_fen=5000)
    pos = PosProc(
        tmp_path / "pos2",
        server,
        token=server.enroll_token("hand"),
        extra=("--keystore", str(keys)),
    ).start()
    try:
        assert AgentControl(pos.url).sale(100, card["card_no"])["approved"]
        assert not (pos.data / "card-keys.json").exists()  # nothing fetched
        assert pos.status()["card_keys"] == "loaded"
    finally:
        pos.stop()
    missing = ykt(
        *("pos", "--data", str(pos.data), "--keystore", str(tmp_path / "no.json")),
        *("--control-port", str(free_port())),  # not the default: a demo may be running
        check=False,
        timeout=30,
    )
    assert missing.returncode == 2 and "no card keystore" in missing.stderr
