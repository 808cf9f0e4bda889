"""The POS transaction engine as a state machine (edge/pos/engine.py).

The walk through the states runs on a real agent process through its control API (the path the
cashier screen and ``ykt sim`` use).  The consumption-password timeout needs a clock the test
moves, so those tests build the engine in-process, with the real decider, journal and cache
against the real server, and an :class:`sync.clock.ManualClock`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from edge.errors import EngineError
from edge.pos.engine import PIN_TIMEOUT_MS, State
from sim.control import AgentControl
from sim.errors import SimUsageError
from sync.errors import RuleError
from tests.helpers import PosProc, ServerProc
from tests.posutil import NewCards, Rig, Shop, running_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory, "engine") as running:
        yield running


@pytest.fixture
def ctl(shop: tuple[ServerProc, PosProc]) -> Iterator[AgentControl]:
    c = AgentControl(shop[1].url, timeout=10)
    yield c
    c.cancel()  # every test leaves the engine idle for the next


new_card = NewCards("E", 100, topup_fen=20000)


def post(pos: PosProc, path: str, body: Any = None) -> requests.Response:
    return requests.post(pos.url + path, json=body, headers=pos.control_headers(), timeout=10)


def test_walk_idle_amount_credential_approved_idle(
    shop: tuple[ServerProc, PosProc], ctl: AgentControl
) -> None:
    server, pos = shop
    card = new_card(shop)
    assert ctl.cancel()["state"] == State.IDLE
    keyed = post(pos, "/control/amount", {"amount_fen": 1250, "confirm": False}).json()
    assert keyed["state"] == State.AMOUNT_KEYED and keyed["amount"] == "¥12.50"
    armed = post(pos, "/control/confirm").json()
    assert armed["state"] == State.WAIT_CREDENTIAL and armed["version"] == keyed["version"] + 1
    ctl.present(card["card_no"])
    done = ctl.wait(armed["version"], ("approved", "declined"), 10)
    assert done["state"] == State.APPROVED and done["approved"] is True
    assert done["balance_fen"] == 20000 - 1250 and done["seq"] >= 1 and done["offline"] is False
    assert ctl.cancel()["state"] == State.IDLE
    pos.wait_synced()
    assert server.account(card["number"])["balance_fen"] == 18750


def test_over_limit_asks_pin_then_approved_or_declined(
    shop: tuple[ServerProc, PosProc], ctl: AgentControl
) -> None:
    card = new_card(shop)
    keyed = ctl.amount(5001)  # R6: over the ¥50.00 default limit from the first purchase
    ctl.present(card["card_no"])
    asked = ctl.wait(keyed["version"], ("wait_pin", "approved", "declined"), 10)
    assert asked["state"] == State.WAIT_PIN and asked["code"] == "needs_pin"
    assert asked["tries_left"] == 3 and "R6" in asked["reason"]
    wrong = "000000" if card["password"] != "000000" else "111111"
    ctl.pin(wrong)
    declined = ctl.wait(asked["version"], ("approved", "declined"), 10)
    assert declined["state"] == State.DECLINED and declined["code"] == "wrong_pin"
    assert declined["tries_left"] == 2
    # a new amount from DECLINED starts the next sale
    again = ctl.amount(5001)
    assert again["state"] == State.WAIT_CREDENTIAL
    ctl.present(card["card_no"])
    asked = ctl.wait(again["version"], ("wait_pin", "approved", "declined"), 10)
    assert asked["state"] == State.WAIT_PIN
    ctl.pin(card["password"])
    ok = ctl.wait(asked["version"], ("approved", "declined"), 10)
    assert ok["state"] == State.APPROVED and ok["balance_fen"] == 20000 - 5001


def test_cancel_from_every_state(shop: tuple[ServerProc, PosProc], ctl: AgentControl) -> None:
    _, pos = shop
    card = new_card(shop)
    for confirm in (False, True):  # AMOUNT_KEYED, WAIT_CREDENTIAL
        s = post(pos, "/control/amount", {"amount_fen": 300, "confirm": confirm}).json()
        assert s["state"] == (State.WAIT_CREDENTIAL if confirm else State.AMOUNT_KEYED)
        idle = ctl.cancel()
        assert idle["state"] == State.IDLE and idle["amount_fen"] is None
    # WAIT_PIN: cancel drops the sale; a PIN keyed afterwards is refused
    s = ctl.amount(6000)
    ctl.present(card["card_no"])
    ctl.wait(s["version"], ("wait_pin",), 10)
    assert ctl.cancel()["state"] == State.IDLE
    with pytest.raises(SimUsageError, match="no consumption password is asked"):
        ctl.pin(card["password"])
    # APPROVED and DECLINED
    for amount, final in ((300, State.APPROVED), (30000, State.DECLINED)):
        s = ctl.amount(amount)
        ctl.present(card["card_no"])
        got = ctl.wait(s["version"], ("approved", "declined", "wait_pin"), 10)
        if got["state"] == State.WAIT_PIN:  # 300 spent + 30000 is over the limit
            ctl.pin(card["password"])
            got = ctl.wait(got["version"], ("approved", "declined"), 10)
        assert got["state"] == final, got
        assert ctl.cancel()["state"] == State.IDLE
    assert ctl.state()["state"] == State.IDLE


def test_confirm_without_amount_is_refused(shop: tuple[ServerProc, PosProc]) -> None:
    _, pos = shop
    AgentControl(pos.url).cancel()
    r = post(pos, "/control/confirm")
    assert r.status_code == 409 and "nothing to confirm" in r.json()["error"]["message"]


def test_tap_in_idle_is_ignored(shop: tuple[ServerProc, PosProc], ctl: AgentControl) -> None:
    server, pos = shop
    card = new_card(shop)
    idle = ctl.cancel()
    head = pos.status()["journal_head"]
    ctl.present(card["card_no"])
    # nothing may happen: a long-poll for any change comes back with the same screen
    later = ctl._call("GET", f"/control/state?after={idle['version']}&wait=0.5")
    assert later["version"] == idle["version"] and later["state"] == State.IDLE
    assert pos.status()["journal_head"] == head
    assert server.account(card["number"])["balance_fen"] == 20000


# -- in-process engine with a clock the test moves ------------------------------------------
def pin_asked(shop: Shop, rig: Rig) -> dict[str, Any]:
    """A new card tapped on the in-process engine for ¥60.00, over its daily limit: the engine
    asks for the consumption password (R6)."""
    card = new_card(shop)
    rig.engine.key_amount(6000)
    rig.engine.on_card(rig.tap(card))
    return card


def test_pin_timeout_uses_the_injected_clock(shop: tuple[ServerProc, PosProc], rig: Rig) -> None:
    server, _ = shop
    card = pin_asked(shop, rig)
    eng = rig.engine
    assert eng.screen()["state"] == State.WAIT_PIN
    rig.clock.advance(PIN_TIMEOUT_MS)
    assert eng.screen()["state"] == State.WAIT_PIN  # not yet: exactly at the limit
    rig.clock.advance(1)
    s = eng.screen()
    assert s["state"] == State.DECLINED and s["code"] == "pin_timeout" and s["approved"] is False
    with pytest.raises(EngineError):
        eng.key_pin(card["password"])
    assert rig.journal.head_seq == 0
    assert server.account(card["number"])["balance_fen"] == 20000


def test_pin_timeout_frees_the_engine_for_the_next_sale(
    shop: tuple[ServerProc, PosProc], rig: Rig
) -> None:
    """A new amount after the timeout must start a new sale even when no screen was read
    since the password was asked for."""
    card = pin_asked(shop, rig)
    eng = rig.engine
    assert eng.screen()["state"] == State.WAIT_PIN
    rig.clock.advance(PIN_TIMEOUT_MS + 1)
    s = eng.key_amount(1000)
    assert s["state"] == State.WAIT_CREDENTIAL and s["amount_fen"] == 1000
    eng.on_card(rig.tap(card))
    assert eng.screen()["state"] == State.APPROVED


def test_pin_in_time_is_accepted(shop: tuple[ServerProc, PosProc], rig: Rig) -> None:
    card = pin_asked(shop, rig)
    eng = rig.engine
    rig.clock.advance(PIN_TIMEOUT_MS - 1)
    s = eng.key_pin(card["password"])
    assert s["state"] == State.APPROVED and s["balance_fen"] == 14000
    assert rig.journal.head_seq == 1


def test_key_amount_while_pin_asked_is_refused(shop: tuple[ServerProc, PosProc], rig: Rig) -> None:
    pin_asked(shop, rig)
    eng = rig.engine
    with pytest.raises(EngineError, match="cancel first"):
        eng.key_amount(100)
    assert eng.screen()["state"] == State.WAIT_PIN


def test_in_process_tap_in_idle_and_after_outcome_is_ignored(
    shop: tuple[ServerProc, PosProc], rig: Rig
) -> None:
    card = new_card(shop)
    eng = rig.engine
    v = eng.screen()["version"]
    eng.on_card(rig.tap(card))  # idle
    assert eng.screen()["version"] == v and rig.journal.head_seq == 0
    eng.key_amount(500, confirm=False)
    eng.on_card(rig.tap(card))  # amount keyed but not confirmed
    assert eng.screen()["state"] == State.AMOUNT_KEYED and rig.journal.head_seq == 0
    eng.confirm()
    eng.on_card(rig.tap(card))
    assert eng.screen()["state"] == State.APPROVED and rig.journal.head_seq == 1
    eng.on_card(rig.tap(card))  # a second tap after the approval charges nothing
    assert eng.screen()["state"] == State.APPROVED and rig.journal.head_seq == 1


def test_offline_decision_in_process(shop: tuple[ServerProc, PosProc], rig: Rig) -> None:
    """The same engine decides offline from its cache when the server cannot be reached."""
    card = new_card(shop)
    rig.pull()
    rig.client.base_url = "http://127.0.0.1:9"  # nothing listens on the discard port
    eng = rig.engine
    eng.key_amount(700)
    eng.on_card(rig.tap(card))
    s = eng.screen()
    assert s["state"] == State.APPROVED and s["offline"] is True and s["balance_fen"] == 19300
    assert rig.journal.unsynced_offline_fen == 700


def test_concurrent_pins_charge_once(shop: tuple[ServerProc, PosProc], ctl: AgentControl) -> None:
    """A PIN keyed twice at once (a double press, two screens) decides the sale once."""
    server, pos = shop
    card = new_card(shop)
    s = ctl.amount(6000)
    ctl.present(card["card_no"])
    ctl.wait(s["version"], ("wait_pin",), 10)
    gate = threading.Barrier(4)

    def press() -> int:
        gate.wait()
        return post(pos, "/control/pin", {"pin": card["password"]}).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: press(), range(4)))
    assert codes.count(200) >= 1 and set(codes) <= {200, 409}, codes
    assert ctl.state()["state"] == State.APPROVED
    pos.wait_synced()
    acct = server.account(card["number"])
    assert [b["amount_fen"] for b in acct["bills"] if b["kind"] == "sale"] == [-6000]
    assert acct["balance_fen"] == 14000


def test_amount_or_cancel_while_deciding_is_refused(
    shop: tuple[ServerProc, PosProc], rig: Rig
) -> None:
    """While a decision is being made the screen cannot be changed under it."""
    card = new_card(shop)
    eng = rig.engine
    eng.key_amount(500)
    entered, release = threading.Event(), threading.Event()
    real = rig.decider.decide

    def slow(*a: Any) -> Any:
        entered.set()
        release.wait(5)
        return real(*a)

    rig.decider.decide = slow  # type: ignore[method-assign]
    t = threading.Thread(target=eng.on_card, args=(rig.tap(card),))
    t.start()
    try:
        assert entered.wait(5)
        for action in (lambda: eng.key_amount(100), eng.cancel, eng.confirm):
            with pytest.raises(EngineError, match="being decided"):
                action()
        eng.on_card(rig.tap(card))  # a second tap meanwhile is ignored
    finally:
        release.set()
        t.join(5)
    s = eng.screen()
    assert s["state"] == State.APPROVED and s["amount_fen"] == 500 and rig.journal.head_seq == 1


def test_a_failing_decision_is_shown_and_the_engine_moves_on(
    shop: tuple[ServerProc, PosProc], rig: Rig
) -> None:
    card = new_card(shop)
    eng = rig.engine
    real = rig.decider.decide

    def broken(*a: Any) -> Any:
        raise KeyError("approved")  # e.g. a malformed answer from the server

    rig.decider.decide = broken  # type: ignore[method-assign]
    eng.key_amount(500)
    eng.on_card(rig.tap(card))
    s = eng.screen()
    assert s["state"] == State.DECLINED and s["code"] == "error" and "KeyError" in s["reason"]
    rig.decider.decide = real  # type: ignore[method-assign]
    eng.key_amount(500)
    eng.on_card(rig.tap(card))
    assert eng.screen()["state"] == State.APPROVED


def test_non_ascii_digits_are_not_a_password(shop: tuple[ServerProc, PosProc], rig: Rig) -> None:
    pin_asked(shop, rig)
    eng = rig.engine
    with pytest.raises(RuleError):
        eng.key_pin("١٢٣٤٥٦")
    assert eng.screen()["state"] == State.WAIT_PIN


def test_a_long_poll_returns_when_the_pin_times_out(
    shop: tuple[ServerProc, PosProc], rig: Rig
) -> None:
    pin_asked(shop, rig)
    eng = rig.engine
    asked = eng.screen()
    assert asked["state"] == State.WAIT_PIN
    rig.clock.advance(PIN_TIMEOUT_MS + 1)
    t0 = time.monotonic()
    s = eng.wait(asked["version"], 5.0)  # the screen's long-poll
    assert s["state"] == State.DECLINED and s["code"] == "pin_timeout"
    assert time.monotonic() - t0 < 1.0  # not after the whole wait
