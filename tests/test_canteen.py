"""Issue 12 "Done when", tried as a canteen would, in one run of real processes: a ``ykt
server``; a merchant with a cashier and a supervisor (``ykt admin merchant add``, ``operator
add``); a ``ykt pos`` of that merchant with its receipt printer, customer display and PIN pad
on pseudo-terminals (``ykt sim printer|display|pinpad start``).  The cashier signs in; a card
sale prints a GB18030 receipt carrying the amount that ``ykt verify-receipt`` finds genuine, and
altered once a digit of the amount changes; with the paper out a sale is approved and its
receipt prints once paper is back; a sale over the daily limit waits for the PIN pad; a
supervisor refunds the first sale (a refund receipt prints) and the balance returns; the Z
report of ``ykt sim shift close`` and ``ykt admin report settlement`` agree with the ledger.

The pieces are tested one by one in tests/test_pos_counter.py and tests/test_cashier.py; this
is where the two halves meet."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from edge.receipts import yuan
from sim.control import AgentControl
from sim.escpos_stream import render
from sync.clock import campus_date
from sync.rules import DEFAULT_DAILY_LIMIT_FEN
from tests.counterutil import (
    CASHIER,
    CASHIER_PIN,
    CODE,
    SUPER,
    SUPER_PIN,
    Devices,
    add_merchant,
    enroll,
    merchant_balance,
)
from tests.helpers import PosProc, ServerProc, wait_until, ykt
from tests.posutil import admin_args

START = 300_00
OVER = DEFAULT_DAILY_LIMIT_FEN + 5_00


def test_a_shift_at_the_canteen_counter(tmp_path: Path) -> None:
    devices = Devices(tmp_path)
    server = ServerProc(tmp_path / "server").start()
    pos: PosProc | None = None
    try:
        add_merchant(server)
        pos = PosProc(
            tmp_path / "pos", server, token=enroll(server, "window-1"),
            extra=devices.args(),
        ).start()  # fmt: skip
        shift(server, pos, devices)
    finally:
        if pos is not None:
            pos.stop()
        server.stop(signal.SIGKILL)
        devices.stop()


def shift(server: ServerProc, pos: PosProc, devices: Devices) -> None:
    admin = admin_args(server)
    ctl = AgentControl(pos.url)

    def sim(*args: str) -> Any:
        return json.loads(ykt("sim", *args, "--agent", pos.url, "--json").stdout)

    def printed_with(seq: int, *words: str) -> list[str]:
        """The receipt of journal record ``seq`` (which carries ``words``), once printed."""

        def find() -> list[str] | None:
            for r in devices.receipts():
                if f"流水 Seq:      {seq}" in r and all(any(w in x for x in r) for w in words):
                    return r
            return None

        got: list[str] = wait_until(find, 15, 0.05)
        return got

    card = server.add_account("CT1", 8100, topup_fen=START)
    pos.wait_card_known(card["card_no"])
    merchant_before = merchant_balance(server)
    wait_until(lambda: pos.status()["till"]["required"], 15, 0.05)  # the operators arrived
    till = sim("cashier", "sign-in", "--number", CASHIER, "--pin", CASHIER_PIN)
    assert till["cashier"]["number"] == CASHIER and till["shift"]["shift_no"] == 1

    # a card sale: a GB18030 receipt with the amount, genuine, altered once a digit changes
    sale = ctl.sale(12_50, card["card_no"])
    assert sale["approved"] and not sale["offline"], sale
    receipt = printed_with(sale["seq"], "12.50")
    raw = devices.printed()
    assert "金额".encode("gb18030") in raw and "￥12.50".encode("gb18030") in raw
    assert "第一食堂 window-1".encode("gb18030") in raw  # the merchant (from the feed), window
    assert any(line.startswith("金额") and line.endswith("12.50") for line in receipt)
    (qr,) = render(raw).qrs[0]
    verify = ("verify-receipt", "--server", server.url, "--json", "--text")
    ok = json.loads(ykt(*verify, qr).stdout)
    assert ok["verdict"] == "genuine" and ok["receipt"]["amount_fen"] == 12_50, ok
    altered = qr.replace("|1250|", "|1259|", 1)
    assert altered != qr
    assert json.loads(ykt(*verify, altered).stdout)["verdict"] == "altered"

    # paper out: the sale is approved, the receipt waits, and prints once paper is back
    devices.fault("--paper", "out")
    paper = ctl.sale(4_50, card["card_no"])
    assert paper["approved"], paper
    wait_until(lambda: ctl.receipts()["counts"]["queued"] >= 1, 15, 0.05)
    wait_until(lambda: pos.status()["devices"]["printer"]["state"].startswith("paper out"), 15)
    assert not any(any("4.50" in line for line in r) for r in devices.receipts())
    devices.fault("--paper", "ok")
    printed_with(paper["seq"], "4.50")

    # over the daily limit (R19): the sale waits for the PIN pad, the diner keys it there
    keyed = ctl.amount(OVER)
    ctl.present(card["card_no"])
    s = ctl.wait(keyed["version"], ("wait_pin", "approved", "declined"), 15)
    assert s["state"] == "wait_pin", s
    wait_until(lambda: json.loads((devices.dir / "k1.pad").read_text())["prompt"], 15, 0.05)
    devices.type_pin(card["password"])
    over = ctl.wait(s["version"], ("approved", "declined"), 15)
    assert over["approved"], over
    assert card["password"] not in pos.logfile.read_text(encoding="utf-8", errors="replace")

    # a supervisor refunds the first sale: the balance returns, a refund receipt prints
    done = sim("refund", "--seq", str(sale["seq"]), "--supervisor", SUPER,
               "--supervisor-pin", SUPER_PIN)  # fmt: skip
    assert (done["amount_fen"], done["sale_seq"], done["supervisor"]) == (12_50, sale["seq"], SUPER)
    refund_receipt = printed_with(done["seq"], "退款", "12.50")
    assert any(line.startswith("金额") and line.endswith("12.50") for line in refund_receipt)
    pos.wait_synced()
    assert server.account(card["number"])["balance_fen"] == START - 4_50 - OVER

    # the Z report, the settlement and the ledger agree
    report = sim("shift", "close")
    assert report["closed_by"] == CASHIER
    assert report["sales"] == {"count": 3, "total_fen": 12_50 + 4_50 + OVER}
    assert report["sales_by_method"]["card"] == report["sales"]
    assert report["refunds"] == {"count": 1, "total_fen": 12_50}
    net = 4_50 + OVER
    assert report["net_fen"] == net
    # the printer prints the Z report at the close, with the figures of the report
    z = wait_until(
        lambda: next((r for r in devices.receipts() if "交班报表 Z REPORT" in r), None), 15, 0.05
    )
    assert z[0] == "第一食堂 window-1"
    assert f"净额 Net:      ￥{yuan(net)}" in z and f"班次 Shift:    {report['shift_no']}" in z
    assert any(x.startswith("退款 Refunds:") and x.endswith("￥12.50") for x in z), z
    pos.wait_synced()
    day = campus_date(report["closed_ms"])
    settle = json.loads(
        ykt(*admin, "report", "settlement", "--date", day, "--merchant", CODE, "--json").stdout
    )
    (m,) = settle["merchants"]
    (t,) = m["terminals"]
    assert t["terminal_id"] == report["terminal_id"] and t["unsynced_records"] == 0
    card_row = t["by_method"]["card"]
    assert card_row["sales"] == report["sales"] and card_row["refunds"] == report["refunds"]
    assert m["net_fen"] == m["ledger_net_fen"] == net
    assert merchant_balance(server) - merchant_before == net
    ledger = json.loads(ykt(*admin, "ledger", "check", "--json").stdout)
    assert ledger["ok"] and ledger["mismatched"] == [], ledger
