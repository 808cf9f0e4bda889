"""Who may call what: no card holder sees or changes another's account; a POS terminal cannot
call desk or kiosk operations; sessions, staff tokens and terminal signatures do not mix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from sync.clock import SystemClock
from sync.errors import AuthError, ProtocolError, ServerRefused
from sync.records import KINDS, METHODS
from sync.server import ingest, roles
from sync.server.api_auth import ApiAuth
from sync.server.app import create_app
from sync.server.errors import Forbidden
from tests.handterm import HandTerminal
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


# -- terminals: the role table (sync/server/roles.py), every cell --------------------------------
def _terminal_routes(app: Any) -> set[str]:
    """The app's routes that take a signed terminal request."""

    def deps(d: Any) -> Iterator[Any]:
        for sub in d.dependencies:
            yield sub.call
            yield from deps(sub)

    def api_routes(routes: Any) -> Iterator[APIRoute]:
        for r in routes:
            if isinstance(r, APIRoute):
                yield r
            else:  # an included router
                yield from api_routes(getattr(getattr(r, "original_router", r), "routes", []))

    return {
        f"{method} {route.path}"
        for route in api_routes(app.routes)
        if any(getattr(c, "__func__", None) is ApiAuth.terminal for c in deps(route.dependant))
        for method in route.methods
    }


def test_the_role_table_names_every_terminal_route(live: Live) -> None:
    assert _terminal_routes(create_app(live.ctx)) == set(roles.ENDPOINTS)
    assert set(roles.RECORDS) == set(roles.ROLES)
    for allowed in roles.RECORDS.values():
        assert {k for k, _ in allowed} <= KINDS and {m for _, m in allowed} <= METHODS


@pytest.mark.parametrize("role", roles.ROLES)
def test_each_terminal_route_answers_only_the_roles_of_the_table(live: Live, role: str) -> None:
    """Issue 10 items 11 and 13: every (role, terminal route) cell; a request the table does
    not allow is refused before anything else (403 wrong_role), one it allows gets past the
    role check (an empty body then fails validation, with nothing done)."""
    t = live.terminal(role, f"cell-{role}")
    for endpoint in sorted(roles.ENDPOINTS):
        method, path = endpoint.split(" ", 1)
        path = _concrete(path)
        try:
            t.request(method, path, body={} if method == "POST" else None)
            got = (200, "ok")
        except (ServerRefused, AuthError) as exc:
            got = (exc.status, str(exc.code))
        if roles.may_call(role, endpoint):
            assert got[1] != "wrong_role", (role, endpoint, got)
        else:
            assert got == (403, "wrong_role"), (role, endpoint, got)


@pytest.mark.parametrize("role", roles.ROLES)
def test_ingest_takes_from_each_role_only_the_records_it_writes(live: Live, role: str) -> None:
    """Every (role, record kind, method) cell, at ingest itself (a kiosk or gate does not get
    to ``POST /v1/journal`` at all): a record a role does not write is refused with the whole
    batch, raised as an alarm, and moves no money."""
    acct = live.add_account("R1", 81, topup_fen=10_000)
    aid = int(live.admin("GET", "/v1/admin/accounts/R1")["id"])
    term = HandTerminal.enroll(live, f"rec-{role}", role=role)
    row = dict(live.ctx.db.one("SELECT * FROM terminals WHERE id = ?", (term.terminal_id,)))
    built = allowed = 0
    for kind in sorted(KINDS):
        for method in sorted(METHODS):
            pin = "fail" if kind == "pin_fail" else "none"
            # a refund names an earlier record of the terminal (record 1: not a sale, so the
            # refund moves nothing)
            extra = {"x": {"refund": {"seq": 1, "sup": "S0"}}} if kind == "refund" else {}
            try:
                wire = term.record(aid, 100, kind=kind, method=method, pin=pin, **extra)
            except ProtocolError:  # not a record at all (a void of a card sale): no cell
                continue
            built += 1
            if roles.may_write(role, kind, method):
                allowed += 1
                assert ingest.ingest(live.ctx, row, [wire]).ack == len(term.journal)
                continue
            with pytest.raises(Forbidden) as err:
                ingest.ingest(live.ctx, row, [wire])
            assert err.value.code == "record_not_allowed", (role, kind, method)
            term.journal.pop()  # never applied: the chain goes on from the previous record
    alarms = [
        a for a in live.admin("GET", "/v1/admin/alarms")["alarms"] if a["kind"] != "reverse_unpaid"
    ]
    assert allowed == len(roles.RECORDS[role])  # every cell a role writes was tried
    refused = built - allowed
    assert sum(a["kind"] == "record_not_allowed" for a in alarms) == refused
    sales = sum(1 for k, m in roles.RECORDS[role] if k == "sale" and m != "qr-reverse")
    assert live.admin("GET", "/v1/admin/accounts/R1")["balance_fen"] == 10_000 - 100 * sales
    assert acct["number"] == "R1"


def test_a_kiosk_push_is_refused_before_the_records_are_read(live: Live) -> None:
    acct = live.add_account("R2", 82, topup_fen=10_000)
    k = HandTerminal.enroll(live, "push-kiosk", role="kiosk")
    with pytest.raises(AuthError) as err:
        k.push([k.record(int(acct["account_id"]), 4000)])
    assert (err.value.status, err.value.code) == (403, "wrong_role")
    assert live.admin("GET", "/v1/admin/accounts/R2")["balance_fen"] == 10_000


def test_only_an_enrolled_gate_verifies_codes(live: Live) -> None:
    """Issue 10 item 13: `/v1/codes/verify` answers who a code belongs to and uses it up: an
    unsigned request is refused (nothing is read or used up), as is any other role."""
    r = live.call("POST", "/v1/codes/verify", {"text": "x" * 40})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unsigned")
    gate = live.terminal("gate", "gate-1")
    out = gate.request("POST", "/v1/codes/verify", body={"text": "x" * 40})
    assert out["valid"] is False
