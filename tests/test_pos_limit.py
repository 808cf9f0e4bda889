"""R6 (daily limit) and R5 (consumption password, lockout) at the POS, online and offline.

R6: the terminal tracks the amount spent since campus midnight or since the last correct
consumption password, whichever is later; a purchase that would take it over the limit asks for
the consumption password; a correct one resets the tracked amount (the purchase counts from
zero).  R5: wrong tries count toward a lockout that only the desk clears; offline wrong tries
are journaled as ``pin_fail`` and counted by the server when they sync.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sim.control import AgentControl
from sync.rules import DEFAULT_DAILY_LIMIT_FEN
from tests.handterm import HandTerminal
from tests.helpers import PosProc, ServerProc, ykt
from tests.posutil import (
    NewCards,
    Rig,
    Shop,
    admin_args,
    dead_url,
    journal_rows,
    running_shop,
    sale_amounts,
    server_away,
    set_policy,
    wait_account_cached,
    wait_feed_current,
    wait_policy_cached,
)

LIMIT = DEFAULT_DAILY_LIMIT_FEN  # ¥50.00


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory, "limit") as (server, pos):
        # offline risk limits well above the daily limit, so offline sales reach R6
        limits = {
            "offline_max_purchase_fen": 20000,
            "offline_max_card_day_fen": 100000,
            "offline_max_card_fen": 65535,
        }
        set_policy(server, **limits)
        wait_policy_cached(pos, **limits)
        yield server, pos


new_card = NewCards("L", 200, topup_fen=30000)


def wrong_pin(card: dict[str, Any]) -> str:
    return "000000" if card["password"] != "000000" else "111111"


def test_online_limit_needs_pin_and_correct_pin_resets(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    card = new_card(shop)
    ctl = AgentControl(pos.url)
    assert ctl.sale(3000, card["card_no"])["approved"]
    asked = ctl.sale(3000, card["card_no"])  # 3000 + 3000 > 5000
    assert asked["needs_pin"] and not asked["approved"] and not asked["offline"]
    assert asked["code"] == "needs_pin" and asked["tries_left"] == 3
    assert ctl.state()["state"] == "idle"  # `ykt sim sale` without --pin cancels the sale
    ok = ctl.sale(3000, card["card_no"], pin=card["password"])
    assert ok["approved"] and not ok["offline"]
    pos.wait_synced()
    acct = server.account(card["number"])
    assert acct["spent_today_fen"] == 3000  # the purchase counted from zero
    # 3000 + 2000 == the limit: no password; one fen more goes over it
    assert ctl.sale(LIMIT - 3000, card["card_no"])["approved"]
    pos.wait_synced()
    assert ctl.sale(1, card["card_no"])["needs_pin"]
    acct = server.account(card["number"])
    assert acct["spent_today_fen"] == LIMIT and sale_amounts(acct) == [3000, 3000, 2000]
    assert acct["balance_fen"] == 30000 - 8000


def test_online_wrong_pins_lock_until_desk_reset(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    card = new_card(shop)
    ctl = AgentControl(pos.url)
    for left in (2, 1, 0):
        out = ctl.sale(LIMIT + 100, card["card_no"], pin=wrong_pin(card))
        assert not out["approved"] and out["code"] == "wrong_pin" and out["tries_left"] == left
    assert "now locked" in out["reason"]
    locked = ctl.sale(LIMIT + 100, card["card_no"], pin=card["password"])
    assert not locked["approved"] and locked["code"] == "pin_locked" and "desk" in locked["reason"]
    # under the limit no password is asked, so the card still pays
    assert ctl.sale(100, card["card_no"])["approved"]
    assert server.account(card["number"])["pin_locked"] is True
    r = ykt(
        *admin_args(server),
        "account",
        "pin-reset",
        "--number",
        card["number"],
        "--json",
        check=False,
    )
    assert r.returncode == 0, r.stderr
    ok = ctl.sale(LIMIT + 100, card["card_no"], pin=card["password"])
    assert ok["approved"], ok
    pos.wait_synced()
    acct = server.account(card["number"])
    assert acct["pin_tries"] == 0 and not acct["pin_locked"]
    assert sale_amounts(acct) == [100, LIMIT + 100]


def test_offline_limit_pin_and_reset(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    card = new_card(shop)
    ctl = AgentControl(pos.url)
    with server_away(server, pos):
        first = ctl.sale(3000, card["card_no"])
        assert first["approved"] and first["offline"] and first["balance_fen"] == 27000
        asked = ctl.sale(3000, card["card_no"])
        assert asked["needs_pin"] and asked["offline"] and asked["tries_left"] == 3
        bad = ctl.sale(3000, card["card_no"], pin=wrong_pin(card))
        assert bad["code"] == "wrong_pin" and bad["offline"] and bad["tries_left"] == 2
        ok = ctl.sale(3000, card["card_no"], pin=card["password"])
        assert ok["approved"] and ok["offline"] and ok["balance_fen"] == 24000
        # the PIN reset the tracked amount: 3000 + 2000 reaches but does not pass the limit
        assert ctl.sale(2000, card["card_no"])["approved"]
        assert ctl.sale(1, card["card_no"])["needs_pin"]
    kinds = [
        (r["kind"], r["pin"], r["amt"])
        for r in journal_rows(pos.data)
        if r["acct"] == card["account_id"]
    ]
    assert kinds == [
        ("sale", "none", 3000),
        ("pin_fail", "fail", 0),
        ("sale", "ok", 3000),
        ("sale", "none", 2000),
    ]
    acct = server.account(card["number"])
    assert sale_amounts(acct) == [3000, 3000, 2000] and acct["balance_fen"] == 22000
    assert acct["spent_today_fen"] == 5000
    assert acct["pin_tries"] == 0  # the correct password after the wrong one cleared the count


def test_offline_limit_counts_the_days_phone_payments(shop: tuple[ServerProc, PosProc]) -> None:
    """R6 is the account's limit: the card's counters know nothing of phone payments, the
    account snapshot does, so offline the card still asks once both together pass the limit."""
    server, pos = shop
    card = new_card(shop)
    phone = HandTerminal.enroll(server, "limit-phone")
    try:
        phone.record(card["account_id"], 4500, method="qr-forward")  # paid by phone code today
        assert phone.push(phone.wire([1]))["ack"] == 1
    finally:
        phone.close()
    wait_account_cached(pos, card["account_id"], spent_fen=4500)
    ctl = AgentControl(pos.url)
    with server_away(server, pos):
        asked = ctl.sale(1000, card["card_no"])
        assert asked["needs_pin"] and asked["offline"], asked
        ok = ctl.sale(1000, card["card_no"], pin=card["password"])
        assert ok["approved"] and ok["offline"], ok
        assert ctl.sale(4000, card["card_no"])["approved"]  # counts from the password: 5000
    assert sale_amounts(server.account(card["number"])) == [4500, 1000, 4000]


def test_offline_wrong_pins_count_at_sync(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    card = new_card(shop)
    ctl = AgentControl(pos.url)
    with server_away(server, pos):
        for left in (2, 1):
            out = ctl.sale(LIMIT + 1, card["card_no"], pin=wrong_pin(card))
            assert out["code"] == "wrong_pin" and out["offline"] and out["tries_left"] == left
    acct = server.account(card["number"])
    assert acct["pin_tries"] == 2 and sale_amounts(acct) == []
    # one more wrong try online locks it: the server counted the two offline ones
    out = AgentControl(pos.url).sale(LIMIT + 1, card["card_no"], pin=wrong_pin(card))
    assert out["code"] == "wrong_pin" and not out["offline"] and out["tries_left"] == 0
    assert server.account(card["number"])["pin_locked"] is True


def test_offline_lockout_holds_until_desk_reset(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    card = new_card(shop)
    ctl = AgentControl(pos.url)
    with server_away(server, pos):
        for left in (2, 1, 0):
            out = ctl.sale(LIMIT + 1, card["card_no"], pin=wrong_pin(card))
            assert out["code"] == "wrong_pin" and out["tries_left"] == left
        locked = ctl.sale(LIMIT + 1, card["card_no"], pin=card["password"])
        assert locked["code"] == "pin_locked" and locked["offline"]
    acct = server.account(card["number"])
    assert acct["pin_tries"] == 3 and acct["pin_locked"]
    online = ctl.sale(LIMIT + 1, card["card_no"], pin=card["password"])
    assert online["code"] == "pin_locked" and not online["offline"]
    r = ykt(*admin_args(server), "account", "pin-reset", "--number", card["number"], check=False)
    assert r.returncode == 0, r.stderr
    wait_feed_current(server, pos)
    assert wait_account_cached(pos, card["account_id"])["pin_tries"] == 0
    with server_away(server, pos):
        ok = ctl.sale(LIMIT + 1, card["card_no"], pin=card["password"])
        assert ok["approved"] and ok["offline"], ok
    acct = server.account(card["number"])
    assert sale_amounts(acct) == [LIMIT + 1] and acct["pin_tries"] == 0
    assert acct["spent_today_fen"] == LIMIT + 1


def test_online_wrong_tries_carry_into_offline(shop: tuple[ServerProc, PosProc]) -> None:
    """Two wrong tries online, then offline the snapshot says so: one more locks it."""
    server, pos = shop
    card = new_card(shop)
    ctl = AgentControl(pos.url)
    for _ in range(2):
        assert ctl.sale(LIMIT + 1, card["card_no"], pin=wrong_pin(card))["code"] == "wrong_pin"
    wait_feed_current(server, pos)
    assert wait_account_cached(pos, card["account_id"])["pin_tries"] == 2
    with server_away(server, pos):
        out = ctl.sale(LIMIT + 1, card["card_no"], pin=wrong_pin(card))
        assert out["offline"] and out["code"] == "wrong_pin" and out["tries_left"] == 0
        assert ctl.sale(LIMIT + 1, card["card_no"], pin=card["password"])["code"] == "pin_locked"
    assert server.account(card["number"])["pin_tries"] == 3


# -- R6 online before the sales have synced ---------------------------------------------------
# The in-process engine (tests.posutil.Rig) pushes nothing, so the server knows the sales only
# as holds on the amounts it authorized: exactly the window between a sale and its sync.
def rig_sale(rig: Rig, card: dict[str, Any], fen: int, pin: str | None = None) -> dict[str, Any]:
    eng = rig.engine
    eng.key_amount(fen)
    eng.on_card(rig.tap(card))
    s = eng.screen()
    if s["state"] == "wait_pin" and pin is not None:
        s = eng.key_pin(pin)
    if s["state"] == "wait_pin":
        eng.cancel()
    return s


def test_online_limit_counts_sales_not_yet_synced(
    shop: tuple[ServerProc, PosProc], rig: Rig
) -> None:
    card = new_card(shop)
    assert rig_sale(rig, card, 3000)["state"] == "approved"
    assert rig_sale(rig, card, 3000)["state"] == "wait_pin"  # 3000 + 3000 > 5000 today


def test_online_pin_reset_holds_before_sync(shop: tuple[ServerProc, PosProc], rig: Rig) -> None:
    card = new_card(shop)
    assert rig_sale(rig, card, 3000)["state"] == "approved"
    assert rig_sale(rig, card, 3000, pin=card["password"])["state"] == "approved"
    # the password reset the tracked amount: 3000 + 2000 reaches the limit, one fen passes it
    assert rig_sale(rig, card, 2000)["state"] == "approved"
    assert rig_sale(rig, card, 1)["state"] == "wait_pin"


def test_offline_tracked_amount_starts_again_at_campus_midnight(
    shop: tuple[ServerProc, PosProc], rig: Rig
) -> None:
    """R6 offline with the injected clock: the amount tracked today does not carry past the
    campus midnight (Asia/Shanghai), whatever the UTC date."""
    card = new_card(shop)
    rig.pull()
    rig.client.base_url = dead_url()
    now = dt.datetime.fromtimestamp(rig.clock.now_ms() / 1000, ZoneInfo("Asia/Shanghai"))
    # the sales happen at 23:50 campus time, the next one at 00:05
    evening = now.replace(hour=23, minute=50, second=0, microsecond=0)
    rig.clock.set(int(evening.timestamp() * 1000))
    first = rig_sale(rig, card, 4000)
    assert first["state"] == "approved" and first["offline"] is True
    assert rig_sale(rig, card, 2000)["state"] == "wait_pin"  # 6000 > 5000 the same day
    rig.clock.advance(15 * 60 * 1000)
    after = rig_sale(rig, card, 2000)
    assert after["state"] == "approved" and after["offline"] is True, after
    assert rig_sale(rig, card, 3001)["state"] == "wait_pin"  # 2000 + 3001 > 5000 the new day
