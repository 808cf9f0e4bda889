"""The cashier screen as a touch POS, in Debian's Chromium (Playwright) against a real agent and
server: the cashier signs in on the keypad, sells, a supervisor refunds the sale, the shift
closes with its Z report; Chinese shows in the CJK font.  Screenshots of each step are kept in
``build/screenshots/`` (look at them: they are the test's artefacts)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from sim.control import AgentControl
from tests.helpers import PosProc, ServerProc, wait_until
from tests.test_screens import CHROMIUM_ARGS

SHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
CODE, CASHIER, CASHIER_PIN, SUPER, SUPER_PIN = "WIN2", "C7", "357911", "S7", "246813"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, PosProc]]:
    tmp = tmp_path_factory.mktemp("cashier-screen")
    server = ServerProc(tmp / "server").start()
    pos = None
    try:
        admin = server.admin()
        admin.call("POST", "/v1/admin/merchants", {"code": CODE, "name": "二食堂二号窗口"})
        for number, name, role, pin in (
            (CASHIER, "李收银", "cashier", CASHIER_PIN),
            (SUPER, "张主管", "supervisor", SUPER_PIN),
        ):
            admin.call(
                "POST",
                "/v1/admin/operators",
                {"merchant": CODE, "number": number, "name": name, "role": role, "pin": pin},
            )
        token = admin.call(
            "POST",
            "/v1/admin/terminals/tokens",
            {"role": "pos", "name": "win2", "merchant": CODE, "simulated": True},
        )["token"]
        pos = PosProc(tmp / "pos", server, token=token).start()
        wait_until(
            lambda: requests.get(pos.url + "/control/till", timeout=5).json()["required"], 15, 0.05
        )
        yield server, pos
    finally:
        if pos is not None:
            pos.stop()
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"cashier-{name}.png"), full_page=True)


def key(page: Page, pad: str, text: str) -> None:
    """Touch ``text`` on a keypad (``pad``: the CSS selector of its container)."""
    for ch in text:
        page.locator(f"{pad} button[data-key='{ch}']").click()


def test_touch_cashier_signs_in_sells_refunds_and_closes_the_shift(
    browser: Browser, shop: tuple[ServerProc, PosProc]
) -> None:
    server, pos = shop
    card = server.add_account("S2026700", 700, topup_fen=50_00)
    pos.wait_card_known(card["card_no"])
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(pos.url + "/cashier")
    # the CJK font is there (a fresh machine without fonts-noto-cjk shows empty boxes)
    assert page.evaluate("document.fonts.check('24px \"Noto Sans CJK SC\"', '收银员登录')")
    signin = page.get_by_test_id("signin")
    expect(signin).to_be_visible()
    expect(page.locator("[data-device='reader']")).to_be_visible()
    shot(page, "1-sign-in")
    page.click("#opnumber")
    page.keyboard.type(CASHIER)  # operator numbers have letters: the on-screen keyboard's job
    page.click("#oppin")
    key(page, "#signin", "000000")
    page.click("#signinok")
    expect(page.locator("#signinerror")).to_contain_text("wrong PIN")
    key(page, "#signin", CASHIER_PIN)
    page.click("#signinok")
    expect(signin).to_be_hidden()
    expect(page.get_by_test_id("cashier")).to_contain_text("李收银")
    page.click("#amount")
    key(page, "#keys", "12.50")
    page.click("#charge")
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "wait_credential")
    AgentControl(pos.url).present(card["card_no"])
    state = page.get_by_test_id("state")
    expect(state).to_have_attribute("data-state", "approved")
    expect(state).to_contain_text("¥37.50")
    shot(page, "2-approved")
    seq = AgentControl(pos.url).state()["seq"]
    page.click("#refund")
    key(page, "#refundbox", str(seq))
    page.click("#sup")
    page.keyboard.type(SUPER)
    page.click("#suppin")
    key(page, "#refundbox", SUPER_PIN)
    page.click("#refundgo")
    expect(page.get_by_test_id("refunddone")).to_contain_text("¥12.50")
    expect(page.get_by_test_id("refunddone")).to_contain_text("¥50.00")
    shot(page, "3-refunded")
    page.click("#refundseq")  # the same sale again
    key(page, "#refundbox", str(seq))
    page.click("#suppin")
    key(page, "#refundbox", SUPER_PIN)
    page.click("#refundgo")
    expect(page.locator("#refunderror")).to_contain_text("refunded already")
    # found by tapping the card instead of its number
    page.click("#refundclose")
    page.click("#amount")
    key(page, "#keys", "3")
    page.click("#charge")
    # the screen still shows the first sale's "approved" until the agent has this one
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "wait_credential")
    AgentControl(pos.url).present(card["card_no"])
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "approved")
    expect(page.get_by_test_id("state")).to_contain_text("¥47.00")
    page.click("#refund")
    expect(page.locator("#sup")).to_have_value(SUPER)  # the supervisor stays filled in
    page.click("#suppin")
    key(page, "#refundbox", SUPER_PIN)
    page.click("#refundtap")
    expect(page.get_by_test_id("refunddone")).to_contain_text("tap the card")
    wait_until(lambda: AgentControl(pos.url).till()["waiting_for_tap"], 10, 0.05)
    AgentControl(pos.url).present(card["card_no"])
    expect(page.get_by_test_id("refunddone")).to_contain_text("¥3.00")
    expect(page.get_by_test_id("refunddone")).to_contain_text("¥50.00")
    page.click("#refundclose")
    page.click("#closeshift")
    expect(page.get_by_test_id("zbox")).to_be_visible()
    expect(page.get_by_test_id("znet")).to_have_text("¥0.00")  # two sales, both refunded
    expect(page.get_by_test_id("zreport")).to_contain_text("退款 refunds")
    shot(page, "4-shift-report")
    page.click("#zclose")
    expect(signin).to_be_visible()  # the close signed the cashier out
