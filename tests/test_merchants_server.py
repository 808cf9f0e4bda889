"""Merchants, operators, POS refunds and the settlement report on the real server (both
databases), with hand-built terminals: sales credit the merchant's account; a refund record
gives back at most what is left of its sale, once, with a supervisor of the terminal's
merchant; the settlement report equals the ledger's movements of the day."""

from __future__ import annotations

import csv
import io
import itertools
from typing import Any

import pytest

from sync.clock import campus_date
from sync.errors import ServerRefused
from tests.handterm import HandTerminal, fresh_account, ledger_ok
from tests.helpers import ServerProc, ykt

START = 100_00
_codes = itertools.count(1)


def merchant(server: ServerProc) -> str:
    code = f"M{next(_codes):03d}"
    got = server.admin().call("POST", "/v1/admin/merchants", {"code": code, "name": "一食堂"})
    assert got["code"] == code
    return code


def terminal(server: ServerProc, code: str, name: str = "till") -> HandTerminal:
    token = server.admin().call(
        "POST", "/v1/admin/terminals/tokens", {"role": "pos", "name": name, "merchant": code}
    )["token"]
    return HandTerminal(server.url, token)


def operator(server: ServerProc, code: str, number: str, role: str, pin: str = "246810") -> None:
    server.admin().call(
        "POST",
        "/v1/admin/operators",
        {"merchant": code, "number": number, "name": "王师傅", "role": role, "pin": pin},
    )


def refund(term: HandTerminal, sale_seq: int, amt: int, sup: str, **kw: Any) -> dict[str, str]:
    sale = term.journal[sale_seq - 1][0]
    return term.record(
        sale.acct,
        amt,
        kind="refund",
        cred=sale.cred,
        x={"refund": {"seq": sale_seq, "sup": sup}},
        **kw,
    )


def balance(server: ServerProc, acct: dict[str, Any]) -> int:
    return int(server.account(acct["number"])["balance_fen"])


def merchant_balance(server: ServerProc, code: str) -> int:
    rows = server.admin().call("GET", "/v1/admin/merchants")["merchants"]
    return int(next(m["balance_fen"] for m in rows if m["code"] == code))


@pytest.fixture
def shop(module_server: ServerProc) -> dict[str, Any]:
    code = merchant(module_server)
    sup, cashier = f"S{code}", f"C{code}"
    operator(module_server, code, sup, "supervisor")
    operator(module_server, code, cashier, "cashier")
    term = terminal(module_server, code)
    acct = fresh_account(module_server, topup_fen=START)
    return {
        "server": module_server,
        "code": code,
        "sup": sup,
        "cashier": cashier,
        "term": term,
        "acct": acct,
    }


def test_sales_credit_the_merchant_and_a_refund_gives_back(shop: dict[str, Any]) -> None:
    server, term, acct, code = shop["server"], shop["term"], shop["acct"], shop["code"]
    term.push([term.record(acct["id"], 12_50, op=shop["cashier"])])
    assert merchant_balance(server, code) == 12_50
    assert balance(server, acct) == START - 12_50
    ack = term.push([refund(term, 1, 12_50, shop["sup"], op=shop["cashier"])])
    assert (ack["ack"], ack["alarms"]) == (2, [])
    assert balance(server, acct) == START
    assert merchant_balance(server, code) == 0
    bills = server.account(acct["number"])["bills"]
    assert sorted(b["amount_fen"] for b in bills if b["kind"] in ("sale", "refund")) == [
        -12_50,
        12_50,
    ]
    ledger_ok(server)


def test_refund_larger_than_the_sale_is_refused(shop: dict[str, Any]) -> None:
    server, term, acct = shop["server"], shop["term"], shop["acct"]
    term.push([term.record(acct["id"], 5_00)])
    ack = term.push([refund(term, 1, 5_01, shop["sup"])])
    assert ack["ack"] == 2  # the record is kept, the chain goes on
    assert [a["kind"] for a in ack["alarms"]] == ["refund_refused"]
    assert "more than" in ack["alarms"][0]["detail"]
    assert balance(server, acct) == START - 5_00
    ledger_ok(server)


def test_second_refund_of_a_sale_is_refused_even_in_one_batch(shop: dict[str, Any]) -> None:
    server, term, acct = shop["server"], shop["term"], shop["acct"]
    batch = [term.record(acct["id"], 8_00), refund(term, 1, 3_00, shop["sup"])]
    batch.append(refund(term, 1, 3_00, shop["sup"]))
    ack = term.push(batch)
    assert ack["ack"] == 3
    assert [a["kind"] for a in ack["alarms"]] == ["refund_refused"]
    assert "refunded at the till already" in ack["alarms"][0]["detail"]
    assert balance(server, acct) == START - 5_00
    ledger_ok(server)


def test_desk_and_till_refunds_never_add_up_to_more_than_the_sale(
    shop: dict[str, Any],
) -> None:
    server, term, acct = shop["server"], shop["term"], shop["acct"]
    term.push([term.record(acct["id"], 10_00)])
    server.admin().call(
        "POST",
        "/v1/admin/refunds",
        {"transfer_id": f"sale:{term.terminal_id}:1", "amount_fen": 7_00, "reason": "cold"},
    )
    ack = term.push([refund(term, 1, 4_00, shop["sup"])])
    assert [a["kind"] for a in ack["alarms"]] == ["refund_refused"]
    ack = term.push([refund(term, 1, 3_00, shop["sup"])])
    assert ack["alarms"] == []
    assert balance(server, acct) == START
    with pytest.raises(ServerRefused) as err:  # and the desk finds nothing left either
        server.admin().call(
            "POST",
            "/v1/admin/refunds",
            {"transfer_id": f"sale:{term.terminal_id}:1", "amount_fen": 1, "reason": "again"},
        )
    assert err.value.code == "over_refund"
    ledger_ok(server)


def test_refund_needs_a_supervisor_of_the_merchant(shop: dict[str, Any]) -> None:
    server, term, acct = shop["server"], shop["term"], shop["acct"]
    other = merchant(server)
    operator(server, other, f"S{other}", "supervisor")
    term.push([term.record(acct["id"], 2_00)])
    for sup in (shop["cashier"], f"S{other}", "nobody"):
        ack = term.push([refund(term, 1, 2_00, sup)])
        assert [a["kind"] for a in ack["alarms"]] == ["refund_refused"], sup
    assert balance(server, acct) == START - 2_00


def test_a_refund_names_a_sale_of_its_own_terminal(shop: dict[str, Any]) -> None:
    """Sequence numbers are the terminal's own: a refund record of terminal B naming seq 1
    refunds B's record 1, never A's; a non-sale record there is refused."""
    server, term, acct = shop["server"], shop["term"], shop["acct"]
    term.push([term.record(acct["id"], 6_00)])
    b = terminal(server, shop["code"], "till-b")
    b.push([b.record(acct["id"], 0, kind="pin_fail", pin="fail")])
    ack = b.push([refund(b, 1, 6_00, shop["sup"])])
    assert [a["kind"] for a in ack["alarms"]] == ["refund_refused"]
    assert "is not a sale" in ack["alarms"][0]["detail"]
    assert balance(server, acct) == START - 6_00


def test_disabled_operators(shop: dict[str, Any]) -> None:
    """A sale by an operator disabled before it stands (with an alarm); a refund allowed by a
    supervisor disabled before it moves no money."""
    server, term, acct = shop["server"], shop["term"], shop["acct"]
    term.push([term.record(acct["id"], 3_00)])
    server.admin().call("POST", f"/v1/admin/operators/{shop['cashier']}/disable")
    server.admin().call("POST", f"/v1/admin/operators/{shop['sup']}/disable")
    ack = term.push([term.record(acct["id"], 1_00, op=shop["cashier"])])
    assert [a["kind"] for a in ack["alarms"]] == ["operator_disabled"]
    ack = term.push([refund(term, 1, 3_00, shop["sup"])])
    assert [a["kind"] for a in ack["alarms"]] == ["refund_refused"]
    assert balance(server, acct) == START - 4_00
    listed = server.admin().call("GET", f"/v1/admin/operators?merchant={shop['code']}")
    assert {o["status"] for o in listed["operators"]} == {"disabled"}


def test_feed_sends_operators_to_their_merchants_terminals_only(shop: dict[str, Any]) -> None:
    server, term = shop["server"], shop["term"]
    page = term.feed(0)
    ops = {o["number"]: o for o in page["operators"]}
    assert set(ops) == {shop["sup"], shop["cashier"]}
    assert ops[shop["sup"]]["verifier"].startswith("scrypt$")
    other = terminal(server, merchant(server), "elsewhere")
    assert other.feed(0)["operators"] == []
    server.admin().call("POST", f"/v1/admin/operators/{shop['cashier']}/disable")
    later = term.feed(page["version"])
    assert [(o["number"], o["status"], o["verifier"]) for o in later["operators"]] == [
        (shop["cashier"], "disabled", "")
    ]


def test_settlement_equals_the_ledger(shop: dict[str, Any]) -> None:
    server, term, acct, code = shop["server"], shop["term"], shop["acct"], shop["code"]
    before = merchant_balance(server, code)
    term.push([term.record(acct["id"], 4_00), term.record(acct["id"], 2_50, off=False)])
    term.push([refund(term, 1, 1_00, shop["sup"])])
    day = campus_date(term.clock.now_ms())
    rep = server.admin().call("GET", f"/v1/admin/reports/settlement?date={day}&merchant={code}")
    (m,) = rep["merchants"]
    assert m["sales"] == {"count": 2, "total_fen": 6_50}
    assert m["refunds"] == {"count": 1, "total_fen": 1_00}
    assert m["net_fen"] == m["ledger_net_fen"] == merchant_balance(server, code) - before
    (t,) = m["terminals"]
    assert t["by_mode"]["offline"]["net_fen"] == 4_00 - 1_00
    assert t["by_mode"]["online"]["net_fen"] == 2_50
    assert t["by_method"]["card"]["net_fen"] == 5_50
    out = ykt(
        "admin",
        "--server",
        server.url,
        "--token-file",
        str(server.token_file),
        "report",
        "settlement",
        "--date",
        day,
        "--merchant",
        code,
        "--csv",
    )
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert sum(int(r["net_fen"]) for r in rows) == m["net_fen"]
    assert {(r["mode"], r["method"]) for r in rows} == {("offline", "card"), ("online", "card")}


def test_settlement_shows_what_terminals_have_not_synced(shop: dict[str, Any]) -> None:
    """A terminal reports its journal head with each feed request; the records above what the
    server applied are its unsynced records."""
    server, term, acct, code = shop["server"], shop["term"], shop["acct"], shop["code"]
    term.push([term.record(acct["id"], 1_00)])
    term.client.feed(0, head=4)  # three more records made, not pushed yet
    day = campus_date(term.clock.now_ms())
    rep = server.admin().call("GET", f"/v1/admin/reports/settlement?date={day}&merchant={code}")
    (m,) = rep["merchants"]
    assert m["unsynced_records"] == m["terminals"][0]["unsynced_records"] == 3
    term.client.feed(0, head=1)
    rep = server.admin().call("GET", f"/v1/admin/reports/settlement?date={day}&merchant={code}")
    assert rep["merchants"][0]["unsynced_records"] == 0
