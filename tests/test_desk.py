"""The service desk (issue 5 part 3): staff roles, the audit log, reissue of any card type
(R11), freeze (R12), extension (R13), cancellation (R14), cash top-up (R7), refunds, roster
import (R1, R3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sync.clock import SystemClock
from sync.rules import AccountStatus
from tests.helpers import id_card
from tests.live import Live, Pos
from tests.paygate_helpers import open_gate, register, topped_up


def staff_token(live: Live, name: str, role: str) -> str:
    return str(live.admin("POST", "/v1/admin/staff", {"name": name, "role": role})["token"])


def sold(live: Live, number: str, n: int, *, topup_fen: int, amount_fen: int) -> dict[str, Any]:
    """A new account whose card paid ``amount_fen`` at a POS: the sale's bill (``id``: the
    transfer a refund names)."""
    card = live.add_account(number, n, topup_fen=topup_fen)
    Pos(live.terminal("pos")).sell(card, amount_fen)
    bills = live.admin("GET", f"/v1/admin/accounts/{number}")["bills"]
    return next(b for b in bills if b["kind"] == "sale")


def test_staff_roles_limit_what_each_may_do_and_everything_is_audited(live: Live) -> None:
    live.add_account("D1", 51)
    desk = staff_token(live, "alice", "desk")
    auditor = staff_token(live, "bob", "auditor")
    finance = staff_token(live, "carol", "finance")
    # R7: cash is a desk operation of the finance role (issue 10 item 1)
    ok = live.call(
        "POST", "/v1/admin/accounts/D1/topups", {"amount_fen": 500, "channel": "cash"}, finance
    )
    assert ok.status_code == 200
    no = live.call(
        "POST", "/v1/admin/accounts/D1/topups", {"amount_fen": 500, "channel": "cash"}, desk
    )
    assert no.status_code == 403 and no.json()["error"]["code"] == "not_permitted"
    # no staff role credits a payment provider's channel by hand: an order paid at it does
    ali = live.call(
        "POST", "/v1/admin/accounts/D1/topups", {"amount_fen": 500, "channel": "alipay"}, finance
    )
    assert (
        ali.status_code == 422 and live.admin("GET", "/v1/admin/accounts/D1")["balance_fen"] == 500
    )
    assert (
        live.call("POST", "/v1/admin/staff", {"name": "eve", "role": "superuser"}, desk).status_code
        == 403
    )
    assert live.call("GET", "/v1/admin/accounts/D1", token=auditor).status_code == 200
    assert (
        live.call("POST", "/v1/admin/accounts/D1/status", {"action": "freeze"}, auditor).status_code
        == 403
    )
    assert live.call("GET", "/v1/admin/audit", token=desk).status_code == 403
    entries = live.call("GET", "/v1/admin/audit", token=auditor, params={"limit": 200}).json()[
        "entries"
    ]
    mine = [
        (e["actor"], e["action"], e["target"], e["outcome"])
        for e in entries
        if e["actor"] in ("alice", "bob", "carol")
    ]
    assert ("carol", "topup", "D1", "ok") in mine
    assert ("alice", "topup", "D1", "denied: not_permitted") in mine
    assert ("alice", "staff_add", "", "denied: not_permitted") in mine
    assert ("bob", "show_account", "D1", "ok") in mine
    assert ("bob", "change_status", "D1", "denied: not_permitted") in mine
    detail = next(e["detail"] for e in entries if e["action"] == "topup" and e["outcome"] == "ok")
    assert json.loads(detail) == {"amount_fen": 500, "channel": "cash"}
    live.admin("POST", "/v1/admin/staff/alice/disable")
    gone = live.call("GET", "/v1/admin/accounts/D1", token=desk)
    assert gone.status_code == 403 and gone.json()["error"]["code"] == "staff_disabled"


def test_every_desk_route_is_audited(live: Live) -> None:
    """Every route under /v1/admin writes the audit log, even a refused one."""
    spec = live.call("GET", "/openapi.json").json()
    admin_ops = [
        (m.upper(), p)
        for p, ops in spec["paths"].items()
        if p.startswith("/v1/admin/")
        for m in ops
    ]
    desk = staff_token(live, "carol", "auditor")
    for method, path in admin_ops:
        concrete = (
            path.replace("{number}", "NOPE")
            .replace("{terminal_id}", "T99999")
            .replace("{found_id}", "1")
            .replace("{name}", "nobody")
            .replace("{building}", "B9")
            .replace("{room}", "101")
        )
        live.call(method, concrete, {} if method != "GET" else None, desk)
    after = live.admin("GET", "/v1/admin/audit?limit=200")["entries"]
    carol = [e for e in after if e["actor"] == "carol"]
    assert len(carol) == len(admin_ops), sorted({e["action"] for e in carol})


def test_r11_desk_reissues_any_card_type(live: Live) -> None:
    card = live.add_account("D2", 52, kind="consumer", topup_fen=3000)
    out = live.admin("POST", "/v1/admin/accounts/D2/reissue", {"uid": "11223344"})
    assert out["status"] == "done" and out["card"]["generation"] == 2
    assert out["balance_fen"] == 3000 - live.ctx.policy()["reissue_fee_fen"]
    assert "replaced" in Pos(live.terminal("pos")).sell(card, 100)["reason"]
    free = live.admin("POST", "/v1/admin/accounts/D2/reissue", {"charge_fee": False})
    assert free["fee_fen"] == 0 and free["card"]["generation"] == 3


def test_r12_desk_freezes_and_unfreezes(live: Live) -> None:
    card = live.add_account("D3", 53, topup_fen=1000)
    pos = Pos(live.terminal("pos"))
    live.admin("POST", "/v1/admin/accounts/D3/status", {"action": "freeze"})
    assert "frozen" in pos.sell(card, 100)["reason"]
    live.admin("POST", "/v1/admin/accounts/D3/status", {"action": "unfreeze"})
    assert pos.sell(card, 100)["approved"]


def test_r13_extension_revives_an_expired_card_and_the_virtual_card_follows(live: Live) -> None:
    card = live.add_account("D4", 54, topup_fen=1000)
    live.admin("POST", "/v1/admin/accounts/D4/extend", {"expires": live.ctx.today()})
    with live.ctx.db.tx() as tx:  # a card that ran out (as the system would mark it)
        tx.execute(
            "UPDATE accounts SET status = 'expired', expires = '2020-06-30' WHERE number = 'D4'"
        )
    pos = Pos(live.terminal("pos"))
    assert "expired" in pos.sell(card, 100)["reason"]
    past = live.call("POST", "/v1/admin/accounts/D4/extend", {"expires": "2020-07-01"}, live.token)
    assert past.status_code == 422
    out = live.admin("POST", "/v1/admin/accounts/D4/extend", {"expires": "2030-06-30"})
    assert out["status"] == AccountStatus.NORMAL and out["virtual_card_expires"] == "2030-06-30"
    tok = live.login("D4", card["password"])
    assert live.call("GET", "/v1/app/me", token=tok).json()["virtual_card_expires"] == "2030-06-30"
    assert pos.sell(card, 100)["approved"]


def test_r14_cancellation_pays_out_the_balance_and_ends_everything(
    live: Live, tmp_path: Path
) -> None:
    """R14: the balance (with the transition balance) is paid out in cash; card, app and phone
    stop; the ledger still balances."""
    card = live.add_account("D5", 55, topup_fen=1500)
    gate = open_gate(tmp_path / "gate", SystemClock())
    try:
        register(live, gate, "alipay")
        topped_up(live, gate, "D5", card["password"], "alipay", 700)  # R7: transition balance
    finally:
        gate.stop()
    tok = live.login("D5", card["password"])
    out = live.admin("POST", "/v1/admin/accounts/D5/cancel")
    assert (out["status"], out["paid_out_fen"], out["balance_fen"], out["transition_fen"]) == (
        "cancelled",
        2200,
        0,
        0,
    )
    assert live.call("GET", "/v1/app/me", token=tok).status_code == 401  # session revoked
    login = live.call("POST", "/v1/app/login", {"number": "D5", "password": card["password"]})
    assert login.status_code == 403 and login.json()["error"]["code"] == "cancelled"
    assert "cancelled" in Pos(live.terminal("pos")).sell(card, 100)["reason"]
    assert live.call("POST", "/v1/admin/accounts/D5/cancel", None, live.token).status_code == 409
    assert live.admin("GET", "/v1/admin/ledger/check")["ok"]


def test_r14_r12_offline_overdraft_freezes_and_is_settled_before_cancellation(live: Live) -> None:
    """R12: a negative balance after offline purchases freezes the account (rule on by
    default); R14: the desk cannot cancel until the debt is settled by a cash top-up."""
    card = live.add_account("D6", 56, topup_fen=200)
    Pos(live.terminal("pos")).offline_sale(card, card["account_id"], 500)
    acct = live.admin("GET", "/v1/admin/accounts/D6")
    assert (acct["balance_fen"], acct["status"]) == (-300, "frozen")
    r = live.call("POST", "/v1/admin/accounts/D6/cancel", None, live.token)
    assert r.status_code == 409 and r.json()["error"]["code"] == "negative_balance"
    live.admin("POST", "/v1/admin/accounts/D6/topups", {"amount_fen": 300, "channel": "cash"})
    assert live.admin("POST", "/v1/admin/accounts/D6/cancel")["paid_out_fen"] == 0
    assert live.admin("GET", "/v1/admin/ledger/check")["ok"]


def test_refunds_are_correcting_transfers_never_more_than_the_original(live: Live) -> None:
    sale = sold(live, "D7", 57, topup_fen=5000, amount_fen=1200)
    refund = {
        "transfer_id": sale["id"],
        "amount_fen": 200,
        "reason": "cold soup",
        "request_id": "rf-000001",
    }
    part = live.admin("POST", "/v1/admin/refunds", refund)
    assert (part["amount_fen"], part["balance_fen"]) == (200, 4000)
    same = live.admin("POST", "/v1/admin/refunds", refund)  # the same request again
    assert same["applied"] is False and same["balance_fen"] == 4000
    over = live.call(
        "POST",
        "/v1/admin/refunds",
        {"transfer_id": sale["id"], "amount_fen": 1001, "reason": "x"},
        live.token,
    )
    assert over.status_code == 409 and over.json()["error"]["code"] == "over_refund"
    rest = live.admin("POST", "/v1/admin/refunds", {"transfer_id": sale["id"], "reason": "all"})
    assert rest["amount_fen"] == 1000 and rest["balance_fen"] == 5000
    bills = live.admin("GET", "/v1/admin/accounts/D7")["bills"]
    assert [b["kind"] for b in bills] == ["topup", "sale", "refund", "refund"]
    assert live.admin("GET", "/v1/admin/ledger/check")["ok"]


def test_r14_no_refund_goes_back_into_a_cancelled_account(live: Live) -> None:
    """R14: after cancellation the balance was paid out; a later refund cannot land in it."""
    sale = sold(live, "D8", 58, topup_fen=3000, amount_fen=1000)
    assert live.admin("POST", "/v1/admin/accounts/D8/cancel")["paid_out_fen"] == 2000
    r = live.call(
        "POST", "/v1/admin/refunds", {"transfer_id": sale["id"], "reason": "late"}, live.token
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "bad_status"
    acct = live.admin("GET", "/v1/admin/accounts/D8")
    assert (acct["balance_fen"], acct["status"]) == (0, "cancelled")
    assert live.admin("GET", "/v1/admin/ledger/check")["ok"]


def test_r1_r3_roster_import_for_a_new_intake(live: Live) -> None:
    """R1 card types, R3 initial passwords; bad lines reported, good ones added."""
    rows = [
        "number,name,type,id_card,limit,expires",
        f"S2024001,新生一,student,{id_card(61)},,2028-07-01",
        f"S2024002,新生二,student,{id_card(62)},80.00,",
        f"T2024003,临时,temporary,{id_card(63)},,",
        "S2024004,坏号码,student,510102200401010021,,",
        f"S2024005,坏类型,alien,{id_card(65)},,",
        f"S2024001,重复,student,{id_card(66)},,",
    ]
    r = live.call("POST", "/v1/admin/roster", {"csv": "\n".join(rows)}, live.token).json()
    assert r["added"] == 3 and [e["line"] for e in r["errors"]] == [5, 6, 7]
    assert live.admin("GET", "/v1/admin/accounts/S2024002")["limit_fen"] == 8000
    from tests.live import initial_pw

    live.login("S2024001", initial_pw(61))
