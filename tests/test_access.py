"""Who may call what: no card holder sees or changes another's account; a POS terminal cannot
call desk or kiosk operations; sessions, staff tokens and terminal signatures do not mix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sync.clock import SystemClock
from sync.errors import ServerRefused
from tests.live import Live, Pos, proof
from tests.paygate_helpers import open_gate, register, topped_up


def _concrete(path: str) -> str:
    return (
        path.replace("{number}", "A1")
        .replace("{terminal_id}", "T00001")
        .replace("{found_id}", "1")
        .replace("{name}", "nobody")
        .replace("{building}", "H7")
        .replace("{room}", "101")
        .replace("{order_id}", "order-0001")
        .replace("{channel}", "wechat")
    )


def _ops(live: Live, prefix: str) -> list[tuple[str, str]]:
    spec = live.call("GET", "/openapi.json").json()
    return [
        (m.upper(), _concrete(p))
        for p, ops in spec["paths"].items()
        if p.startswith(prefix)
        for m in ops
    ]


@pytest.fixture
def two(live: Live, tmp_path: Path) -> dict[str, Any]:
    a = live.add_account("A1", 71, topup_fen=1000)
    b = live.add_account("B1", 72, topup_fen=9999)
    live.admin(
        "POST", "/v1/admin/electricity/buildings", {"code": "H7", "name": "一号", "rooms": ["101"]}
    )
    gate = open_gate(tmp_path / "gate", SystemClock())
    try:
        register(live, gate, "wechat")
        b["order"] = topped_up(live, gate, "B1", b["password"], "wechat", 4242)["order_id"]
    finally:
        gate.stop()
    return {
        "a": a,
        "b": b,
        "ta": live.login("A1", a["password"]),
        "tb": live.login("B1", b["password"]),
    }


def test_a_holder_sees_only_their_own_account(live: Live, two: dict[str, Any]) -> None:
    """Every /v1/app read with A's session shows A's account and nothing of B's."""
    b_marks = ("B1", "9999", "4242", two["b"]["card_no"], "测试72")
    for method, path in _ops(live, "/v1/app/"):
        if method != "GET" or "sso" in path:
            continue
        if path.startswith("/v1/app/topups/"):  # B's own top-up order, asked for by A
            path = path.replace("order-0001", two["b"]["order"])
            assert live.call("GET", path, token=two["ta"]).status_code == 404
        r = live.call("GET", path, token=two["ta"], params={"number": "B1", "account_id": 2})
        for mark in b_marks:
            assert mark not in r.text, (path, mark)
    me = live.call("GET", "/v1/app/me", token=two["ta"]).json()
    assert me["number"] == "A1" and me["balance_fen"] == 1000


def test_a_holder_cannot_change_another_account(live: Live, two: dict[str, Any]) -> None:
    """No app request names an account: extra fields are refused, and every change applies to
    the session's own account."""
    smuggled = live.call(
        "POST",
        "/v1/app/password",
        {"old_password": two["a"]["password"], "new_password": "111111", "number": "B1"},
        two["ta"],
    )
    assert smuggled.status_code == 422
    live.call("POST", "/v1/app/report-loss", token=two["ta"])
    live.call(
        "POST",
        "/v1/app/electricity",
        {"building": "H7", "room": "101", "amount_fen": 100},
        two["ta"],
    )
    b = live.admin("GET", "/v1/admin/accounts/B1")
    assert b["status"] == "normal" and b["balance_fen"] == 9999 + 4242
    a = live.admin("GET", "/v1/admin/accounts/A1")
    assert a["status"] == "lost" and a["balance_fen"] == 900
    # B's found card shows to B only, even when A asks after reporting A's own loss
    live.call(
        "POST", "/v1/app/found-cards", {"card_no": two["b"]["card_no"], "place": "门口"}, two["ta"]
    )
    assert live.call("GET", "/v1/app/found-cards", token=two["ta"]).json()["found"] == []


def test_tokens_do_not_cross_over(live: Live, two: dict[str, Any]) -> None:
    """A holder session is no staff token; the staff token is no holder session."""
    for method, path in _ops(live, "/v1/admin/"):
        r = live.call(method, path, {} if method != "GET" else None, two["ta"])
        assert r.status_code == 401 and r.json()["error"]["code"] == "bad_admin_token", path
    assert live.call("GET", "/v1/app/me", token=live.token).status_code == 401


def test_a_pos_terminal_cannot_call_desk_or_kiosk_operations(
    live: Live, two: dict[str, Any]
) -> None:
    pos = live.terminal("pos")
    for method, path in _ops(live, "/v1/admin/"):
        with pytest.raises(ServerRefused) as err:
            pos.request(method, path, body={} if method != "GET" else None)
        assert err.value.status == 401, path
    for method, path in _ops(live, "/v1/kiosk/"):
        with pytest.raises(ServerRefused) as err:
            pos.request(method, path, body={"card": proof(two["a"])})
        assert (err.value.status, err.value.code) == (403, "wrong_role"), path
    # and the POS still sells: the refusals did not break it
    assert Pos(pos).sell(two["a"], 100)["approved"]


def test_a_revoked_kiosk_cannot_act_even_with_the_proof(live: Live, two: dict[str, Any]) -> None:
    k = live.terminal("kiosk")
    k.request("POST", "/v1/kiosk/card", body={"card": proof(two["a"])})
    live.admin("POST", f"/v1/admin/terminals/{k.terminal_id}/revoke")
    with pytest.raises(ServerRefused) as err:
        k.request("POST", "/v1/kiosk/card", body={"card": proof(two["a"])})
    assert err.value.code == "terminal_revoked"


def test_audit_log_never_keeps_secrets(live: Live, two: dict[str, Any]) -> None:
    live.admin("POST", "/v1/admin/staff", {"name": "dave", "role": "desk"})
    text = json.dumps(live.admin("GET", "/v1/admin/audit?limit=200"))
    assert two["a"]["id_card"] not in text
    assert "token" not in text or '"token": "***"' in text
