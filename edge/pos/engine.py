"""The POS transaction engine: an explicit state machine.

::

    IDLE ──key_amount──► AMOUNT_KEYED ──confirm──► WAIT_CREDENTIAL ──card──► (decide)
      ▲                        │ cancel                 │ cancel             │
      │◄───────────────────────┴────────────────────────┘                    │
      │                                   ┌──── over the limit (R6) ─────────┤
      │                                   ▼                                  ▼
      │                               WAIT_PIN ──pin──► (decide) ──► APPROVED | DECLINED
      └──────────────────────── key_amount / cancel ◄────────────────────────┘

The outcome stays on the screens until the cashier keys the next amount or cancels.

Every transition bumps ``version`` and wakes waiters, so the cashier screen, the customer
screen and ``ykt sim`` long-poll :meth:`Engine.wait` instead of sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from drivers.reader.base import CardTap
from edge.clock import Clock
from edge.errors import EdgeError
from edge.money import format_fen
from edge.pos.decide import Decider, Outcome
from edge.rules import check_password_format

log = logging.getLogger(__name__)

PIN_TIMEOUT_MS = 60_000


class State(StrEnum):
    IDLE = "idle"
    AMOUNT_KEYED = "amount_keyed"
    WAIT_CREDENTIAL = "wait_credential"
    WAIT_PIN = "wait_pin"
    APPROVED = "approved"
    DECLINED = "declined"


@dataclass
class Screen:
    """What the cashier and customer screens show (the control API's state)."""

    version: int = 0
    state: str = State.IDLE.value
    amount_fen: int | None = None
    message: str = "请输入金额 / key the amount"
    approved: bool | None = None
    code: str | None = None
    reason: str | None = None
    balance_fen: int | None = None
    method: str | None = None
    offline: bool | None = None
    seq: int | None = None
    account: dict[str, Any] = field(default_factory=dict)
    tries_left: int | None = None
    since_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["amount"] = None if self.amount_fen is None else format_fen(self.amount_fen)
        d["balance"] = None if self.balance_fen is None else format_fen(self.balance_fen)
        return d


class EngineError(EdgeError):
    """An action that the current state does not allow (the control API answers 409)."""


class Engine:
    def __init__(self, decider: Decider, clock: Clock) -> None:
        self.decider = decider
        self.clock = clock
        self._cond = threading.Condition()
        self._screen = Screen(since_ms=clock.now_ms())
        self._tap: CardTap | None = None
        # One decision at a time: set (under the condition) by whoever starts a decision,
        # cleared when its outcome is shown.  While it is set the sale cannot be changed,
        # cancelled or decided a second time (a PIN keyed twice would charge twice).
        self._deciding = False

    # -- reading ------------------------------------------------------------------------------
    def screen(self) -> dict[str, Any]:
        with self._cond:
            self._expire_pin()
            return self._screen.as_dict()

    def wait(self, after_version: int, timeout: float) -> dict[str, Any]:
        """The screen once its version is past ``after_version`` (or after ``timeout``).

        A password prompt that times out meanwhile is a change too: the wait wakes at its
        deadline, so a long-polling screen shows the timeout when it happens."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._expire_pin()
                s = self._screen
                left = deadline - time.monotonic()
                if s.version > after_version or left <= 0:
                    return s.as_dict()
                if s.state == State.WAIT_PIN:
                    pin_left = (s.since_ms + PIN_TIMEOUT_MS + 1 - self.clock.now_ms()) / 1000
                    left = min(left, max(pin_left, 0.001))
                self._cond.wait(left)

    # -- transitions --------------------------------------------------------------------------
    def _set(self, state: State, **kw: Any) -> None:
        """Move to ``state``; caller holds the condition."""
        s = Screen(
            version=self._screen.version + 1, state=state.value, since_ms=self.clock.now_ms(), **kw
        )
        self._screen = s
        log.info("pos state %s %s", state.value, kw.get("reason") or kw.get("message") or "")
        self._cond.notify_all()

    def _check_not_deciding(self) -> None:
        if self._deciding:
            raise EngineError("a sale is being decided; wait for its outcome")

    def _expire_pin(self) -> None:
        s = self._screen
        if (
            s.state == State.WAIT_PIN
            and not self._deciding
            and self.clock.now_ms() - s.since_ms > PIN_TIMEOUT_MS
        ):
            self._tap = None
            self._set(
                State.DECLINED,
                amount_fen=s.amount_fen,
                approved=False,
                code="pin_timeout",
                reason="no consumption password keyed in time",
                account=s.account,
                message="超时 / timed out",
            )

    def key_amount(self, amount_fen: int, confirm: bool = True) -> dict[str, Any]:
        with self._cond:
            self._check_not_deciding()
            self._expire_pin()  # a timed-out password prompt does not block the next sale
            if self._screen.state in (State.WAIT_PIN,):
                raise EngineError("a sale is waiting for the consumption password; cancel first")
            self._set(
                State.AMOUNT_KEYED, amount_fen=amount_fen, message=f"金额 {format_fen(amount_fen)}"
            )
            if confirm:
                self._confirm()
            return self._screen.as_dict()

    def _confirm(self) -> None:
        s = self._screen
        if s.state != State.AMOUNT_KEYED:
            raise EngineError(f"nothing to confirm in state {s.state}")
        self._set(
            State.WAIT_CREDENTIAL,
            amount_fen=s.amount_fen,
            message=f"请刷卡 / tap card: {format_fen(s.amount_fen or 0)}",
        )

    def confirm(self) -> dict[str, Any]:
        with self._cond:
            self._check_not_deciding()
            self._confirm()
            return self._screen.as_dict()

    def cancel(self) -> dict[str, Any]:
        with self._cond:
            self._check_not_deciding()
            self._tap = None
            self._set(State.IDLE)
            return self._screen.as_dict()

    def on_card(self, tap: CardTap) -> None:
        """A card arrived on the reader."""
        with self._cond:
            s = self._screen
            if self._deciding or s.state != State.WAIT_CREDENTIAL or s.amount_fen is None:
                log.info("card %s tapped in state %s: ignored", tap.card_no, s.state)
                return
            amount = s.amount_fen
            self._tap = tap
            self._deciding = True
        self._decide(tap, amount, None)

    def key_pin(self, pin: str) -> dict[str, Any]:
        check_password_format(pin)
        with self._cond:
            self._check_not_deciding()
            self._expire_pin()
            s = self._screen
            if s.state != State.WAIT_PIN or self._tap is None or s.amount_fen is None:
                raise EngineError(f"no consumption password is asked for in state {s.state}")
            tap, amount = self._tap, s.amount_fen
            self._deciding = True
        self._decide(tap, amount, pin)
        return self.screen()

    def _decide(self, tap: CardTap, amount: int, pin: str | None) -> None:
        """Decide and show the outcome; the caller has set ``_deciding``."""
        try:
            try:
                out = self.decider.decide(tap, amount, pin)
            except EdgeError as exc:  # e.g. the journal cannot take the record: nothing sold
                log.error("sale failed: %s", exc)
                out = Outcome(False, "error", f"terminal error, nothing charged: {exc}", True)
            except Exception as exc:  # a bug or a malformed answer must not wedge the till
                log.exception("sale decision failed")
                out = Outcome(False, "error", f"terminal error: {exc.__class__.__name__}", True)
            with self._cond:
                self._deciding = False  # in the same hold as the outcome a waiter wakes to
                self._show(out, amount)
        finally:
            with self._cond:
                self._deciding = False

    def _show(self, out: Outcome, amount: int) -> None:
        common = dict(
            amount_fen=amount,
            code=out.code,
            reason=out.reason,
            method="card",
            offline=out.offline,
            account=out.account,
            balance_fen=out.balance_fen,
            tries_left=out.tries_left,
        )
        if out.approved:
            self._tap = None
            self._set(
                State.APPROVED,
                approved=True,
                seq=out.seq,
                message=f"成功 / approved {format_fen(amount)}",
                **common,
            )
        elif out.code == "needs_pin":
            self._set(
                State.WAIT_PIN,
                approved=None,
                message="请输入消费密码 / key the consumption password",
                **common,
            )
        else:
            self._tap = None
            self._set(
                State.DECLINED, approved=False, message=f"失败 / declined: {out.reason}", **common
            )
