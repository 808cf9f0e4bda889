"""The self-service kiosk (issue 11) through the real lower layers: ``ykt kiosk`` with its
holder's reader and its encoder in a private pcscd (vpcd slots), the simulated CRT-591 on a
pseudo-terminal (``ykt sim dispenser``), a real server, and a real POS on a third vpcd slot
that the same card images are carried to.  Driven as a test engineer would: ``ykt sim kiosk``.

The "Done when" of the issue: the consumption password lives on the card (a POS accepts only the
new one, offline too); a daily limit of 80.00 lets a 70.00 sale through without a password; a
loss report stops the card at every POS within 3 s and unlock restores it; a reissue takes one
blank, charges the fee once, the new card sells and the old one is declined; a kiosk SIGKILLed
mid-encode and restarted ends with the fee charged once and exactly one working new card; a
consumer card's reissue is refused naming the desk."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from sim import cardimage
from sim.control import AgentControl
from sim.harness import pcscd
from sim.harness.ykt import KioskProcess
from sim.mifare import MifareClassic1K
from sim.vicc import VirtualCard
from sync import codes
from tests.card_helpers import issue_image, server_keys
from tests.helpers import ROOT, PosProc, ServerProc, id_card, wait_until, ykt
from tests.phone_helpers import Phone, png
from tests.posutil import restart_server, server_away, wait_account_cached
from tests.test_screens import CHROMIUM_ARGS

pytestmark = pytest.mark.slow

HOLDER, ENCODER, POS = 0, 1, 2
NEW_PIN = "246802"
IDLE_S = 5  # the kiosk's idle timeout in these tests (--idle)


def initial_password(n: int) -> str:
    c = id_card(n)
    return c[-7:-1] if c[-1] == "X" else c[-6:]


class Dispenser:
    """One ``ykt sim dispenser`` unit on a pty, its encoder in the vpcd slot ENCODER."""

    def __init__(self, readers: pcscd.VirtualReaders, name: str, blanks: int) -> None:
        self.dir, self.name = str(readers.dir), name
        out = ykt(
            "sim", "dispenser", "start", "--dir", self.dir, "--name", name,
            "--blanks", str(blanks), "--encoder-slot", str(ENCODER), "--json",
        )  # fmt: skip
        self.url = f"serial://{json.loads(out.stdout)['device']}?baud=9600"

    def cli(self, *args: str) -> dict[str, Any]:
        out = ykt("sim", "dispenser", *args, "--dir", self.dir, "--name", self.name, "--json")
        return dict(json.loads(out.stdout))

    def take(self, out: Path) -> MifareClassic1K:
        self.cli("take", "--out", str(out))
        return cardimage.load(out)

    def stop(self) -> None:
        ykt("sim", "dispenser", "stop", "--dir", self.dir, "--name", self.name, check=False)


class Kiosk:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.stack = contextlib.ExitStack()
        self.readers = pcscd.VirtualReaders(tmp / "readers")
        self.readers.start(3)
        self.stack.callback(self.readers.stop)
        self.server = ServerProc(tmp / "server").start()
        self.stack.callback(lambda: self.server.stop())
        self.keys = server_keys(self.server)
        env = {"PCSCLITE_CSOCK_NAME": str(self.readers.socket_path)}
        self.env = env
        self.pos = PosProc(
            tmp / "pos",
            self.server,
            token=self.server.enroll_token("canteen-k"),
            reader="pcsc://" + self.readers.slot(POS)["name"],
            env=env,
        ).start()
        self.stack.callback(lambda: self.pos.stop())
        self.disp = Dispenser(self.readers, "kd", blanks=24)
        self.stack.callback(self.disp.stop)
        self.kiosk = self.start_kiosk(token=self.server.enroll_token("kiosk-1", role="kiosk"))
        self.stack.callback(lambda: self.kiosk.stop())
        self.cards: dict[int, VirtualCard] = {}
        self.stack.callback(self.remove_all)
        self.n = 600

    def start_kiosk(self, token: str | None = None, **env: str) -> KioskProcess:
        proc = KioskProcess(
            self.tmp / "kiosk",
            server_url=self.server.url,
            token=token,
            reader="pcsc://" + self.readers.slot(HOLDER)["name"],
            encoder="pcsc://" + self.readers.slot(ENCODER)["name"],
            dispenser=self.disp.url,
            camera="sim://kcam",  # the app's code is shown to it (ykt sim kiosk --auth-code)
            env={**self.env, **env},
            extra=("--idle", str(IDLE_S)),
        )
        return proc.start()

    # -- cards --------------------------------------------------------------------------------
    def holder(self, kind: str = "student", topup: int = 30000) -> dict[str, Any]:
        """A new account with a card image the desk wrote; returns its facts and the image."""
        self.n += 1
        n, number = self.n, f"K{self.n}"
        self.server.add_account(number, n, kind, topup_fen=topup)
        uid = f"04{n:06X}"
        path = self.tmp / f"{number}.img"
        rec = issue_image(self.server, number, uid, path, self.keys)
        return {
            "number": number,
            "id_card": id_card(n),
            "password": initial_password(n),
            "card_no": rec["card_no"],
            "card": cardimage.load(path),
        }

    def present(self, slot: int, card: MifareClassic1K) -> None:
        self.remove(slot)
        card.power_on()
        vc = VirtualCard(card, self.readers.slot(slot)["port"]).start()
        vc.wait_inserted()
        self.cards[slot] = vc

    def remove(self, slot: int) -> None:
        vc = self.cards.pop(slot, None)
        if vc is not None:
            vc.remove()

    def remove_all(self) -> None:
        for slot in list(self.cards):
            self.remove(slot)

    # -- doing things -------------------------------------------------------------------------
    def sim(self, action: str, *args: str, check: bool = True) -> Any:
        out = ykt("sim", "kiosk", "--agent", self.kiosk.url, action, *args, "--json", check=check)
        return json.loads(out.stdout) if out.returncode == 0 else out

    def sale(self, card: MifareClassic1K, fen: int, pin: str | None = None) -> dict[str, Any]:
        self.present(POS, card)
        try:
            return AgentControl(self.pos.url, timeout=10).sale(fen, pin=pin)
        finally:
            self.remove(POS)
            wait_until(lambda: "ready" in self.pos.status()["reader_status"], 5)

    def balance(self, number: str) -> int:
        return int(self.server.account(number)["balance_fen"])


@pytest.fixture(scope="module")
def k(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    rig = Kiosk(tmp_path_factory.mktemp("kiosk"))
    try:
        yield rig
    finally:
        rig.stack.close()


def test_balance_of_the_card_on_the_reader(k: Kiosk) -> None:
    h = k.holder(topup=12345)
    k.present(HOLDER, h["card"])
    out = k.sim("balance")
    assert out["number"] == h["number"] and out["balance_fen"] == 12345
    assert out["card_no"] == h["card_no"] and out["status"] == "normal"
    assert ("topup", 12345) in [(r["kind"], r["amount_fen"]) for r in out["recent"]]  # R9
    assert k.sim("pull-transition")["moved_fen"] == 0  # R7: nothing in the transition balance
    k.remove(HOLDER)


def test_the_new_consumption_password_lives_on_the_card_online_and_offline(k: Kiosk) -> None:
    h = k.holder()
    old = h["password"]
    k.present(HOLDER, h["card"])
    out = k.sim("change-consume-password", "--old", old, "--new", NEW_PIN)
    assert out["written"] is True
    refused = k.sim("change-consume-password", "--old", old, "--new", "135791", check=False)
    assert refused.returncode != 0 and "消费密码错误" in refused.stderr
    assert k.sim("set-limit", "--amount", "10.00", "--pin", NEW_PIN)["limit_fen"] == 1000
    k.remove(HOLDER)
    k.pos.wait_card_known(h["card_no"])
    wait_until(lambda: k.server.account(h["number"])["limit_fen"] == 1000)
    declined = k.sale(h["card"], 2000, pin=old)
    assert not declined["approved"] and declined["code"] == "wrong_pin", declined
    assert k.sale(h["card"], 2000, pin=NEW_PIN)["approved"]
    with server_away(k.server, k.pos):
        off_declined = k.sale(h["card"], 1500, pin=old)
        assert not off_declined["approved"] and off_declined["code"] == "wrong_pin"
        off = k.sale(h["card"], 1500, pin=NEW_PIN)
        assert off["approved"] and off.get("offline"), off


def test_a_limit_of_80_lets_a_70_sale_through_without_a_password(k: Kiosk) -> None:
    h = k.holder()
    k.present(HOLDER, h["card"])
    assert k.sim("set-limit", "--amount", "80.00", "--pin", h["password"])["limit_fen"] == 8000
    k.remove(HOLDER)
    k.pos.wait_card_known(h["card_no"])
    wait_until(lambda: k.server.account(h["number"])["limit_fen"] == 8000)
    out = k.sale(h["card"], 7000)
    assert out["approved"], out


def test_report_loss_stops_the_card_at_the_pos_within_3_s_and_unlock_restores_it(k: Kiosk) -> None:
    h = k.holder()
    k.pos.wait_card_known(h["card_no"])
    cred = ("--number", h["number"], "--password", h["password"])
    aid = int(k.server.account(h["number"])["id"])
    k.sim("report-loss", *cred)
    reported = time.monotonic()  # the kiosk has answered: the server recorded the loss
    wait_account_cached(k.pos, aid, status="lost")  # the POS's feed brought it
    assert time.monotonic() - reported < 3.0
    declined = k.sale(h["card"], 100)
    assert not declined["approved"] and "挂失" in declined["reason"], declined
    assert k.sim("found-card", *cred)["found"] == []  # R17: nobody handed it in yet
    k.sim("unlock", *cred)
    assert wait_until(lambda: k.sale(h["card"], 100)["approved"], 5)


def test_a_reissue_takes_one_blank_charges_once_and_only_the_new_card_sells(
    k: Kiosk, tmp_path: Path
) -> None:
    h = k.holder(topup=10000)
    before = k.disp.cli("status")
    out = k.sim("reissue", "--number", h["number"], "--id-card", h["id_card"])
    assert set(out) == {"order_id", "fee_fen", "card_no", "uid", "balance_fen"}
    assert out["fee_fen"] == 2000 and out["balance_fen"] == 8000
    after = k.disp.cli("status")
    assert after["hopper"] == before["hopper"] - 1 and after["at_mouth"] == out["uid"]
    new = k.disp.take(tmp_path / "new.img")
    k.pos.wait_card_known(out["card_no"])
    assert k.sale(new, 300)["approved"]
    old = k.sale(h["card"], 300)
    assert not old["approved"], old
    assert k.balance(h["number"]) == 10000 - 2000 - 300


def test_a_consumer_cards_reissue_is_refused_naming_the_desk(k: Kiosk) -> None:
    h = k.holder(kind="consumer")
    before = k.disp.cli("status")
    out = k.sim("reissue", "--number", h["number"], "--id-card", h["id_card"], check=False)
    assert out.returncode != 0 and "服务台" in out.stderr and "service desk" in out.stderr
    assert k.disp.cli("status")["hopper"] == before["hopper"]


#: where the kiosk is SIGKILLed (edge/kiosk/engine.py crash points), and what the restart does:
#: whether the order is finished, and how many cards it put into the reject bin
CRASHES = [
    ("fed", "undone", 1),  # a blank at the encoder, the server not asked: nothing charged
    ("ordered", "at_mouth", 1),  # the server's order, nothing written yet: a fresh blank
    ("encode:20", "at_mouth", 1),  # mid-encode: the half-encoded card to the reject bin
    ("encoded", "at_mouth", 0),  # written and read back: verified again, issued
    ("done", "at_mouth", 0),  # the order closed: issued
]


@pytest.mark.parametrize(("where", "ends", "rejected"), CRASHES, ids=[c[0] for c in CRASHES])
def test_a_kiosk_sigkilled_at_any_step_ends_with_one_fee_and_one_working_card(
    k: Kiosk, tmp_path: Path, where: str, ends: str, rejected: int
) -> None:
    h = k.holder(topup=10000)
    k.kiosk.stop()
    k.kiosk = k.start_kiosk(YKT_KIOSK_CRASH=where)
    out = k.sim("reissue", "--number", h["number"], "--id-card", h["id_card"], check=False)
    assert out.returncode != 0  # the kiosk died
    crashed = k.kiosk
    assert crashed.proc is not None and crashed.proc.wait(10) == -signal.SIGKILL
    crashed.stop()
    assert k.disp.cli("status")["at_mouth"] is None  # nothing handed out yet
    k.kiosk = k.start_kiosk()  # the restart finishes or undoes the order
    done = wait_until(lambda: (s := k.kiosk.status())["open_orders"] == [] and s, 30)
    (order,) = [o for o in done["orders"] if o["number"] == h["number"]]
    assert (order["step"], order["rejected"]) == (ends, rejected), order
    status = k.disp.cli("status")
    if ends == "undone":
        assert status["at_mouth"] is None and status["at_encoder"] is None
        assert k.balance(h["number"]) == 10000  # nothing charged
        assert k.sale(h["card"], 100)["approved"]  # the old card still works
        return
    assert status["at_mouth"] == order["uid"]
    assert k.balance(h["number"]) == 10000 - 2000  # the fee once
    new = k.disp.take(tmp_path / "new.img")
    k.pos.wait_card_known(order["card_no"])
    assert k.sale(new, 100)["approved"]
    assert not k.sale(h["card"], 100)["approved"]


def test_card_correction_and_electricity_with_the_card_on_the_reader(k: Kiosk) -> None:
    h = k.holder(topup=10000)
    k.server.admin().call(
        "POST", "/v1/admin/electricity/buildings", {"code": "B7", "name": "7号楼", "rooms": ["301"]}
    )
    k.present(HOLDER, h["card"])
    assert k.sim("correct")["written"] is True
    cred = ("--password", h["password"])
    out = k.sim("electricity", "--building", "B7", "--room", "301", "--amount", "15.00", *cred)
    assert out["amount_fen"] == 1500, out
    k.remove(HOLDER)
    assert k.balance(h["number"]) == 10000 - 1500
    k.pos.wait_card_known(h["card_no"])
    assert k.sale(h["card"], 100)["approved"]  # the corrected card still sells


def test_a_reissue_by_the_apps_authentication_code_shown_to_the_kiosk(
    k: Kiosk, tmp_path: Path
) -> None:
    h = k.holder(topup=5000)
    phone = Phone(k.server, h["number"], h["password"], tmp_path / "w.json")
    picture = tmp_path / "auth.png"
    picture.write_bytes(png(phone.code(codes.Kind.AUTH)))
    out = k.sim("reissue", "--auth-code", str(picture))
    assert out["fee_fen"] == 2000 and out["balance_fen"] == 3000
    new = k.disp.take(tmp_path / "by-code.img")
    k.pos.wait_card_known(out["card_no"])
    assert k.sale(new, 100)["approved"]


@pytest.mark.parametrize("where", ["encoder", "mouth"])
def test_a_jammed_dispenser_is_reset_and_the_reissue_finishes_charged_once(
    k: Kiosk, tmp_path: Path, where: str
) -> None:
    h = k.holder(topup=5000)
    k.disp.cli("fault", "--jam-at", where)
    out = k.sim("reissue", "--number", h["number"], "--id-card", h["id_card"])
    assert out["balance_fen"] == 3000 and k.balance(h["number"]) == 3000
    assert k.disp.cli("status")["at_mouth"] == out["uid"]
    new = k.disp.take(tmp_path / f"jam-{where}.img")
    k.pos.wait_card_known(out["card_no"])
    assert k.sale(new, 100)["approved"]


def test_server_unreachable_is_said_in_plain_words_and_passes(k: Kiosk) -> None:
    h = k.holder()
    k.present(HOLDER, h["card"])
    k.server.stop(signal.SIGKILL)
    try:
        out = k.sim("balance", check=False)
        assert out.returncode != 0 and "连不上" in out.stderr and "service desk" in out.stderr
        notices = k.kiosk.status()["screen"]["notices"]
        assert [n["code"] for n in notices] == ["server"], notices
    finally:
        restart_server(k.server)
    assert k.sim("balance")["number"] == h["number"]
    assert k.kiosk.status()["screen"]["notices"] == []
    k.remove(HOLDER)


# -- the touch screen in Debian's Chromium (Playwright) ---------------------------------------------
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
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", "idle")
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
