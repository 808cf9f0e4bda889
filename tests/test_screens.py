"""The POS cashier and customer screens in Debian's Chromium (Playwright), against a real agent
and server: the cashier keys an amount, a card is tapped, both screens show the outcome."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from sim.control import AgentControl
from tests.helpers import PosProc, ServerProc

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_cashier_keys_amount_and_both_screens_show_the_sale(
    browser: Browser, server: ServerProc, pos: PosProc
) -> None:
    card = server.add_account("S2023100", 100, topup_fen=5000)
    pos.wait_card_known(card["card_no"])
    cashier = browser.new_page()
    customer = browser.new_page()
    cashier.goto(pos.url + "/cashier")
    customer.goto(pos.url + "/customer")
    cashier.fill("#amount", "12.50")
    cashier.click("#charge")
    expect(cashier.get_by_test_id("state")).to_have_attribute("data-state", "wait_credential")
    expect(customer.get_by_test_id("amount")).to_have_text("¥12.50")
    AgentControl(pos.url).present(card["card_no"])
    expect(cashier.get_by_test_id("state")).to_have_attribute("data-state", "approved")
    expect(customer.get_by_test_id("balance")).to_contain_text("¥37.50")
    expect(customer.get_by_test_id("message")).to_contain_text("approved")


def test_cashier_keys_the_consumption_password_when_asked(
    browser: Browser, server: ServerProc, pos: PosProc
) -> None:
    """R6/R19: over the daily limit the PIN pad asks for the consumption password."""
    card = server.add_account("S2023101", 101, topup_fen=9000)
    pos.wait_card_known(card["card_no"])
    page = browser.new_page()
    page.goto(pos.url + "/cashier")
    page.fill("#amount", "60.00")
    page.click("#charge")
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "wait_credential")
    AgentControl(pos.url).present(card["card_no"])
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "wait_pin")
    page.fill("#pin", card["password"])
    page.click("#pinpad button")
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "approved")


def test_cashier_rejects_a_bad_amount(browser: Browser, pos: PosProc) -> None:
    page = browser.new_page()
    page.goto(pos.url + "/cashier")
    page.fill("#amount", "12.345")
    page.click("#charge")
    expect(page.get_by_role("alert")).to_contain_text("not an amount")
