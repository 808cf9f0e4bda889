"""The canteen counter through real processes: a server, two ``ykt pos`` agents of one merchant
(one behind a relay the test cuts: its network goes away while both keep running), the
operators and refunds driven by ``ykt admin`` and ``ykt sim`` as an operator would.

A cashier signs in, sells by card, a supervisor refunds it and the balance returns; the shift
report and ``ykt admin report settlement`` agree with the ledger.  A refund larger than the
sale, of another terminal's sale, or a second refund of a sale is refused; a cashier disabled
while the terminal is offline is signed out when it learns so."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sim.control import AgentControl
from sim.errors import SimUsageError
from sync.clock import campus_date
from tests.counterutil import CASHIER, CASHIER_PIN, CODE, SUPER, SUPER_PIN, add_merchant, enroll
from tests.counterutil import merchant_balance as merchant_balance_of
from tests.helpers import PosProc, ServerProc, wait_until, ykt
from tests.netcut import NetCut
from tests.posutil import NewCards, admin_args, server_records

START = 100_00
new_card = NewCards("CA", 7100, START)


class Counter:
    def __init__(self, server: ServerProc, a: PosProc, b: PosProc, net: NetCut) -> None:
        self.server, self.a, self.b, self.net = server, a, b, net

    def sim(self, *args: str, pos: PosProc | None = None, check: bool = True) -> Any:
        out = ykt("sim", *args, "--agent", (pos or self.a).url, "--json", check=check)
        if not check:
            return out
        return json.loads(out.stdout)

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ykt(*admin_args(self.server), *args, check=check)

    def balance(self, number: str) -> int:
        return int(self.server.account(number)["balance_fen"])

    def merchant_balance(self) -> int:
        return merchant_balance_of(self.server)


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Counter]:
    tmp = tmp_path_factory.mktemp("cashier")
    server = ServerProc(tmp / "server").start()
    net = NetCut(server.port)
    pos: list[PosProc] = []
    try:
        # as an operator would, by `ykt admin` (the rest through the same API, faster)
        add_merchant(server)
        tokens = [
            enroll(server, "window-1"),
            server.admin().call(
                "POST",
                "/v1/admin/terminals/tokens",
                {"role": "pos", "name": "window-2", "merchant": CODE, "simulated": True},
            )["token"],
        ]
        for name, url, token in zip(("window-1", "window-2"), (net.url, ""), tokens, strict=True):
            pos.append(PosProc(tmp / name, server, token=token, server_url=url).start())
        for p in pos:
            wait_until(lambda p=p: requests.get(p.url + "/control/till", timeout=5).json()[
                "required"], 15, 0.05)  # fmt: skip
        yield Counter(server, pos[0], pos[1], net)
    finally:
        for p in pos:
            p.stop()
        net.close()
        server.stop(signal.SIGKILL)


def sign_in(c: Counter, pos: PosProc | None = None, number: str = CASHIER, pin: str = "") -> Any:
    """Sign in through the control API (what ``ykt sim cashier sign-in`` calls: the CLI itself
    is run in test_canteen_counter; a process per step would make these tests slow)."""
    return ctl(pos or c.a).sign_in(number, pin or CASHIER_PIN)


def ctl(pos: PosProc) -> AgentControl:
    return AgentControl(pos.url)


def refused(out: subprocess.CompletedProcess[str], words: str) -> None:
    assert out.returncode != 0, out.stdout
    assert words in out.stderr, out.stderr


def test_canteen_counter(counter: Counter) -> None:
    c = counter
    card = new_card((c.server, c.a))
    merchant_before = c.merchant_balance()
    # the merchant has operators: no sale without a cashier
    refused(c.sim("sale", "--amount", "1.00", "--card", card["card_no"], check=False), "sign in")
    till = c.sim("cashier", "sign-in", "--number", CASHIER, "--pin", CASHIER_PIN)
    assert till["cashier"]["number"] == CASHIER and till["shift"]["shift_no"] >= 1
    sale = c.sim("sale", "--amount", "12.50", "--card", card["card_no"])
    assert sale["approved"] and not sale["offline"]
    c.a.wait_synced()
    assert c.balance(card["number"]) == START - 12_50
    seq = sale["seq"]
    # a refund larger than the sale (by the CLI), a wrong supervisor PIN, a cashier's PIN (by
    # the control API, what the CLI calls): refused
    refund = ["refund", "--seq", str(seq), "--supervisor", SUPER]
    refused(c.sim(*refund, "--supervisor-pin", SUPER_PIN, "--amount", "12.51", check=False),
            "¥0.01 to ¥12.50")  # fmt: skip
    ctl = AgentControl(c.a.url)
    with pytest.raises(SimUsageError, match="wrong PIN"):
        ctl.refund(str(seq), SUPER, "000000")
    with pytest.raises(SimUsageError, match="not a supervisor"):
        ctl.refund(str(seq), CASHIER, CASHIER_PIN)
    done = c.sim(*refund, "--supervisor-pin", SUPER_PIN)
    assert (done["amount_fen"], done["sale_seq"], done["offline"]) == (12_50, seq, False)
    assert done["server"] == "applied"
    with pytest.raises(SimUsageError, match="refunded already"):
        ctl.refund(str(seq), SUPER, SUPER_PIN)
    c.a.wait_synced()
    assert c.balance(card["number"]) == START  # the balance returns
    bills = c.server.account(card["number"])["bills"]
    assert sorted(b["amount_fen"] for b in bills if b["kind"] in ("sale", "refund")) == [
        -12_50,
        12_50,
    ]
    # every record carries the operator; the refund, its supervisor
    tid = c.a.status()["terminal_id"]
    recs = {r["seq"]: json.loads(r["body"]) for r in server_records(c.server, tid)}
    assert recs[seq]["op"] == recs[done["seq"]]["op"] == CASHIER
    assert recs[done["seq"]]["x"]["refund"] == {"seq": seq, "sup": SUPER}
    rows = c.server.admin().call("GET", "/v1/admin/alarms")["alarms"]
    assert [a for a in rows if a["kind"] == "refund_refused"] == []
    # a second sale stays; the shift report and the settlement agree with the ledger
    sale2 = c.sim("sale", "--amount", "8.00", "--card", card["card_no"])
    assert sale2["approved"]
    report = c.sim("shift", "close")
    assert report["closed_by"] == CASHIER
    assert report["sales"]["total_fen"] == 20_50 and report["refunds"]["total_fen"] == 12_50
    assert report["sales_by_method"]["card"]["count"] == 2
    assert report["net_fen"] == 8_00
    with pytest.raises(SimUsageError, match="sign in"):  # signed out by the close
        ctl.refund(str(sale2["seq"]), SUPER, SUPER_PIN)
    c.a.wait_synced()
    wait_until(
        lambda: [
            s
            for s in c.server.admin().call("GET", "/v1/admin/reports/shifts")["shifts"]
            if s["shift_no"] == report["shift_no"] and s["closed_by"] == CASHIER
        ],
        15,
        0.05,
    )
    shifts = json.loads(c.admin("report", "shifts", "--json").stdout)["shifts"]
    (mine,) = [s for s in shifts if s["shift_no"] == report["shift_no"]]
    assert mine["net_fen"] == 8_00 and mine["terminal_id"] == report["terminal_id"]
    day = campus_date(report["closed_ms"])
    settle = json.loads(
        c.admin("report", "settlement", "--date", day, "--merchant", CODE, "--json").stdout
    )
    (m,) = settle["merchants"]
    # the merchant was made today: its ledger account holds what the day settled
    assert m["net_fen"] == m["ledger_net_fen"] == c.merchant_balance() == merchant_before + 8_00
    terms = {t["name"]: t for t in m["terminals"]}
    a = terms["window-1"]
    assert a["by_method"]["card"]["sales"]["total_fen"] >= report["sales"]["total_fen"]
    assert a["unsynced_records"] == 0


def test_refund_of_another_terminals_sale(counter: Counter) -> None:
    c = counter
    card = new_card((c.server, c.a))
    c.b.wait_card_known(card["card_no"])
    sign_in(c)
    sign_in(c, c.b)
    sale = ctl(c.a).sale(3_00, card["card_no"])
    tid = c.a.status()["terminal_id"]
    out = c.sim("refund", "--seq", f"{tid}:{sale['seq']}", "--supervisor", SUPER,
                "--supervisor-pin", SUPER_PIN, pos=c.b, check=False)  # fmt: skip
    refused(out, f"made at terminal {tid}")
    c.a.wait_synced()
    assert c.balance(card["number"]) == START - 3_00


def test_an_online_refund_the_server_refuses(counter: Counter) -> None:
    """The desk refunded part of the sale meanwhile: the till cannot know, the server refuses
    the till's whole refund, and the till says so at once (the alarm names it)."""
    c = counter
    card = new_card((c.server, c.a))
    sign_in(c)
    sale = ctl(c.a).sale(5_00, card["card_no"])
    c.a.wait_synced()
    tid = c.a.status()["terminal_id"]
    c.server.admin().call(
        "POST",
        "/v1/admin/refunds",
        {"transfer_id": f"sale:{tid}:{sale['seq']}", "amount_fen": 2_00, "reason": "cold"},
    )
    done = ctl(c.a).refund(str(sale["seq"]), SUPER, SUPER_PIN)
    assert done["server"].startswith("refused: 500 fen is more than the 300 fen left"), done
    assert c.balance(card["number"]) == START - 3_00  # the desk's refund alone


def test_refund_found_by_tapping_the_card(counter: Counter) -> None:
    c = counter
    card = new_card((c.server, c.a))
    sign_in(c)
    first = ctl(c.a).sale(4_00, card["card_no"])
    second = ctl(c.a).sale(1_50, card["card_no"])
    by_card = ["refund", "--card", card["card_no"], "--supervisor", SUPER,
               "--supervisor-pin", SUPER_PIN]  # fmt: skip
    assert c.sim(*by_card)["sale_seq"] == second["seq"]  # the newest sale of the card
    again = ctl(c.a).refund_by_tap(SUPER, SUPER_PIN, card_no=card["card_no"])
    assert again["sale_seq"] == first["seq"]
    with pytest.raises(SimUsageError, match="no sale of this card today"):
        ctl(c.a).refund_by_tap(SUPER, SUPER_PIN, card_no=card["card_no"])
    c.a.wait_synced()
    assert c.balance(card["number"]) == START


def test_offline_refund_and_cashier_disabled_while_offline(counter: Counter) -> None:
    c = counter
    card = new_card((c.server, c.a))
    a = ctl(c.a)
    sign_in(c)
    a.shift_close()  # a shift of this test alone
    sign_in(c)
    c.net.cut()
    try:
        wait_until(lambda: not c.a.status()["online"], 15, 0.05)
        sale = a.sale(6_00, card["card_no"])
        assert sale["approved"] and sale["offline"]
        done = a.refund(str(sale["seq"]), SUPER, SUPER_PIN)
        assert done["offline"] and done["amount_fen"] == 6_00 and done["server"] == "pending"
        # the shift closes offline: its report says what has not synced, and waits to be pushed
        report = a.shift_close()
        assert report["pending_sync"]["records"] >= 2
        assert report["sales"]["total_fen"] == report["refunds"]["total_fen"] == 6_00
        shifts = requests.get(c.a.url + "/control/shifts", timeout=5).json()["shifts"]
        assert [s["pushed"] for s in shifts if s["shift_no"] == report["shift_no"]] == [False]
        # offline: signing in works against the cached verifiers (and opens the next shift)
        assert sign_in(c)["shift"]["shift_no"] == report["shift_no"] + 1
        c.admin("operator", "disable", "--number", CASHIER)
        late = a.sale(2_00, card["card_no"])
        assert late["approved"] and late["offline"]  # the terminal cannot know yet
    finally:
        c.net.restore()
    c.a.wait_synced(30)
    # the shift report closed offline reaches the server once the terminal is back
    wait_until(
        lambda: any(
            s["shift_no"] == report["shift_no"] and s["terminal_id"] == report["terminal_id"]
            for s in c.server.admin().call("GET", "/v1/admin/reports/shifts")["shifts"]
        ),
        20,
        0.05,
    )
    # the sales stand, the refund went through, the server says who sold after the disable
    assert c.balance(card["number"]) == START - 2_00
    alarms = c.server.admin().call("GET", "/v1/admin/alarms")["alarms"]
    assert any(a["kind"] == "operator_disabled" and f"record {late['seq']}" in a["detail"]
               for a in alarms)  # fmt: skip
    # the terminal learns it: the cashier is signed out and cannot sign in again
    wait_until(lambda: c.a.status()["till"]["cashier"] is None, 20, 0.05)
    with pytest.raises(SimUsageError, match="sign in"):
        a.sale(1_00, card["card_no"])
    out = c.sim("cashier", "sign-in", "--number", CASHIER, "--pin", CASHIER_PIN, check=False)
    refused(out, "disabled")
    sign_in(c, number=SUPER, pin=SUPER_PIN)  # another operator takes over


def test_wrong_pins_lock_an_operator(counter: Counter, tmp_path: Path) -> None:
    c = counter
    b = ctl(c.b)
    for i in range(4):
        with pytest.raises(SimUsageError, match=f"{4 - i} tries left"):
            b.sign_in(SUPER, "111111")
    with pytest.raises(SimUsageError, match="locked"):
        b.sign_in(SUPER, "111111")
    # locked: even the right PIN is refused now
    refused(c.sim("cashier", "sign-in", "--number", SUPER, "--pin", SUPER_PIN, pos=c.b,
                  check=False), "locked")  # fmt: skip
