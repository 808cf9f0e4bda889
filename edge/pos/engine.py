"""The POS transaction engine: an explicit state machine.

::

    IDLE ──key_amount──► AMOUNT_KEYED ──confirm──► WAIT_CREDENTIAL ──card / payment code──► (decide)
      ▲                        │ cancel                 │ cancel │ reverse (offline)  │
      │◄───────────────────────┴────────────────────────┘        ▼                    │
      │                                                      WAIT_PROOF ──proof──►    │
      │                                   ┌──── over the limit (R6) ──────────────────┤
      │                                   ▼                                           ▼
      │                               WAIT_PIN ──pin──► (decide) ──► APPROVED | DECLINED
      └──────────────────────────── key_amount / cancel ◄─────────────────────────────┘

The outcome stays on the screens until the cashier keys the next amount or cancels.
Payment codes (forward scan) and reverse scan are decided by :mod:`edge.pos.decide_qr`.

Every transition bumps ``version`` and wakes waiters, so the cashier screen, the customer
screen and ``ykt sim`` long-poll :meth:`Engine.wait` instead of sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from drivers.reader.base import CardTap
from edge.clock import Clock
from edge.errors import EdgeError
from edge.money import format_fen
from edge.pos.decide import Decider, Outcome
from edge.pos.decide_qr import Pending, QrDecider
from edge.rules import check_password_format

log = logging.getLogger(__name__)

PIN_TIMEOUT_MS = 60_000


class State(StrEnum):
    IDLE = "idle"
    AMOUNT_KEYED = "amount_keyed"
    WAIT_CREDENTIAL = "wait_credential"
    WAIT_PIN = "wait_pin"
    WAIT_PROOF = "wait_proof"  # reverse scan: the customer screen shows the payment request
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
    request_text: str | None = None  # reverse scan: the payment request's QR text
    order: int | None = None  # reverse scan: the request's order number

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["amount"] = None if self.amount_fen is None else format_fen(self.amount_fen)
        d["balance"] = None if self.balance_fen is None else format_fen(self.balance_fen)
        return d


class EngineError(EdgeError):
    """An action that the current state does not allow (the control API answers 409)."""


class Engine:
    def __init__(
        self,
        decider: Decider,
        clock: Clock,
        qr: QrDecider | None = None,
        on_armed: Callable[[], None] | None = None,
    ) -> None:
        self.decider = decider
        self.qr = qr
        self.on_armed = on_armed  # a sale now waits for a credential (the camera re-arms)
        self._pending: Pending | None = None
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
            if self._screen.state == State.WAIT_PROOF:
                raise EngineError("a reverse-scan sale is waiting for its proof; cancel first")
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
        self._armed()

    def confirm(self) -> dict[str, Any]:
        with self._cond:
            self._check_not_deciding()
            self._confirm()
            return self._screen.as_dict()

    def cancel(self) -> dict[str, Any]:
        with self._cond:
            self._check_not_deciding()
            self._tap = None
            if self._pending is not None:
                log.warning(
                    "reverse-scan request %d cancelled while waiting for its proof",
                    self._pending.request.order,
                )
            self._pending = None
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

    # -- phone codes (R8, R18) ------------------------------------------------------------------
    def on_code(self, text: str) -> None:
        """A QR source read a code: a payment code pays a sale waiting for a credential; a
        payment proof completes a reverse-scan sale; anything else is ignored (logged)."""
        with self._cond:
            s = self._screen
            pending = self._pending
            qr = self.qr
            if qr is None:
                log.info("code read but this terminal has no code decider: ignored")
                return
            if self._deciding:
                log.info("code read while a sale is being decided: ignored")
                return
            if s.state == State.WAIT_PROOF and pending is not None:
                amount = pending.request.amount_fen

                def fn() -> Outcome:
                    return qr.accept_proof_text(pending, text)

                method = "qr-reverse"
            elif s.state == State.WAIT_CREDENTIAL and s.amount_fen is not None:
                amount = s.amount_fen
                method = "qr-forward"

                def fn() -> Outcome:
                    return qr.decide_forward(text, amount)

            else:
                log.info("code read in state %s: ignored", s.state)
                return
            self._deciding = True
        self._run(fn, amount, method)

    def start_reverse(self) -> dict[str, Any]:
        """Reverse scan (offline only, R8): show a signed payment request for the keyed amount."""
        if self.qr is None:
            raise EngineError("this terminal cannot take phone payments")
        with self._cond:
            self._check_not_deciding()
            s = self._screen
            if s.state not in (State.AMOUNT_KEYED, State.WAIT_CREDENTIAL) or s.amount_fen is None:
                raise EngineError(f"key an amount before reverse scan (state {s.state})")
            amount = s.amount_fen
        pending = self.qr.start_reverse(amount)  # ReverseRefused (RuleError) while online
        with self._cond:
            self._check_not_deciding()
            if self._screen.amount_fen != amount or self._screen.state not in (
                State.AMOUNT_KEYED,
                State.WAIT_CREDENTIAL,
            ):
                raise EngineError("the sale changed while the request was made; try again")
            self._pending = pending
            self._tap = None
            self._set(
                State.WAIT_PROOF,
                amount_fen=amount,
                method="qr-reverse",
                offline=True,
                request_text=pending.text,
                order=pending.request.order,
                message=f"请用手机扫码支付 / scan with the phone to pay {format_fen(amount)}",
            )
            self._armed()
            return self._screen.as_dict()

    def key_proof_code(self, digits: str) -> dict[str, Any]:
        """The cashier keys the proof's short code shown on the phone."""
        with self._cond:
            self._check_not_deciding()
            pending, qr = self._pending, self.qr
            if self._screen.state != State.WAIT_PROOF or pending is None or qr is None:
                raise EngineError(
                    f"no reverse-scan sale waits for a proof (state {self._screen.state})"
                )
            self._deciding = True
        self._run(
            lambda: qr.accept_proof_code(pending, digits),
            pending.request.amount_fen,
            "qr-reverse",
        )
        return self.screen()

    def _armed(self) -> None:
        if self.on_armed is not None:
            try:
                self.on_armed()
            except Exception:  # a camera problem never blocks a sale
                log.exception("re-arming the camera failed")

    def _run(self, fn: Callable[[], Outcome], amount: int, method: str) -> None:
        """Decide a phone-code sale and show it; the caller has set ``_deciding``."""
        try:
            try:
                out = fn()
            except EdgeError as exc:  # e.g. the journal cannot take the record: nothing sold
                log.error("sale failed: %s", exc)
                out = Outcome(
                    False, "error", f"terminal error, nothing charged: {exc}", True, method=method
                )
            except Exception as exc:  # a bug or a malformed answer must not wedge the till
                log.exception("phone-code decision failed")
                out = Outcome(
                    False, "error", f"terminal error: {exc.__class__.__name__}", True, method=method
                )
            with self._cond:
                self._deciding = False
                if method == "qr-reverse" and not out.approved:
                    self._proof_refused(out)
                else:
                    if method == "qr-reverse":
                        self._pending = None
                    self._show(out, amount)
        finally:
            with self._cond:
                self._deciding = False

    def _proof_refused(self, out: Outcome) -> None:
        """A wrong proof keeps the request on screen (until too many keyed codes)."""
        s, pending = self._screen, self._pending
        if pending is None or s.state != State.WAIT_PROOF:
            return
        if out.tries_left == 0:
            self._pending = None
            self._set(
                State.DECLINED,
                amount_fen=s.amount_fen,
                approved=False,
                code=out.code,
                reason=out.reason,
                method="qr-reverse",
                offline=True,
                message=f"失败 / declined: {out.reason}",
            )
            return
        self._set(
            State.WAIT_PROOF,
            amount_fen=s.amount_fen,
            code=out.code,
            reason=out.reason,
            method="qr-reverse",
            offline=True,
            request_text=s.request_text,
            order=s.order,
            tries_left=out.tries_left,
            message=f"凭证无效 / proof refused: {out.reason}",
        )

    def _show(self, out: Outcome, amount: int) -> None:
        common = dict(
            amount_fen=amount,
            code=out.code,
            reason=out.reason,
            method=out.method,
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
