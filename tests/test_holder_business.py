"""The card holder's business through the app API (issue 5 part 1), against the real server
app on loopback: R2, R3, R4, R7, R9, R10, R15, R16, R17."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sync import rules
from sync.clock import SystemClock
from tests.live import Live, Pos
from tests.paygate_helpers import open_gate, order, pay, register, wait_order


def me(live: Live, token: str) -> dict[str, Any]:
    r = live.call("GET", "/v1/app/me", token=token)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_r3_r16_holder_signs_in_with_the_initial_query_password(live: Live) -> None:
    """R16 with R3: number + initial query password; a temporary card signs in by card number."""
    acct = live.add_account("S2023002", 2)
    assert me(live, live.login("S2023002", acct["password"]))["number"] == "S2023002"
    tmp = live.add_account("TMP7", 7, kind="temporary")
    assert me(live, live.login(tmp["card_no"], tmp["password"]))["number"] == "TMP7"


def test_r4_change_query_password(live: Live) -> None:
    """R4: the old password confirms; afterwards only the new one signs in."""
    acct = live.add_account("S1", 11)
    tok = live.login("S1", acct["password"])
    bad = live.call(
        "POST", "/v1/app/password", {"old_password": "999999", "new_password": "123456"}, tok
    )
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "bad_credentials"
    short = live.call(
        "POST", "/v1/app/password", {"old_password": acct["password"], "new_password": "12345"}, tok
    )
    assert short.status_code == 422
    ok = live.call(
        "POST",
        "/v1/app/password",
        {"old_password": acct["password"], "new_password": "123456"},
        tok,
    )
    assert ok.status_code == 200 and ok.json() == {"changed": True}
    assert (
        live.call(
            "POST", "/v1/app/login", {"number": "S1", "password": acct["password"]}
        ).status_code
        == 401
    )
    live.login("S1", "123456")


def test_r10_r2_loss_blocks_the_card_at_once_and_unlock_restores_it(live: Live) -> None:
    """R10 from the app; R2: the loss blocks the card at the POS immediately."""
    card = live.add_account("S2", 12, topup_fen=5000)
    pos = Pos(live.terminal("pos"))
    tok = live.login("S2", card["password"])
    assert pos.sell(card, 100)["approved"]
    r = live.call("POST", "/v1/app/report-loss", token=tok)
    assert r.json() == {"number": "S2", "status": "lost"}
    declined = pos.sell(card, 100)
    assert not declined["approved"] and "lost" in declined["reason"]
    assert live.call("POST", "/v1/app/report-loss", token=tok).status_code == 409
    assert live.call("POST", "/v1/app/unlock", token=tok).json()["status"] == "normal"
    assert pos.sell(card, 100)["approved"]


def test_r10_cardless_loss_and_unlock_are_rate_limited(live: Live) -> None:
    """R10 card-less: number + query password, no session; limited per number."""
    card = live.add_account("S3", 13)
    body = {"number": "S3", "password": card["password"]}
    assert live.call("POST", "/v1/holder/report-loss", body).json()["status"] == "lost"
    assert live.call("POST", "/v1/holder/unlock", body).json()["status"] == "normal"
    wrong = {"number": "S3", "password": "000000"}
    for _ in range(rules.CARDLESS_PER_NUMBER - 2):
        assert live.call("POST", "/v1/holder/report-loss", wrong).status_code == 401
    limited = live.call("POST", "/v1/holder/report-loss", body)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    assert live.admin("GET", "/v1/admin/accounts/S3")["status"] == "normal"


def test_r12_a_holder_cannot_unfreeze(live: Live) -> None:
    """R12: only desk staff unfreeze, after checking; unlock (R10) does not."""
    card = live.add_account("S4", 14)
    live.admin("POST", "/v1/admin/accounts/S4/status", {"action": "freeze"})
    tok = live.login("S4", card["password"])
    r = live.call("POST", "/v1/app/unlock", token=tok)
    assert r.status_code == 409 and r.json()["error"]["code"] == "bad_status"
    assert live.admin("GET", "/v1/admin/accounts/S4")["status"] == "frozen"


def test_r12_automatic_freeze_on_query_password_lockout_is_configurable(live: Live) -> None:
    """R12: the freeze rules are configuration; with the rule on, a query-password lockout
    freezes the account."""
    live.add_account("S5", 15)
    live.admin("PUT", "/v1/admin/policy", {"values": {"auto_freeze_query_lockout": True}})
    for _ in range(5):
        live.call("POST", "/v1/app/login", {"number": "S5", "password": "000000"})
    assert live.admin("GET", "/v1/admin/accounts/S5")["status"] == "frozen"


def test_r7_topups_by_channel_switches_and_the_transition_balance(
    live: Live, tmp_path: Path
) -> None:
    """R7: each channel switchable; Alipay lands in the transition balance and moves into the
    balance at the next card transaction on a POS; the query password confirms.  A top-up is
    an order credited by its payment provider's signed notification (issue 10 item 1)."""
    card = live.add_account("S6", 16)
    tok = live.login("S6", card["password"])
    pw = card["password"]
    gate = open_gate(tmp_path / "gate", SystemClock())
    register(live, gate, "wechat", "alipay", "bank")

    def topup(channel: str, amount: int, password: str = pw, **kw: Any) -> Any:
        r = order(live, tok, channel, amount, password, **kw)
        if r.status_code != 200:
            return r
        if r.json()["status"] != "open":  # a retry of an order paid before
            return r.json()
        pay(r.json())
        return wait_order(live, tok, r.json()["order_id"])

    try:
        assert topup("wechat", 1000)["balance_fen"] == 1000
        assert topup("bank", 1000).json()["error"]["code"] == "channel_off"  # off by default
        assert topup("cash", 1000).status_code == 422  # cash only at the desk
        assert topup("wechat", 1000, "000000").status_code == 401
        ali = topup("alipay", 2000, request_id="alipay-0001")
        assert (ali["balance_fen"], ali["transition_fen"]) == (1000, 2000)
        again = topup("alipay", 2000, request_id="alipay-0001")  # the same order: paid once
        assert again["order_id"] == ali["order_id"] and again["transition_fen"] == 2000
        live.admin("PUT", "/v1/admin/policy", {"values": {"channels": {"wechat": False}}})
        assert topup("wechat", 100).json()["error"]["code"] == "channel_off"
        Pos(live.terminal("pos")).sell(card, 500)
        after = me(live, tok)
        assert (after["balance_fen"], after["transition_fen"]) == (2500, 0)
    finally:
        gate.stop()


def test_r9_bills_hold_topups_and_purchases_flow_adds_account_operations(live: Live) -> None:
    """R9: bills = top-ups and purchases; flow = account operations, top-ups, purchases."""
    card = live.add_account("S7", 17, topup_fen=3000)
    tok = live.login("S7", card["password"])
    live.admin(
        "POST", "/v1/admin/electricity/buildings", {"code": "B1", "name": "一号", "rooms": ["101"]}
    )
    Pos(live.terminal("pos")).sell(card, 700)
    live.call(
        "POST", "/v1/app/electricity", {"building": "B1", "room": "101", "amount_fen": 300}, tok
    )
    live.call("POST", "/v1/app/report-loss", token=tok)
    live.call("POST", "/v1/app/unlock", token=tok)
    bills = live.call("GET", "/v1/app/bills", token=tok).json()["items"]
    flow = live.call("GET", "/v1/app/flow", token=tok).json()["items"]
    assert [(b["kind"], b["amount_fen"]) for b in bills] == [
        ("electricity", -300),
        ("sale", -700),
        ("topup", 3000),
    ]
    assert {b["kind"] for b in bills} <= set(rules.BILL_KINDS)
    money = [f for f in flow if f["amount_fen"] is not None]
    assert [f["id"] for f in money] == [b["id"] for b in bills]
    ops = [f["kind"] for f in flow if f["amount_fen"] is None]
    assert ops == ["restore", "lost", "card_issue", "open"]


def test_r9_paging_and_date_filters(live: Live) -> None:
    """R9 with paging (cursor) and campus-day filters."""
    card = live.add_account("S8", 18)
    for i in range(5):
        live.admin(
            "POST", "/v1/admin/accounts/S8/topups", {"amount_fen": 100 + i, "channel": "cash"}
        )
    tok = live.login("S8", card["password"])
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = live.call("GET", "/v1/app/bills", token=tok, params=params).json()
        seen += [b["amount_fen"] for b in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [104, 103, 102, 101, 100]
    today = live.ctx.today()
    assert (
        len(
            live.call("GET", "/v1/app/bills", token=tok, params={"from_date": today}).json()[
                "items"
            ]
        )
        == 5
    )
    assert (
        live.call("GET", "/v1/app/bills", token=tok, params={"to_date": "2000-01-01"}).json()[
            "items"
        ]
        == []
    )
    bad = live.call("GET", "/v1/app/bills", token=tok, params={"cursor": "garbage"})
    # a cursor is opaque: one the server did not hand out is a bad request (issue 10 item 18)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_cursor"


def test_r15_electricity_transfer_to_a_registered_room(live: Live) -> None:
    """R15: building -> room -> amount -> confirm; the room's account receives the money."""
    card = live.add_account("S9", 19, topup_fen=1000)
    tok = live.login("S9", card["password"])
    live.admin(
        "POST",
        "/v1/admin/electricity/buildings",
        {"code": "B2", "name": "二号", "rooms": ["201", "202"]},
    )
    assert live.call("GET", "/v1/app/electricity/buildings/B2", token=tok).json()["rooms"] == [
        "201",
        "202",
    ]
    body = {"building": "B2", "room": "201", "amount_fen": 400}
    out = live.call("POST", "/v1/app/electricity", body, tok).json()
    assert out["balance_fen"] == 600
    assert live.admin("GET", "/v1/admin/electricity/buildings/B2/rooms/201")["balance_fen"] == 400
    nope = live.call("POST", "/v1/app/electricity", {**body, "room": "999"}, tok)
    assert nope.status_code == 404 and nope.json()["error"]["code"] == "no_room"
    poor = live.call("POST", "/v1/app/electricity", {**body, "amount_fen": 700}, tok)
    assert poor.status_code == 409 and poor.json()["error"]["code"] == "insufficient"
    live.admin("POST", "/v1/admin/accounts/S9/status", {"action": "freeze"})
    frozen = live.call("POST", "/v1/app/electricity", body, tok)
    assert frozen.status_code == 409 and frozen.json()["error"]["code"] == "bad_status"


def test_r17_found_card_registered_by_a_finder_looked_up_by_the_owner(live: Live) -> None:
    """R17: the finder registers; the owner looks it up only after reporting the loss."""
    owner = live.add_account("S10", 20)
    finder = live.add_account("S11", 21)
    ftok = live.login("S11", finder["password"])
    otok = live.login("S10", owner["password"])
    reg = live.call(
        "POST", "/v1/app/found-cards", {"card_no": owner["card_no"], "place": "图书馆服务台"}, ftok
    )
    assert reg.status_code == 200 and "S10" not in reg.text  # the finder learns nothing
    early = live.call("GET", "/v1/app/found-cards", token=otok)
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_reported_lost"
    live.call("POST", "/v1/app/report-loss", token=otok)
    found = live.call("GET", "/v1/app/found-cards", token=otok).json()["found"]
    assert [(f["card_no"], f["place"]) for f in found] == [(owner["card_no"], "图书馆服务台")]
    unknown = live.call("POST", "/v1/app/found-cards", {"card_no": "42", "place": "x"}, ftok)
    assert unknown.status_code == 404


@pytest.mark.parametrize("kind", ["consumer", "temporary"])
def test_r16_consumer_and_temporary_cards_sign_in_by_card_number(live: Live, kind: str) -> None:
    """R16: everyone but students and staff signs in with the card number."""
    card = live.add_account(f"X-{kind}", 22 if kind == "consumer" else 23, kind=kind)
    assert me(live, live.login(card["card_no"], card["password"]))["type"] == kind


def test_r8_card_payments_move_the_transition_balance_qr_payments_do_not(live: Live) -> None:
    """R8 payment methods: card, QR forward scan, QR reverse scan; R7: only a *card*
    transaction moves the transition balance in.  Online authorization here is by card (the
    phone codes are issue 4's)."""
    assert rules.moves_transition("card")
    assert not rules.moves_transition("qr-forward") and not rules.moves_transition("qr-reverse")
    card = live.add_account("S12", 24)
    pos = live.terminal("pos")
    body = {"seq": 1, "card_no": card["card_no"], "amount_fen": 100, "method": "qr-forward"}
    r = live.call("POST", "/v1/pos/authorize", body)
    assert r.status_code == 401  # unsigned
    with pytest.raises(Exception, match="422"):
        pos.authorize(body)
