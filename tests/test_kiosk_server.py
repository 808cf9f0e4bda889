"""The server's side of the kiosk terminal (issue 11): the reissue quote (R11: nothing charged,
desk-only card types and a fee over the balance refused before anything happens), R5/R6 at the
kiosk confirmed by the current consumption password (its wrong tries counted and locked), the
phone's authentication code as the identity of a reissue (looked at by the quote, used up by
the order), and an order retried by the kiosk that opened it without asking the holder again."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from sim import wallet, wallet_codes
from sync import codes
from sync.client import ServerClient
from sync.clock import SystemClock
from sync.errors import AuthError, ServerRefused
from tests.live import Live, proof
from tests.paygate_helpers import open_gate, register, topped_up


def kcall(k: ServerClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return k.request("POST", path, body=body)


def order_id() -> str:
    return f"t{uuid.uuid4().hex}"


def test_the_quote_says_the_fee_and_charges_nothing(live: Live) -> None:
    h = live.add_account("Q1", 41, topup_fen=5000)
    k = live.terminal("kiosk")
    ident = {"number": "Q1", "id_card": h["id_card"]}
    quote = kcall(k, "/v1/kiosk/reissue/quote", ident)
    assert (quote["fee_fen"], quote["balance_fen"], quote["balance_after_fen"]) == (
        2000,
        5000,
        3000,
    )
    assert quote["type"] == "student" and quote["via"] == "number+id_card"
    after = live.admin("GET", "/v1/admin/accounts/Q1")
    assert after["balance_fen"] == 5000 and after["status"] == "normal"


@pytest.mark.parametrize(
    ("kind", "topup", "code"), [("consumer", 5000, "desk_only"), ("student", 1000, "insufficient")]
)
def test_the_quote_refuses_what_the_order_would(
    live: Live, kind: str, topup: int, code: str
) -> None:
    h = live.add_account("Q2", 42, kind, topup_fen=topup)
    k = live.terminal("kiosk")
    with pytest.raises(ServerRefused) as err:
        kcall(k, "/v1/kiosk/reissue/quote", {"number": "Q2", "id_card": h["id_card"]})
    assert err.value.code == code
    if code == "desk_only":
        assert "service desk" in err.value.message


def test_r6_at_the_kiosk_with_the_consumption_password_and_its_lock(live: Live) -> None:
    h = live.add_account("Q3", 43)
    k = live.terminal("kiosk")
    body = {"card": proof(h), "limit_fen": 8000}
    with pytest.raises(ServerRefused) as err:  # neither password, or both
        kcall(k, "/v1/kiosk/card/limit", body)
    assert err.value.code == "bad_password"
    with pytest.raises(ServerRefused) as err:
        kcall(
            k,
            "/v1/kiosk/card/limit",
            {**body, "consume_password": h["password"], "query_password": h["password"]},
        )
    assert err.value.code == "bad_password"
    ok = kcall(k, "/v1/kiosk/card/limit", {**body, "consume_password": h["password"]})
    assert ok["write"]["limit_fen"] == 8000
    for left in (2, 1, 0):
        with pytest.raises(AuthError) as wrong:
            kcall(k, "/v1/kiosk/card/limit", {**body, "consume_password": "000000"})
        assert wrong.value.code == "wrong_pin" and f"{left} tries left" in wrong.value.message
    with pytest.raises(ServerRefused) as locked:  # even the right one, now (R5)
        kcall(k, "/v1/kiosk/card/limit", {**body, "consume_password": h["password"]})
    assert locked.value.code == "pin_locked"
    assert live.admin("GET", "/v1/admin/accounts/Q3")["limit_fen"] == 8000


def test_r5_at_the_kiosk_confirmed_by_the_old_consumption_password(live: Live) -> None:
    h = live.add_account("Q4", 44)
    k = live.terminal("kiosk")
    body = {"card": proof(h), "consume_password": h["password"], "new_password": "246810"}
    out = kcall(k, "/v1/kiosk/card/consume-password", body)
    assert out["changed"] == "consume_password" and out["write"]["identity"]
    with pytest.raises(AuthError) as err:  # the old one no longer confirms
        kcall(k, "/v1/kiosk/card/consume-password", {**body, "new_password": "135791"})
    assert err.value.code == "wrong_pin"
    again = {**body, "consume_password": "246810", "new_password": "135791"}
    assert kcall(k, "/v1/kiosk/card/consume-password", again)["changed"] == "consume_password"


def test_a_reissue_by_the_apps_authentication_code(live: Live, tmp_path: Path) -> None:
    h = live.add_account("Q5", 45, topup_fen=5000)
    w = wallet.login(live.url, "Q5", h["password"])
    path = tmp_path / "w.json"
    w.save(path)
    text = str(wallet_codes.make_code(w, path, codes.Kind.AUTH)["text"])
    k = live.terminal("kiosk")
    quote = kcall(k, "/v1/kiosk/reissue/quote", {"auth_code": text})
    assert quote["number"] == "Q5" and quote["via"] == "auth_code"
    oid = order_id()
    out = kcall(k, "/v1/kiosk/reissue", {"order_id": oid, "uid": "04AA0001", "auth_code": text})
    assert out["fee_fen"] == 2000 and out["card"]["uid"] == "04AA0001"
    # the kiosk retries its own order with another blank: not identified again (the code is
    # used up), never charged again
    again = kcall(k, "/v1/kiosk/reissue", {"order_id": oid, "uid": "04AA0002"})
    assert again["card"]["uid"] == "04AA0002" and again["balance_fen"] == 3000
    with pytest.raises(AuthError) as used:  # a screenshot of the code is worth nothing now
        kcall(
            k, "/v1/kiosk/reissue", {"order_id": order_id(), "uid": "04AA0003", "auth_code": text}
        )
    assert used.value.code == "bad_auth_code"
    other = live.terminal("kiosk", "kiosk-2")  # another kiosk cannot take over the order
    with pytest.raises(ServerRefused):
        kcall(other, "/v1/kiosk/reissue", {"order_id": oid, "uid": "04AA0004"})
    assert kcall(k, f"/v1/kiosk/reissue/{oid}/done", {})["status"] == "done"
    assert live.admin("GET", "/v1/admin/accounts/Q5")["balance_fen"] == 3000


def test_r7_the_transition_balance_moves_in_at_the_kiosk_once(live: Live, tmp_path: Path) -> None:
    h = live.add_account("Q6", 46, topup_fen=1000)
    gate = open_gate(tmp_path / "gate", SystemClock(), retry_s=0.05)
    try:
        register(live, gate, "alipay")
        topped_up(live, gate, "Q6", h["password"], "alipay", 3000)  # R7: into the transition
    finally:
        gate.stop()
    k = live.terminal("kiosk")
    read = kcall(k, "/v1/kiosk/card", {"card": proof(h)})
    assert (read["balance_fen"], read["transition_fen"]) == (1000, 3000)
    assert [line["kind"] for line in read["recent"]][:1] == ["topup"]  # R9, newest first
    out = kcall(k, "/v1/kiosk/card/transition", {"card": proof(h)})
    assert (out["moved_fen"], out["balance_fen"], out["transition_fen"]) == (3000, 4000, 0)
    again = kcall(k, "/v1/kiosk/card/transition", {"card": proof(h)})
    assert (again["moved_fen"], again["balance_fen"]) == (0, 4000)
    flow = kcall(k, "/v1/kiosk/card", {"card": proof(h)})["recent"]
    assert flow[0]["kind"] == "transition" and flow[0]["amount_fen"] == 3000
    assert live.admin("GET", "/v1/admin/ledger/check")["ok"] is True
