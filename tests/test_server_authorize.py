"""Online authorization on the real server (docs/architecture.md): holds, R2 statuses, R11 replaced cards,
R13 expiry, R5/R6 consumption password and lockout, R7 transition balance."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import requests

from sync import protocol
from sync.errors import ServerRefused
from tests.handterm import HandTerminal, alarms_of, error_of, fresh_account, ledger_ok
from tests.helpers import ServerProc

BIG_LIMIT = 1_000_000  # keeps R6 out of the way in the tests about holds


@pytest.fixture
def term(module_server: ServerProc) -> HandTerminal:
    return HandTerminal.enroll(module_server, "authorize")


def next_seq(term: HandTerminal) -> int:
    return len(term.journal) + 1


def journal(term: HandTerminal, acct: dict[str, Any], resp: dict[str, Any], amt: int) -> int:
    """Journal an approved online sale the way a POS does and push it; returns the ack."""
    assert resp["approved"], resp
    term.record(
        acct["id"],
        amt,
        off=False,
        pin=resp["pin"],
        spent=resp["spent_fen"],
        lim=resp["limit_fen"],
        bal=resp["balance_fen"],
        auth=resp["auth_id"],
    )
    return int(term.push(term.wire([len(term.journal)]))["ack"])


def account(server: ServerProc, acct: dict[str, Any]) -> dict[str, Any]:
    return server.account(acct["number"])


def status(server: ServerProc, acct: dict[str, Any], action: str) -> None:
    server.admin().call("POST", f"/v1/admin/accounts/{acct['number']}/status", {"action": action})


# --- holds ------------------------------------------------------------------------------------
def test_holds_never_let_authorizations_exceed_the_balance(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=10_000, limit_fen=BIG_LIMIT)
    other = HandTerminal.enroll(module_server, "authorize-2")
    a = term.authorize(1, acct["card_no"], 6000)
    assert a["approved"] and a["balance_fen"] == 4000 and a["auth_id"] == f"{term.terminal_id}:1"
    b = other.authorize(1, acct["card_no"], 5000)  # another terminal, same account
    assert not b["approved"] and b["code"] == "insufficient" and b["balance_fen"] == 4000
    b = other.authorize(1, acct["card_no"], 4000)
    assert b["approved"] and b["balance_fen"] == 0
    assert term.authorize(2, acct["card_no"], 1)["code"] == "insufficient"
    # no money moved yet: holds are not transfers
    assert account(module_server, acct)["balance_fen"] == 10_000
    # the record's ingest charges the account and releases its hold
    assert journal(term, acct, a, 6000) == 1
    assert account(module_server, acct)["balance_fen"] == 4000
    assert term.authorize(2, acct["card_no"], 1)["code"] == "insufficient"  # 4000 still held
    assert journal(other, acct, b, 4000) == 1
    assert account(module_server, acct)["balance_fen"] == 0
    ledger_ok(module_server)


def test_ingest_releases_the_hold(module_server: ServerProc, term: HandTerminal) -> None:
    acct = fresh_account(module_server, topup_fen=10_000, limit_fen=BIG_LIMIT)
    a = term.authorize(1, acct["card_no"], 7000)
    journal(term, acct, a, 7000)
    b = term.authorize(2, acct["card_no"], 3000)
    assert b["approved"] and b["balance_fen"] == 0


def test_reauthorizing_the_same_sequence_replaces_the_hold(
    module_server: ServerProc, term: HandTerminal
) -> None:
    """A POS that crashed before journaling reuses its sequence number."""
    acct = fresh_account(module_server, topup_fen=10_000, limit_fen=BIG_LIMIT)
    assert term.authorize(1, acct["card_no"], 8000)["balance_fen"] == 2000
    again = term.authorize(1, acct["card_no"], 9000)
    assert again["approved"] and again["balance_fen"] == 1000
    assert term.authorize(2, acct["card_no"], 2000)["code"] == "insufficient"
    assert term.authorize(2, acct["card_no"], 1000)["approved"]


def test_authorizing_an_already_journaled_sequence_is_refused(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=10_000, limit_fen=BIG_LIMIT)
    journal(term, acct, term.authorize(1, acct["card_no"], 100), 100)
    with pytest.raises(ServerRefused) as err:
        term.authorize(1, acct["card_no"], 100)
    assert (err.value.status, err.value.code) == (409, "seq_used")
    assert term.authorize(2, acct["card_no"], 9900)["approved"]  # no hold was left behind


# --- credentials and statuses ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("block", "unblock", "why"),
    [("report-loss", "unlock", "lost"), ("freeze", "unfreeze", "frozen")],
)
def test_r2_blocked_account_is_declined_and_restored(
    module_server: ServerProc, term: HandTerminal, block: str, unblock: str, why: str
) -> None:
    acct = fresh_account(module_server, topup_fen=10_000)
    status(module_server, acct, block)
    out = term.authorize(1, acct["card_no"], 100)
    assert not out["approved"] and out["code"] == "declined" and why in out["reason"]
    assert out["number"] == acct["number"]
    status(module_server, acct, unblock)
    assert term.authorize(1, acct["card_no"], 100)["approved"]


def test_r13_expired_card_is_declined(module_server: ServerProc, term: HandTerminal) -> None:
    past = (dt.date.today() - dt.timedelta(days=3)).isoformat()
    acct = fresh_account(module_server, topup_fen=10_000, expires=past)
    out = term.authorize(1, acct["card_no"], 100)
    assert not out["approved"] and "expired" in out["reason"]
    future = (dt.date.today() + dt.timedelta(days=365)).isoformat()
    ok = fresh_account(module_server, topup_fen=10_000, expires=future)
    assert term.authorize(1, ok["card_no"], 100)["approved"]


def test_r11_new_card_makes_the_old_one_decline(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=10_000)
    new = module_server.admin().call("POST", f"/v1/admin/accounts/{acct['number']}/cards", {})
    assert new["generation"] == 2 and new["card_no"] != acct["card_no"]
    old = term.authorize(1, acct["card_no"], 100)
    assert not old["approved"] and "R11" in old["reason"]
    assert term.authorize(1, new["card_no"], 100, uid=new["uid"])["approved"]
    cards = account(module_server, acct)["cards"]
    assert [(c["generation"], c["status"]) for c in cards] == [(1, "replaced"), (2, "active")]


def test_uid_mismatch_and_unknown_card(module_server: ServerProc, term: HandTerminal) -> None:
    acct = fresh_account(module_server, topup_fen=10_000)
    wrong = "00000000" if acct["uid"] != "00000000" else "11111111"
    out = term.authorize(1, acct["card_no"], 100, uid=wrong)
    assert not out["approved"] and "UID" in out["reason"]
    assert term.authorize(1, acct["card_no"], 100, uid=acct["uid"].lower())["approved"]
    unknown = term.authorize(2, "99999999", 100)
    assert not unknown["approved"] and unknown["reason"] == "unknown card"


# --- R5/R6 -------------------------------------------------------------------------------------
def test_r6_over_the_limit_needs_the_password_and_wrong_ones_lock(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=20_000)
    wrong = "000000" if acct["password"] != "000000" else "111111"
    asked = term.authorize(1, acct["card_no"], 6000)
    assert (asked["approved"], asked["code"], asked["tries_left"]) == (False, "needs_pin", 3)
    for left in (2, 1):
        out = term.authorize(1, acct["card_no"], 6000, pin=wrong)
        assert (out["code"], out["tries_left"]) == ("wrong_pin", left)
        assert account(module_server, acct)["pin_tries"] == 3 - left
    out = term.authorize(1, acct["card_no"], 6000, pin=wrong)
    assert (out["code"], out["tries_left"]) == ("wrong_pin", 0) and "locked" in out["reason"]
    shown = account(module_server, acct)
    assert shown["pin_tries"] == 3 and shown["pin_locked"]
    # locked: even the right password is refused over the limit (R5: desk only) ...
    locked = term.authorize(1, acct["card_no"], 6000, pin=acct["password"])
    assert locked["code"] == "pin_locked"
    # ... while purchases under the limit never ask for it
    assert term.authorize(1, acct["card_no"], 1000)["approved"]
    # the desk clears the lockout
    module_server.admin().call("POST", f"/v1/admin/accounts/{acct['number']}/pin-reset")
    assert account(module_server, acct)["pin_tries"] == 0
    ok = term.authorize(1, acct["card_no"], 6000, pin=acct["password"])
    assert ok["approved"] and ok["pin"] == "ok" and ok["spent_fen"] == 0
    flow = [f["kind"] for f in account(module_server, acct)["flow"]]
    assert flow.count("pin_fail") == 3 and "pin_reset" in flow


def test_r6_holds_count_toward_the_limit_on_a_fresh_day(
    module_server: ServerProc, term: HandTerminal
) -> None:
    """Two purchases authorized before either is journaled still add up for R6."""
    acct = fresh_account(module_server, topup_fen=20_000)
    assert term.authorize(1, acct["card_no"], 3000)["approved"]
    second = term.authorize(2, acct["card_no"], 3000)
    assert not second["approved"] and second["code"] == "needs_pin"
    assert term.authorize(2, acct["card_no"], 3000, pin=acct["password"])["pin"] == "ok"


def test_r6_is_the_accounts_limit_across_phone_payments_and_the_card(
    module_server: ServerProc, term: HandTerminal
) -> None:
    """A card's counters hold its own sales; phone payments of the same day count too (R6)."""
    acct = fresh_account(module_server, topup_fen=20_000)
    term.record(acct["id"], 4500, method="qr-forward")  # paid by phone code today
    term.push(term.wire([len(term.journal)]))
    assert account(module_server, acct)["spent_today_fen"] == 4500
    facts = {"generation": acct["generation"], "day": None, "spent_fen": 0, "taps": 0}
    asked = term.authorize(next_seq(term), acct["card_no"], 1000, card=facts)
    assert (asked["approved"], asked["code"]) == (False, "needs_pin"), asked
    # the POS checked the password against the card
    ok = term.authorize(next_seq(term), acct["card_no"], 1000, card={**facts, "pin": "ok"})
    assert ok["approved"] and ok["pin"] == "ok", ok
    # under the limit on both counts: no password
    fresh = fresh_account(module_server, topup_fen=20_000)
    facts = {"generation": fresh["generation"], "day": None, "spent_fen": 0, "taps": 0}
    assert term.authorize(next_seq(term), fresh["card_no"], 1000, card=facts)["approved"]


def test_r6_correct_password_resets_the_tracked_amount(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=20_000)
    journal(term, acct, term.authorize(next_seq(term), acct["card_no"], 4500), 4500)
    assert account(module_server, acct)["spent_today_fen"] == 4500
    assert term.authorize(next_seq(term), acct["card_no"], 1000)["code"] == "needs_pin"
    ok = term.authorize(next_seq(term), acct["card_no"], 1000, pin=acct["password"])
    journal(term, acct, ok, 1000)
    assert account(module_server, acct)["spent_today_fen"] == 1000  # counts from zero
    free = term.authorize(next_seq(term), acct["card_no"], 4000)  # 1000 + 4000 = the limit
    assert free["approved"] and free["pin"] == "none"


def test_r5_wrong_passwords_keyed_offline_count_at_sync(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=20_000)
    for _ in range(2):
        term.record(acct["id"], 0, kind="pin_fail", pin="fail", off=True)
    assert term.push(term.wire([1, 2]))["ack"] == 2
    assert account(module_server, acct)["pin_tries"] == 2
    out = term.authorize(3, acct["card_no"], 6000, pin="999999")
    assert (out["code"], out["tries_left"]) == ("wrong_pin", 0)


# --- R7 ---------------------------------------------------------------------------------------
def test_r7_alipay_lands_in_transition_and_moves_at_the_next_card_sale(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server)
    module_server.provider_topup(acct["number"], acct["password"], "alipay", 3000)
    a = account(module_server, acct)
    assert (a["balance_fen"], a["transition_fen"]) == (0, 3000)
    out = term.authorize(1, acct["card_no"], 2000)  # a card sale may use it
    assert out["approved"] and out["balance_fen"] == 1000
    journal(term, acct, out, 2000)
    shown = account(module_server, acct)
    assert (shown["balance_fen"], shown["transition_fen"]) == (1000, 0)
    moved = [f for f in shown["flow"] if f["kind"] == "transition"]
    assert len(moved) == 1 and moved[0]["amount_fen"] == 3000
    ledger_ok(module_server)


def test_r7_phone_payments_do_not_move_the_transition_balance(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=5000)
    module_server.provider_topup(acct["number"], acct["password"], "alipay", 3000)
    term.record(acct["id"], 1000, method="qr-forward")
    term.push(term.wire([1]))
    shown = account(module_server, acct)
    assert (shown["balance_fen"], shown["transition_fen"]) == (4000, 3000)
    term.record(acct["id"], 500, method="card")
    term.push(term.wire([2]))
    shown = account(module_server, acct)
    assert (shown["balance_fen"], shown["transition_fen"]) == (6500, 0)
    ledger_ok(module_server)
    assert alarms_of(module_server, term.terminal_id) == []


# --- bad requests ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"seq": 1, "card_no": "1", "amount_fen": 0},
        {"seq": 1, "card_no": "1", "amount_fen": -100},
        {"seq": 1, "card_no": "1", "amount_fen": 10_000_001},
        {"seq": 1, "card_no": "1", "amount_fen": True},
        {"seq": 1, "card_no": "1", "amount_fen": "100"},
        {"seq": 1, "card_no": "1", "amount_fen": 12.5},
        {"seq": 0, "card_no": "1", "amount_fen": 100},
        {"seq": 1, "card_no": "", "amount_fen": 100},
        {"seq": 1, "card_no": "1", "amount_fen": 100, "pin": "12345"},
        {"seq": 1, "card_no": "1", "amount_fen": 100, "pin": "١٢٣٤٥٦"},  # not ASCII digits
        {"seq": 1, "card_no": "1", "amount_fen": 100, "method": "qr-forward"},
        {"seq": 1, "card_no": "1", "amount_fen": 100, "tip": 1},
        {"card_no": "1", "amount_fen": 100},
    ],
)
def test_bad_authorize_requests_get_a_clear_422(term: HandTerminal, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = protocol.sign_request(
        term.key, term.terminal_id, "POST", "/v1/pos/authorize", data, term.clock.now_ms()
    )
    resp = requests.post(
        term.url + "/v1/pos/authorize",
        data=data,
        headers={**headers, "Content-Type": "application/json"},
        timeout=5,
    )
    assert resp.status_code == 422, resp.text
    assert error_of(resp)["code"] == "invalid"
