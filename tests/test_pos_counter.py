"""The counter peripherals on a real ``ykt pos`` (issue 12, "Peripherals"): the receipt printer
(ESC/POS bytes from python-escpos on a pseudo-terminal, a loopback TCP port for the network
printer), the customer pole display and the PIN pad on pseudo-terminals, each a simulated
device process (``ykt sim printer|display|pinpad``).  Tried as a canteen would: a card sale
prints a GB18030 receipt with the amount, ``ykt verify-receipt`` says genuine and then altered
for a changed amount, a sale over the daily limit waits for the PIN pad, a sale with the paper
out is approved and its receipt prints once paper is back.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.control import AgentControl
from sim.escpos_stream import render
from sync.rules import DEFAULT_DAILY_LIMIT_FEN
from tests.counterutil import Devices as Counter
from tests.counterutil import sim
from tests.helpers import PosProc, ServerProc, wait_until, ykt
from tests.posutil import NewCards

new_card = NewCards("PR", 700, topup_fen=30000)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, PosProc, Counter]]:
    tmp = tmp_path_factory.mktemp("counter")
    counter = Counter(tmp)
    server = ServerProc(tmp / "server").start()
    try:
        pos = PosProc(
            tmp / "pos", server, token=server.enroll_token("counter-1"), extra=counter.args()
        ).start()
        try:
            yield server, pos, counter
        finally:
            pos.stop()
    finally:
        server.stop(signal.SIGKILL)
        counter.stop()


def receipts(pos: PosProc) -> dict[str, Any]:
    return AgentControl(pos.url).receipts()


def printed_receipts(counter: Counter) -> list[list[str]]:
    return render(counter.printed()).receipts


def test_card_sale_prints_a_gb18030_receipt_that_verifies(shop: Any, tmp_path: Path) -> None:
    server, pos, counter = shop
    card = new_card((server, pos))
    before = len(printed_receipts(counter))
    out = AgentControl(pos.url).sale(1250, card["card_no"])
    assert out["approved"], out
    wait_until(lambda: len(printed_receipts(counter)) > before, 10)
    raw = counter.printed()
    assert "金额".encode("gb18030") in raw and b"12.50" in raw  # the bytes are GB18030
    page = render(raw)
    receipt, qrs = page.receipts[-1], page.qrs[-1]
    assert any("12.50" in line and "金额" in line for line in receipt)
    assert any(f"流水 Seq:      {out['seq']}" == line for line in receipt)
    assert len(qrs) == 1 and qrs[0].startswith("YKTR1|")
    text = qrs[0]
    ok = json.loads(ykt("verify-receipt", "--server", server.url, "--text", text, "--json").stdout)
    assert ok["verdict"] == "genuine", ok
    assert ok["receipt"]["amount_fen"] == 1250 and ok["receipt"]["seq"] == out["seq"]
    altered = text.replace("|1250|", "|1258|", 1)
    assert altered != text
    bad = json.loads(
        ykt("verify-receipt", "--server", server.url, "--text", altered, "--json").stdout
    )
    assert bad["verdict"] == "altered", bad
    strict = ykt("verify-receipt", "--server", server.url, "--text", altered, "--strict",
                 check=False)  # fmt: skip
    assert strict.returncode == 3 and strict.stdout.startswith("ALTERED")
    # the printed text against the signed fields: as printed, then with one digit changed
    printed = tmp_path / "printed.txt"
    printed.write_text("\n".join(receipt), encoding="utf-8")
    args = ("verify-receipt", "--server", server.url, "--text", text, "--json")
    same = json.loads(ykt(*args, "--printed", str(printed)).stdout)
    assert same["verdict"] == "genuine", same
    printed.write_text("\n".join(receipt).replace("￥12.50", "￥12.58"), encoding="utf-8")
    changed = json.loads(ykt(*args, "--printed", str(printed)).stdout)
    assert changed["verdict"] == "altered" and "amount_fen" in changed["reason"], changed
    junk = json.loads(
        ykt("verify-receipt", "--server", server.url, "--text", "hello", "--json").stdout
    )
    assert junk["verdict"] == "unknown"


def test_receipt_picture_verifies(shop: Any, tmp_path: Path) -> None:
    server, pos, counter = shop
    card = new_card((server, pos))
    before = len(printed_receipts(counter))
    assert AgentControl(pos.url).sale(300, card["card_no"])["approved"]
    wait_until(lambda: len(printed_receipts(counter)) > before, 10)
    png = tmp_path / "receipt.png"
    sim("printer", "show", "--dir", str(counter.dir), "--name", "p1", "--png", str(png))
    out = json.loads(ykt("verify-receipt", "--server", server.url, "--png", str(png),
                         "--json").stdout)  # fmt: skip
    assert out["verdict"] == "genuine" and out["receipt"]["amount_fen"] == 300, out


def test_display_shows_amount_then_outcome_and_balance(shop: Any) -> None:
    server, pos, counter = shop
    card = new_card((server, pos))
    ctl = AgentControl(pos.url)
    ctl.amount(777)

    def shown() -> list[str]:
        return list(sim("display", "show", "--dir", str(counter.dir), "--name", "d1")["lines"])

    wait_until(lambda: shown()[0].endswith("7.77") and shown()[0].startswith("AMOUNT DUE"), 10)
    ctl.present(card["card_no"])
    wait_until(lambda: shown()[0].startswith("PAID") and shown()[1].startswith("BALANCE"), 10)
    assert shown()[1].endswith(f"{(30000 - 777) // 100}.{(30000 - 777) % 100:02d}")


def test_over_the_limit_waits_for_the_pin_pad(shop: Any) -> None:
    server, pos, counter = shop
    card = new_card((server, pos))
    ctl = AgentControl(pos.url)
    keyed = ctl.amount(DEFAULT_DAILY_LIMIT_FEN + 500)
    ctl.present(card["card_no"])
    s = ctl.wait(keyed["version"], ("wait_pin", "approved", "declined"), 15)
    assert s["state"] == "wait_pin", s
    pad = wait_until(
        lambda: (p := json.loads((counter.dir / "k1.pad").read_text()))["prompt"] and p, 10
    )
    # noise first: refused by the POS, the sale still waits
    ykt("sim", "pinpad", "type", "--dir", str(counter.dir), "--name", "k1",
        "--noise", "41ff0250ff03", card["password"])  # fmt: skip
    done = ctl.wait(s["version"], ("approved", "declined"), 15)
    assert done["approved"], done
    status = pos.status()["devices"]["pinpad"]
    assert status["stats"]["noise"] >= 1 and status["state"] == "ready"
    log = pos.logfile.read_text(encoding="utf-8", errors="replace")
    assert "consumption password keyed on the PIN pad" in log
    assert "noise on the line refused" in log or "cut short refused" in log
    assert card["password"] not in log  # the digits never reach the log
    assert pad["prompt"] and "PIN" in pad["prompt"]


def test_paper_out_sale_approved_and_printed_when_paper_is_back(shop: Any) -> None:
    server, pos, counter = shop
    card = new_card((server, pos))
    counter.fault("--paper", "out")
    before = len(printed_receipts(counter))
    out = AgentControl(pos.url).sale(450, card["card_no"])
    assert out["approved"], out
    wait_until(lambda: pos.status()["devices"]["printer"]["state"].startswith("paper out"), 10)
    wait_until(lambda: "printer" in (AgentControl(pos.url).state()["notice"] or ""), 10)
    wait_until(lambda: receipts(pos)["counts"]["queued"] >= 1, 10)
    counter.fault("--paper", "ok")
    wait_until(lambda: len(printed_receipts(counter)) > before, 10)
    assert any("4.50" in line for line in printed_receipts(counter)[-1])
    wait_until(lambda: receipts(pos)["counts"]["queued"] == 0, 10)
    wait_until(lambda: AgentControl(pos.url).state()["notice"] is None, 10)


def test_paper_out_mid_receipt_prints_the_whole_receipt_again(shop: Any) -> None:
    server, pos, counter = shop
    card = new_card((server, pos))
    before = len(printed_receipts(counter))
    counter.fault("--paper", "out", "--after-bytes", "60")
    out = AgentControl(pos.url).sale(610, card["card_no"])
    assert out["approved"], out
    wait_until(lambda: pos.status()["devices"]["printer"]["state"].startswith("paper out"), 10)
    counter.fault("--paper", "ok")
    wait_until(lambda: receipts(pos)["counts"]["queued"] == 0, 10)
    page = render(counter.printed())
    whole = page.receipts[-1]
    assert any("6.10" in line for line in whole) and page.qrs[-1]
    assert len(page.receipts) > before


def test_cover_open_then_closed(shop: Any) -> None:
    server, pos, counter = shop
    card = new_card((server, pos))
    counter.fault("--cover", "open")
    before = len(printed_receipts(counter))
    assert AgentControl(pos.url).sale(222, card["card_no"])["approved"]
    wait_until(lambda: pos.status()["devices"]["printer"]["state"].startswith("cover open"), 10)
    wait_until(lambda: receipts(pos)["counts"]["queued"] >= 1, 10)
    assert len(printed_receipts(counter)) == before
    counter.fault("--cover", "closed")
    wait_until(lambda: any("2.22" in line for line in printed_receipts(counter)[-1]), 10)


def test_reprint_from_the_cashier(shop: Any) -> None:
    server, pos, counter = shop
    card = new_card((server, pos))
    out = AgentControl(pos.url).sale(120, card["card_no"])
    # the sale's own receipt first (queued by the printer's side a moment after the approval:
    # an empty queue alone may be the moment before)
    seq_line = f"流水 Seq:      {out['seq']}"
    wait_until(lambda: any(seq_line in r for r in printed_receipts(counter)), 10)
    wait_until(lambda: receipts(pos)["counts"]["queued"] == 0, 10)
    before = len(printed_receipts(counter))
    AgentControl(pos.url).reprint(out["seq"])
    wait_until(lambda: len(printed_receipts(counter)) > before, 10)
    last = printed_receipts(counter)[-1]
    assert seq_line in last and any("COPY 1" in line for line in last), last


@pytest.fixture(scope="module")
def net_pos(shop: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PosProc, Path]]:
    """A second till with a network printer (a loopback TCP port) and a display of its own."""
    server, _, _ = shop
    tmp = tmp_path_factory.mktemp("netcounter")
    devices = tmp / "devices"
    devices.mkdir()
    url = sim("printer", "start", "--dir", str(devices), "--name", "n1", "--net")["url"]
    display = sim("display", "start", "--dir", str(devices), "--name", "d2")["device"]
    pos = PosProc(
        tmp / "pos",
        server,
        token=server.enroll_token("counter-2"),
        extra=["--printer", url, "--display", f"serial://{display}"],
    ).start()
    try:
        yield pos, devices
    finally:
        pos.stop()
        for name in ("n1", "d2"):
            ykt("sim", "printer", "stop", "--dir", str(devices), "--name", name, check=False)


def test_network_printer_unplugged_then_back(shop: Any, net_pos: tuple[PosProc, Path]) -> None:
    server, _, _ = shop
    pos, devices = net_pos
    url = json.loads((devices / "n1.json").read_text())["url"]
    port = url.rsplit(":", 1)[1]

    def printed() -> list[list[str]]:
        p = devices / "n1.escpos"
        return render(p.read_bytes()).receipts if p.exists() else []

    card = new_card((server, pos))
    assert AgentControl(pos.url).sale(200, card["card_no"])["approved"]
    wait_until(lambda: any("2.00" in line for r in printed() for line in r), 10)
    ykt("sim", "printer", "stop", "--dir", str(devices), "--name", "n1")  # unplugged
    out = AgentControl(pos.url).sale(330, card["card_no"])
    assert out["approved"], out  # the sale does not wait for the printer
    wait_until(lambda: pos.status()["devices"]["printer"]["state"] == "unavailable", 15)
    wait_until(lambda: AgentControl(pos.url).receipts()["counts"]["queued"] == 1, 10)
    sim("printer", "start", "--dir", str(devices), "--name", "n1", "--net", "--port", port)
    wait_until(lambda: any("3.30" in line for r in printed() for line in r), 15)
    wait_until(lambda: pos.status()["devices"]["printer"]["state"] == "ready", 10)
    events = [e["event"] for e in pos.status()["devices"]["printer"]["events"]]
    assert any(e.startswith("recovered after") for e in events), events


def test_display_gone_does_not_stop_a_sale(shop: Any, net_pos: tuple[PosProc, Path]) -> None:
    server, _, _ = shop
    pos, devices = net_pos
    card = new_card((server, pos))
    ykt("sim", "display", "stop", "--dir", str(devices), "--name", "d2")
    out = AgentControl(pos.url).sale(150, card["card_no"])
    assert out["approved"], out
    wait_until(lambda: pos.status()["devices"]["display"]["state"] == "unavailable", 10)
    assert pos.status()["devices"]["display"]["error"]


def test_cashier_screen_shows_the_devices_and_reprints(shop: Any) -> None:
    """The cashier screen (Chromium) shows each device's state and the print queue, hides its
    own password entry while the PIN pad takes it, and prints the last receipt again."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_screens import CHROMIUM_ARGS

    server, pos, counter = shop
    card = new_card((server, pos))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(pos.url + "/cashier")
            devices = page.get_by_test_id("devices")
            expect(devices).to_contain_text("打印机 printer: ready", timeout=10_000)
            expect(devices).to_contain_text("密码键盘 PIN pad: ready")
            page.fill("#amount", "60.00")
            page.click("#charge")
            expect(page.get_by_test_id("state")).to_have_attribute("data-state", "wait_credential")
            AgentControl(pos.url).present(card["card_no"])
            expect(page.get_by_test_id("state")).to_have_attribute("data-state", "wait_pin")
            expect(page.get_by_test_id("state")).to_contain_text("PIN pad")
            expect(page.locator("#pinpad")).to_be_hidden()
            ykt("sim", "pinpad", "type", "--dir", str(counter.dir), "--name", "k1",
                card["password"])  # fmt: skip
            expect(page.get_by_test_id("state")).to_have_attribute("data-state", "approved")
            wait_until(lambda: receipts(pos)["counts"]["queued"] == 0, 10)
            before = len(printed_receipts(counter))
            page.click("#reprint")
            wait_until(lambda: len(printed_receipts(counter)) > before, 10)
            assert any("60.00" in line for line in printed_receipts(counter)[-1])
            assert any("COPY" in line for line in printed_receipts(counter)[-1])
        finally:
            browser.close()
