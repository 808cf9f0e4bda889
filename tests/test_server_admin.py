"""The admin API on the real server: every error is ``{"error": {"code", "message"}}`` with the
right status, nothing is written by a refused request, and the roster import reports bad lines
without writing them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.handterm import HandTerminal, admin_raw, error_of, fresh_account, ledger_ok
from tests.helpers import ServerProc, id_card

N = iter(range(500, 1000))  # id_card() numbers of this module's accounts


def account_body(**kw: Any) -> dict[str, Any]:
    n = next(N)
    return {"number": f"A{n}", "name": "李四", "type": "student", "id_card": id_card(n), **kw}


def refused(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = error_of(resp)
    assert err["code"] == code, err
    return err


def exists(server: ServerProc, number: str) -> bool:
    return admin_raw(server, "GET", f"/v1/admin/accounts/{number}").status_code == 200


# --- accounts ---------------------------------------------------------------------------------
def test_add_and_show_account(module_server: ServerProc) -> None:
    body = account_body(type="staff", limit_fen=8000, expires="2030-06-30")
    resp = admin_raw(module_server, "POST", "/v1/admin/accounts", body)
    assert resp.status_code == 201, resp.text
    shown = resp.json()
    assert (shown["number"], shown["type"], shown["status"]) == (body["number"], "staff", "normal")
    assert (shown["balance_fen"], shown["transition_fen"], shown["limit_fen"]) == (0, 0, 8000)
    assert shown["expires"] == "2030-06-30" and shown["pin_tries"] == 0
    full = module_server.account(body["number"])
    assert full["bills"] == [] and [f["kind"] for f in full["flow"]] == ["open"]
    assert "id_card" not in full and not any("scrypt" in str(v) for v in full.values())


def test_default_limit_is_r6_fifty_yuan(module_server: ServerProc) -> None:
    resp = admin_raw(module_server, "POST", "/v1/admin/accounts", account_body())
    assert resp.json()["limit_fen"] == 5000


def test_bad_json(module_server: ServerProc) -> None:
    for raw in (b"{", b"", b"not json", b"\xff\xfe", b"[" * 50_000, b'{"number": "\\ud800"}'):
        resp = admin_raw(module_server, "POST", "/v1/admin/accounts", data=raw)
        refused(resp, 422, "invalid")


@pytest.mark.parametrize("missing", ["number", "name", "type", "id_card"])
def test_missing_fields(module_server: ServerProc, missing: str) -> None:
    body = account_body()
    del body[missing]
    err = refused(admin_raw(module_server, "POST", "/v1/admin/accounts", body), 422, "invalid")
    assert missing in err["message"]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"number": 2023001}, "invalid"),
        ({"name": ["a"]}, "invalid"),
        ({"type": "teacher"}, "invalid"),
        ({"limit_fen": "50.00"}, "invalid"),
        ({"limit_fen": True}, "invalid"),
        ({"limit_fen": 12.5}, "invalid"),
        ({"limit_fen": 0}, "invalid"),
        ({"limit_fen": -100}, "invalid"),
        ({"limit_fen": 10**20}, "invalid"),
        ({"expires": "2030/01/01"}, "invalid"),
        ({"expires": "2030-02-30"}, "bad_date"),
        ({"expires": "2030-13-01"}, "bad_date"),
        ({"nickname": "x"}, "invalid"),
        ({"number": "S 2023"}, "bad_number"),
        ({"number": "学号1"}, "bad_number"),
        ({"name": "   "}, "bad_name"),
        ({"id_card": "510102199901013051"}, "bad_id_card"),  # GB 11643 check digit
        ({"id_card": "510*****9901013052"}, "bad_id_card"),  # masked
        ({"id_card": "51010219990101305"}, "bad_id_card"),
    ],
)
def test_bad_account_fields(module_server: ServerProc, change: dict[str, Any], code: str) -> None:
    body = account_body()
    body.update(change)
    resp = admin_raw(module_server, "POST", "/v1/admin/accounts", body)
    refused(resp, 422, code)
    if isinstance(body["number"], str) and body["number"].isalnum():
        assert not exists(module_server, body["number"])


def test_id_card_is_normalized(module_server: ServerProc) -> None:
    """R3: lowercase x and spaces are read as the same number; the password follows from it."""
    n = next(N)
    number = id_card(n)
    spaced = f"{number[:6]} {number[6:14]} {number[14:].lower()}"
    resp = admin_raw(
        module_server,
        "POST",
        "/v1/admin/accounts",
        {"number": f"A{n}", "name": "x", "type": "student", "id_card": spaced},
    )
    assert resp.status_code == 201, resp.text


def test_duplicate_number(module_server: ServerProc) -> None:
    body = account_body()
    assert admin_raw(module_server, "POST", "/v1/admin/accounts", body).status_code == 201
    again = {**account_body(), "number": body["number"]}
    refused(admin_raw(module_server, "POST", "/v1/admin/accounts", again), 409, "duplicate")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/admin/accounts/NOPE", None),
        ("POST", "/v1/admin/accounts/NOPE/status", {"action": "report-loss"}),
        ("POST", "/v1/admin/accounts/NOPE/pin-reset", None),
        ("POST", "/v1/admin/accounts/NOPE/cards", {}),
        ("POST", "/v1/admin/accounts/NOPE/topups", {"amount_fen": 100, "channel": "cash"}),
    ],
)
def test_unknown_account(module_server: ServerProc, method: str, path: str, body: Any) -> None:
    refused(admin_raw(module_server, method, path, body), 404, "no_account")


def test_malformed_account_number_in_the_path(module_server: ServerProc) -> None:
    """A number no account can have is refused as malformed, before any lookup."""
    refused(
        admin_raw(module_server, "GET", "/v1/admin/accounts/%E5%BC%A0%E4%B8%89"), 422, "bad_number"
    )


def test_unknown_route_and_method_keep_the_error_shape(module_server: ServerProc) -> None:
    refused(admin_raw(module_server, "GET", "/v1/nothing"), 404, "not_found")
    refused(admin_raw(module_server, "DELETE", "/v1/admin/policy"), 405, "method_not_allowed")


def test_status_transitions(module_server: ServerProc) -> None:
    """R10 loss/unlock and R12 freeze/unfreeze move only from the states they undo."""
    acct = fresh_account(module_server)
    path = f"/v1/admin/accounts/{acct['number']}/status"

    def act(action: str) -> Any:
        return admin_raw(module_server, "POST", path, {"action": action})

    refused(act("unlock"), 409, "bad_status")
    refused(act("unfreeze"), 409, "bad_status")
    assert act("report-loss").json()["status"] == "lost"
    refused(act("report-loss"), 409, "bad_status")
    assert act("unlock").json()["status"] == "normal"
    assert act("freeze").json()["status"] == "frozen"
    refused(act("report-loss"), 409, "bad_status")
    assert act("unfreeze").json()["status"] == "normal"
    refused(act("cancel"), 422, "invalid")
    kinds = [f["kind"] for f in module_server.account(acct["number"])["flow"]]
    assert kinds.count("lost") == 1 and kinds.count("frozen") == 1 and kinds.count("restore") == 2


# --- cards --------------------------------------------------------------------------------------
def test_card_uid_checks(module_server: ServerProc) -> None:
    acct = fresh_account(module_server)
    path = f"/v1/admin/accounts/{acct['number']}/cards"
    for uid in ("XYZ", "0A1B2C", "0A1B2C3D4E", ""):
        refused(admin_raw(module_server, "POST", path, {"uid": uid}), 422, "bad_uid")
    other = fresh_account(module_server)
    resp = admin_raw(module_server, "POST", path, {"uid": other["uid"]})
    refused(resp, 409, "duplicate_uid")
    ok = admin_raw(module_server, "POST", path, {"uid": "04:a1:b2:c3:d4:e5:f6"})
    assert ok.status_code == 201 and ok.json()["uid"] == "04A1B2C3D4E5F6"


# --- top-ups (R7) ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "amount", [0, -1, -10_000, 10_000_001, 10**30, True, "100", 12.5, None, "¥1.00"]
)
def test_bad_topup_amounts(module_server: ServerProc, amount: Any) -> None:
    acct = fresh_account(module_server, topup_fen=1000)
    resp = admin_raw(
        module_server,
        "POST",
        f"/v1/admin/accounts/{acct['number']}/topups",
        {"amount_fen": amount, "channel": "cash"},
    )
    refused(resp, 422, "invalid")
    assert module_server.account(acct["number"])["balance_fen"] == 1000


@pytest.mark.parametrize("channel", ["app", "wechat", "alipay", "bank", "cash"])
def test_the_desk_tops_up_cash_into_the_wallet_and_nothing_else(
    module_server: ServerProc, channel: str
) -> None:
    """R7: cash at the desk goes into the wallet; money of the other channels enters only
    through an order paid at their payment provider (issue 10 item 1, tests/test_topups.py),
    never by hand."""
    acct = fresh_account(module_server)
    resp = admin_raw(
        module_server,
        "POST",
        f"/v1/admin/accounts/{acct['number']}/topups",
        {"amount_fen": 1234, "channel": channel},
    )
    if channel != "cash":
        refused(resp, 422, "invalid")
        assert module_server.account(acct["number"])["bills"] == []
        return
    assert resp.status_code == 200 and resp.json()["applied"]
    assert (resp.json()["balance_fen"], resp.json()["transition_fen"]) == (1234, 0)
    bills = module_server.account(acct["number"])["bills"]
    assert [(b["kind"], b["amount_fen"]) for b in bills] == [("topup", 1234)]


def test_r7_channels_switch_and_bank_is_off_by_default(module_server: ServerProc) -> None:
    acct = fresh_account(module_server)
    path = f"/v1/admin/accounts/{acct['number']}/topups"
    policy = admin_raw(module_server, "GET", "/v1/admin/policy").json()
    assert policy["channels"] == {
        "app": True,
        "wechat": True,
        "alipay": True,
        "bank": False,
        "cash": True,
    }
    refused(
        admin_raw(module_server, "POST", path, {"amount_fen": 100, "channel": "paypal"}),
        422,
        "invalid",
    )
    off = {"values": {"channels": {"cash": False}}}
    try:
        assert not admin_raw(module_server, "PUT", "/v1/admin/policy", off).json()["channels"][
            "cash"
        ]
        refused(
            admin_raw(module_server, "POST", path, {"amount_fen": 100, "channel": "cash"}),
            409,
            "channel_off",
        )
    finally:
        back = {"values": {"channels": {"cash": True}}}
        assert admin_raw(module_server, "PUT", "/v1/admin/policy", back).status_code == 200
    assert module_server.account(acct["number"])["balance_fen"] == 0
    resp = admin_raw(module_server, "POST", path, {"amount_fen": 100, "channel": "cash"})
    assert resp.status_code == 200 and resp.json()["balance_fen"] == 100


def test_topup_request_id_makes_a_retry_harmless(module_server: ServerProc) -> None:
    acct = fresh_account(module_server)
    path = f"/v1/admin/accounts/{acct['number']}/topups"
    body = {"amount_fen": 500, "channel": "cash", "request_id": f"desk-{acct['number']}"}
    first = admin_raw(module_server, "POST", path, body).json()
    again = admin_raw(module_server, "POST", path, body).json()
    assert (first["applied"], again["applied"]) == (True, False)
    assert again["balance_fen"] == 500
    # the same id for a different top-up is an operator error, not a silent no-op
    refused(
        admin_raw(module_server, "POST", path, {**body, "amount_fen": 600}),
        409,
        "request_id_reused",
    )
    other = fresh_account(module_server)
    refused(
        admin_raw(module_server, "POST", f"/v1/admin/accounts/{other['number']}/topups", body),
        409,
        "request_id_reused",
    )
    assert module_server.account(acct["number"])["balance_fen"] == 500
    assert module_server.account(other["number"])["balance_fen"] == 0
    refused(admin_raw(module_server, "POST", path, {**body, "request_id": "short"}), 422, "invalid")
    ledger_ok(module_server)


# --- terminals and policy -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"role": "atm", "name": "x"},
        {"role": "pos", "name": ""},
        {"role": "pos", "name": "a b"},
        {"role": "pos", "name": "Ä"},  # the OpenAPI pattern is ASCII; so is the server's check
        {"role": "pos"},
    ],
)
def test_bad_enrollment_token_requests(module_server: ServerProc, body: dict[str, Any]) -> None:
    refused(admin_raw(module_server, "POST", "/v1/admin/terminals/tokens", body), 422, "invalid")


def test_terminals_listed(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "admin-list")
    rows = admin_raw(module_server, "GET", "/v1/admin/terminals").json()["terminals"]
    row = next(t for t in rows if t["id"] == term.terminal_id)
    assert (row["name"], row["role"], row["status"], row["head_seq"]) == (
        "admin-list",
        "pos",
        "active",
        0,
    )
    assert "pubkey" not in row


# --- roster ------------------------------------------------------------------------------------
def test_roster_import_reports_bad_lines_and_writes_nothing_of_them(
    module_server: ServerProc,
) -> None:
    taken = fresh_account(module_server)["number"]
    n = [next(N) for _ in range(4)]
    wrong_check = "1" if id_card(n[1])[-1] == "0" else "0"
    csv = "\n".join(
        [
            "\ufeffnumber,name,type,id_card,limit,expires",
            f"R{n[0]},王五,student,{id_card(n[0])},80.00,2030-01-01",  # line 2: good
            f"R{n[1]},赵六,staff,{id_card(n[1])[:-1]}{wrong_check},,",  # 3: check digit
            "",  # 4: blank (skipped, still counted)
            f"R{n[2]},孙七,teacher,{id_card(n[2])},,",  # 5: card type (R1)
            f"{taken},周八,student,{id_card(n[3])},,",  # 6: exists
            f"R{n[0]},王五,student,{id_card(n[0])},,",  # 7: twice in the file
            f"R{n[3]},吴九,consumer,{id_card(n[3])},abc,",  # 8: limit
            f"R{n[3]}x,吴九,consumer,{id_card(n[3])},,2030-02-30",  # 9: date
            f"R{n[3]},郑十,temporary,{id_card(n[3]).lower()},,",  # 10: good
            "R-short,only-two-fields",  # 11
        ]
    )
    resp = admin_raw(module_server, "POST", "/v1/admin/roster", {"csv": csv})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert set(out) == {"added", "errors"}
    assert out["added"] == 2
    assert [e["line"] for e in out["errors"]] == [3, 5, 6, 7, 8, 9, 11]
    assert all(isinstance(e["error"], str) and e["error"] for e in out["errors"])
    assert "check digit" in out["errors"][0]["error"]
    good = module_server.account(f"R{n[0]}")
    assert (good["limit_fen"], good["expires"], good["type"]) == (8000, "2030-01-01", "student")
    assert module_server.account(f"R{n[3]}")["type"] == "temporary"
    assert not exists(module_server, f"R{n[1]}") and not exists(module_server, f"R{n[2]}")
    assert not exists(module_server, f"R{n[3]}x") and not exists(module_server, "R-short")
    assert module_server.account(taken)["name"] != "周八"


def test_roster_r3_passwords_work(module_server: ServerProc) -> None:
    """The imported account's consumption password is R3's, so it unlocks a sale over R6."""
    n = next(N)
    csv = f"number,name,type,id_card\nR{n},钱一,student,{id_card(n)}\n"
    assert admin_raw(module_server, "POST", "/v1/admin/roster", {"csv": csv}).json()["added"] == 1
    admin = module_server.admin()
    admin.call("POST", f"/v1/admin/accounts/R{n}/topups", {"amount_fen": 10_000, "channel": "cash"})
    card = admin.call("POST", f"/v1/admin/accounts/R{n}/cards", {})
    term = HandTerminal.enroll(module_server, "admin-roster")
    pw = id_card(n)[-7:-1] if id_card(n).endswith("X") else id_card(n)[-6:]
    assert term.authorize(1, card["card_no"], 6000, pin=pw)["approved"]


@pytest.mark.parametrize(
    ("csv", "what"),
    [
        ("", "lacks columns"),
        ("number,name,type\nA,b,student\n", "lacks columns"),
        ("name;type;id_card;number\n", "lacks columns"),
        ("number,name,type,id_card\nA1," + "x" * 200_000 + ",student,1\n", "cannot be read"),
    ],
)
def test_roster_that_cannot_be_read_is_refused_whole(
    module_server: ServerProc, csv: str, what: str
) -> None:
    err = refused(
        admin_raw(module_server, "POST", "/v1/admin/roster", {"csv": csv}), 422, "bad_roster"
    )
    assert what in err["message"]
    assert not exists(module_server, "A1")


def test_roster_body_checks(module_server: ServerProc) -> None:
    refused(admin_raw(module_server, "POST", "/v1/admin/roster", {"csv": 5}), 422, "invalid")
    refused(admin_raw(module_server, "POST", "/v1/admin/roster", {}), 422, "invalid")


def test_unfreezing_a_lost_account_keeps_the_card_lost(module_server: ServerProc) -> None:
    """R10 + R12: a card reported lost and then frozen is still lost after the unfreeze; only
    the holder's unlock restores it."""
    acct = fresh_account(module_server)
    path = f"/v1/admin/accounts/{acct['number']}/status"

    def act(action: str) -> Any:
        return admin_raw(module_server, "POST", path, {"action": action})

    assert act("report-loss").json()["status"] == "lost"
    assert act("freeze").json()["status"] == "frozen"
    assert act("unfreeze").json()["status"] == "lost"
    assert act("unlock").json()["status"] == "normal"
    assert act("freeze").json()["status"] == "frozen"
    assert act("unfreeze").json()["status"] == "normal"
