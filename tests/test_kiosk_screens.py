"""The kiosk's touch screen in Debian's Chromium (Playwright) against a real kiosk, server, POS,
pcscd and dispenser (tests/kioskutil.py): the balance, a password change, a full reissue and the
idle timeout.  Screenshots are kept in build/test-artifacts/kiosk/ (look at them: the Chinese
must render in Noto CJK)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from edge.kiosk.agent import CARD_GONE_S
from tests.helpers import ROOT
from tests.kioskutil import HOLDER, IDLE_S, Kiosk, running_kiosk
from tests.test_screens import CHROMIUM_ARGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    yield from running_kiosk(tmp_path_factory, "kioskscreen")


#: screenshots kept as test artefacts (look at them: the Chinese must render in Noto CJK)
SHOTS = ROOT / "build" / "test-artifacts" / "kiosk"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def screen(browser: Browser, k: Kiosk) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page.goto(k.kiosk.url + "/kiosk")
    # the last test's card left the reader just now: its account stays on the screen until the
    # kiosk has seen the reader empty for CARD_GONE_S (polled every 0.5 s), so wait past that
    expect(page.get_by_test_id("state")).to_have_attribute(
        "data-state", "idle", timeout=(CARD_GONE_S + 10) * 1000
    )
    yield page
    page.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_screen_balance(screen: Page, k: Kiosk) -> None:
    h = k.holder(topup=4321)
    k.present(HOLDER, h["card"])
    screen.get_by_test_id("go-balance").click()
    expect(screen.get_by_test_id("balance")).to_have_text("¥43.21")
    expect(screen.get_by_test_id("state")).to_have_attribute("data-state", "card")
    shot(screen, "balance")
    k.remove(HOLDER)


def test_screen_query_password_change(screen: Page, k: Kiosk) -> None:
    h = k.holder()
    k.present(HOLDER, h["card"])
    screen.get_by_test_id("go-query-password").click()
    screen.get_by_test_id("in-old").fill(h["password"])
    screen.get_by_test_id("in-new").fill("864202")
    shot(screen, "query-password-form")
    screen.get_by_test_id("submit").click()
    expect(screen.get_by_test_id("message")).to_contain_text("查询密码已修改")
    shot(screen, "query-password-done")
    k.remove(HOLDER)
    # the new query password works where it counts: a card-less loss report, then unlock
    k.sim("report-loss", "--number", h["number"], "--password", "864202")
    k.sim("unlock", "--number", h["number"], "--password", "864202")


def test_screen_full_reissue(screen: Page, k: Kiosk, tmp_path: Path) -> None:
    h = k.holder(topup=5000)
    screen.get_by_test_id("go-reissue").click()
    screen.get_by_test_id("in-number").fill(h["number"])
    screen.get_by_test_id("in-id_card").fill(h["id_card"])
    screen.get_by_test_id("submit").click()
    expect(screen.get_by_test_id("fee")).to_have_text("¥20.00")
    expect(screen.get_by_test_id("balance-after")).to_have_text("¥30.00")
    shot(screen, "reissue-quote")
    screen.get_by_test_id("confirm").click()
    expect(screen.get_by_test_id("state")).to_have_attribute(
        "data-state", "take_card", timeout=30_000
    )
    expect(screen.get_by_test_id("message")).to_contain_text("请取走新卡")
    shot(screen, "reissue-take-card")
    card_no = screen.get_by_test_id("new-card").inner_text()
    new = k.disp.take(tmp_path / "screen-new.img")
    k.pos.wait_card_known(card_no)
    assert k.sale(new, 100)["approved"]
    assert k.balance(h["number"]) == 5000 - 2000 - 100


def test_screen_idle_timeout_forgets_the_visit(screen: Page, k: Kiosk) -> None:
    h = k.holder(topup=777)
    k.present(HOLDER, h["card"])
    screen.get_by_test_id("go-balance").click()
    expect(screen.get_by_test_id("balance")).to_have_text("¥7.77")
    k.remove(HOLDER)
    screen.get_by_test_id("go-report-loss").click()
    screen.get_by_test_id("in-number").fill(h["number"])
    expect(screen.get_by_test_id("state")).to_have_attribute(
        "data-state", "idle", timeout=3_000 + IDLE_S * 1000
    )
    expect(screen.get_by_test_id("account")).to_be_hidden()
    expect(screen.get_by_test_id("form")).to_be_hidden()  # what was keyed is gone
    expect(screen.get_by_test_id("menu")).to_be_visible()
    shot(screen, "idle")
