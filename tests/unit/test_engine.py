"""The POS engine's state machine (edge/pos/engine.py) in-process, with the real deciders, a
simulated card and a fake server; the clock is moved by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.errors import EngineError
from edge.pos.decide import Outcome
from edge.pos.engine import PIN_TIMEOUT_MS, Engine, State
from sim.reader import SimCard
from sync import codes
from tests.unit.fakes import CARD_ACCT, PIN, PROOF_KEY, World


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def engine(w: World) -> Engine:
    return Engine(w.decider, w.clock, w.qr)


def state(e: Engine) -> str:
    return str(e.screen()["state"])


def tap(w: World, e: Engine) -> tuple[bool, SimCard]:
    card = w.present()
    return e.on_card(card), card


def test_amount_then_card_approves(w: World, engine: Engine) -> None:
    w.online()
    w.approve(CARD_ACCT, 1, 49_000, 3000)
    s = engine.key_amount(1000)
    assert (s["state"], s["amount"]) == (State.WAIT_CREDENTIAL, "¥10.00")
    taken, card = tap(w, engine)
    assert taken and card.gone  # the sale is final: the card was let go
    s = engine.screen()
    assert (s["state"], s["seq"], s["balance_fen"], s["offline"]) == (
        State.APPROVED,
        1,
        49_000,
        False,
    )
    assert s["account"]["number"] == "S2026101" and card.feedback_log == [True]


def test_a_card_without_a_sale_is_ignored(w: World, engine: Engine) -> None:
    taken, card = tap(w, engine)
    assert not taken and not card.gone and state(engine) == State.IDLE
    assert w.records() == []


def test_every_change_moves_the_version_and_wakes_a_waiter(engine: Engine) -> None:
    v0 = engine.screen()["version"]
    engine.key_amount(100, confirm=False)
    assert engine.wait(v0, timeout=0)["state"] == State.AMOUNT_KEYED
    v1 = engine.confirm()["version"]
    assert v1 == v0 + 2
    assert engine.wait(v1, timeout=0)["version"] == v1  # nothing new: the same screen


def test_password_then_approval_on_the_same_card(w: World, engine: Engine) -> None:
    w.offline()
    engine.key_amount(4000)  # over the daily limit of 3000 (R6)
    taken, card = tap(w, engine)
    assert taken and not card.gone  # the card stays while the password is asked for
    s = engine.screen()
    assert (s["state"], s["tries_left"]) == (State.WAIT_PIN, 3)
    s = engine.key_pin("000000")
    assert (s["state"], s["code"], s["tries_left"]) == (State.DECLINED, "wrong_pin", 2)
    assert card.gone
    engine.key_amount(4000)
    tap(w, engine)
    s = engine.key_pin(PIN)
    assert (s["state"], s["offline"]) == (State.APPROVED, True)
    assert [r.kind for r in w.records()] == ["pin_fail", "sale"]


def test_the_password_prompt_times_out(w: World, engine: Engine) -> None:
    w.offline()
    engine.key_amount(4000)
    _taken, card = tap(w, engine)
    w.clock.advance(PIN_TIMEOUT_MS + 1)
    s = engine.screen()
    assert (s["state"], s["code"]) == (State.DECLINED, "pin_timeout")
    assert card.gone
    with pytest.raises(EngineError):
        engine.key_pin(PIN)
    assert w.records() == []


def test_nothing_else_while_the_password_is_asked_for(w: World, engine: Engine) -> None:
    w.offline()
    engine.key_amount(4000)
    tap(w, engine)
    with pytest.raises(EngineError, match="cancel first"):
        engine.key_amount(100)
    assert engine.cancel()["state"] == State.IDLE
    with pytest.raises(EngineError):
        engine.key_pin(PIN)


def test_a_failing_decision_declines_and_the_engine_sells_on(w: World, engine: Engine) -> None:
    w.offline()
    real = w.decider.decide

    def broken(*_a: Any) -> Outcome:
        raise KeyError("a malformed answer")

    w.decider.decide = broken  # type: ignore[method-assign]
    engine.key_amount(100)
    tap(w, engine)
    s = engine.screen()
    assert (s["state"], s["code"]) == (State.DECLINED, "error")
    assert "KeyError" in s["reason"]
    w.decider.decide = real  # type: ignore[method-assign]
    engine.key_amount(100)
    tap(w, engine)
    assert state(engine) == State.APPROVED


def test_a_payment_code_pays_a_waiting_sale(w: World, engine: Engine) -> None:
    w.offline()
    engine.on_code(w.code())  # no sale waits: ignored
    assert state(engine) == State.IDLE
    engine.key_amount(800)
    engine.on_code(w.code())
    s = engine.screen()
    assert (s["state"], s["method"], s["offline"]) == (State.APPROVED, "qr-forward", True)


def test_reverse_scan_waits_for_its_proof(w: World, engine: Engine) -> None:
    w.offline()
    engine.key_amount(600)
    s = engine.start_reverse()
    assert (s["state"], s["order"]) == (State.WAIT_PROOF, 1)
    with pytest.raises(EngineError, match="proof"):
        engine.key_amount(100)
    s = engine.key_proof_code("00000000")
    assert (s["state"], s["code"], s["tries_left"]) == (State.WAIT_PROOF, "forged", 4)
    request = codes.parse_request(codes.unpack_text(s["request_text"]))
    s = engine.key_proof_code(codes.proof_code(PROOF_KEY, request))
    assert (s["state"], s["method"]) == (State.APPROVED, "qr-reverse")
    assert [r.method for r in w.records()] == ["qr-reverse"]


def test_one_reverse_scan_request_at_a_time(
    w: World, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    w.offline()
    engine.key_amount(600)
    assert engine.qr is not None
    make = engine.qr.start_reverse
    refused: list[str] = []

    def meanwhile(amount: int) -> Any:
        # while the request is being made (and stored open), the sale cannot change and no
        # second request can be made: it would be paid for a sale no record closes
        if refused:
            return make(amount)
        refused.append("making")
        for attempt in (engine.start_reverse, lambda: engine.key_amount(100)):
            with pytest.raises(EngineError) as err:
                attempt()
            refused.append(str(err.value))
        return make(amount)

    monkeypatch.setattr(engine.qr, "start_reverse", meanwhile)
    s = engine.start_reverse()
    assert (s["state"], s["order"], s["amount_fen"]) == (State.WAIT_PROOF, 1, 600)
    assert len(refused) == 3 and all("decided" in r for r in refused[1:]), refused
    assert [o.order for o in w.journal.open_orders()] == [1] and w.records() == []


def test_too_many_wrong_proofs_cancel_the_request(w: World, engine: Engine) -> None:
    w.offline()
    engine.key_amount(600)
    engine.start_reverse()
    for _ in range(5):
        s = engine.key_proof_code("00000000")
    assert (s["state"], s["code"]) == (State.DECLINED, "forged")
    # nothing sold; the request is closed by a void record (a phone that paid it is refunded)
    assert [(r.kind, r.x_value("order")) for r in w.records()] == [("void", 1)]
    assert w.journal.open_orders() == []
