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

Card I/O happens on one thread, the agent's reader thread (PC/SC contexts are not shared
between threads): arrivals are handled there, and the consumption password keyed on the
control API is checked there through ``submit`` (a function that runs a job on that thread
and returns a future).  The card stays with the engine while it waits for the password and
is let go (``close``) when the sale is final.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from drivers.errors import DriverError
from drivers.reader.base import PresentCard
from edge.errors import EngineError
from edge.pos.decide import Decider, Outcome
from edge.pos.decide_qr import Pending, QrDecider
from sync.clock import Clock
from sync.errors import YktError
from sync.money import format_fen
from sync.rules import check_password_format

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
    card_no: str | None = None
    detail: str | None = None  # why a card was refused (machine-readable; see Outcome)
    notice: str | None = None  # a device problem (reader, pcscd), shown until it is solved

    def as_dict(self) -> dict[str, Any]:
        # a copy of the fields, the account's too (dataclasses.asdict deep-copies every value
        # and took half a millisecond: the screens poll this)
        d = dict(self.__dict__)
        d["account"] = copy.deepcopy(self.account)
        d["amount"] = None if self.amount_fen is None else format_fen(self.amount_fen)
        d["balance"] = None if self.balance_fen is None else format_fen(self.balance_fen)
        return d


Submit = Callable[[Callable[[], Any]], "Future[Any]"]


def _inline(fn: Callable[[], Any]) -> Future[Any]:
    fut: Future[Any] = Future()
    try:
        fut.set_result(fn())
    except BaseException as exc:
        fut.set_exception(exc)
    return fut


@dataclass(frozen=True)
class TapTiming:
    """Where the time of one card decision went (ns; ``detected`` is wall-clock)."""

    detected_ns: int
    shown_ns: int
    card_io_ns: int
    journal_ns: int
    code: str


class Engine:
    def __init__(
        self,
        decider: Decider,
        clock: Clock,
        qr: QrDecider | None = None,
        on_armed: Callable[[], None] | None = None,
        submit: Submit | None = None,
        card_source: Callable[[], PresentCard | None] | None = None,
        gate: Callable[[], None] | None = None,
    ) -> None:
        self.decider = decider
        self.clock = clock
        self.qr = qr
        self.on_armed = on_armed  # a sale now waits for a credential (the camera re-arms)
        self.submit: Submit = submit or _inline
        self.card_source = card_source
        #: raises when no sale may start now (the till: no cashier signed in)
        self.gate = gate
        self._pending: Pending | None = None
        self._cond = threading.Condition()
        self._screen = Screen(since_ms=clock.now_ms())
        self._card: PresentCard | None = None
        # One decision at a time: set (under the condition) by whoever starts a decision,
        # cleared when its outcome is shown.  While it is set the sale cannot be changed,
        # cancelled or decided a second time (a PIN keyed twice would charge twice).
        self._deciding = False
        self._notice: str | None = None
        self.timings: list[TapTiming] = []

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
            version=self._screen.version + 1,
            state=state.value,
            since_ms=self.clock.now_ms(),
            notice=self._notice,
            **kw,
        )
        self._screen = s
        log.info("pos state %s %s", state.value, kw.get("reason") or kw.get("message") or "")
        self._cond.notify_all()

    def set_notice(self, notice: str | None) -> None:
        """Show (or clear) a device problem on the screens."""
        with self._cond:
            if notice == self._notice:
                return
            self._notice = notice
            s = self._screen
            s.notice = notice
            s.version += 1
            self._cond.notify_all()

    def _let_go(self) -> None:
        """Let go of the card we hold (on the card thread); caller holds the condition."""
        card, self._card = self._card, None
        if card is not None:
            self.submit(card.close)

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
            self._let_go()
            self._set(
                State.DECLINED,
                amount_fen=s.amount_fen,
                approved=False,
                code="pin_timeout",
                reason="no consumption password keyed in time",
                account=s.account,
                message="超时 / timed out",
            )

    def touch(self) -> None:
        """Something the screens show besides the sale changed (the till): wake them."""
        with self._cond:
            self._screen.version += 1
            self._cond.notify_all()

    def key_amount(self, amount_fen: int, confirm: bool = True) -> dict[str, Any]:
        if self.gate is not None:
            self.gate()
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
            self._let_go()
            if self._pending is not None:
                self._close_pending("cancelled by the cashier while waiting for its proof")
            self._set(State.IDLE)
            return self._screen.as_dict()

    def _close_pending(self, why: str) -> None:
        """Close the reverse-scan request on screen without a sale (a ``void`` record: a
        phone that paid it is refunded); caller holds the condition.  When the journal cannot
        take the record the request stays open in it and is closed at the next request or
        start (QrDecider.close_open)."""
        pending, self._pending = self._pending, None
        if pending is None or self.qr is None:
            return
        try:
            self.qr.void(pending, why)
        except YktError as exc:
            log.error("reverse-scan request %d not closed yet: %s", pending.request.order, exc)

    @property
    def waiting_for_card(self) -> bool:
        with self._cond:
            return not self._deciding and self._screen.state == State.WAIT_CREDENTIAL

    def on_card(self, card: PresentCard) -> bool:
        """A card arrived on the reader (called on the card thread).  False when no sale is
        waiting for one: the caller lets go of the card."""
        with self._cond:
            s = self._screen
            if self._deciding or s.state != State.WAIT_CREDENTIAL or s.amount_fen is None:
                log.info("card presented on %s in state %s: ignored", card.reader, s.state)
                return False
            amount = s.amount_fen
            self._card = card
            self._deciding = True
        self._finish(self._run_decider(card, amount, None), amount, card)
        return True

    def key_pin(self, pin: str) -> dict[str, Any]:
        check_password_format(pin)
        with self._cond:
            self._check_not_deciding()
            self._expire_pin()
            s = self._screen
            if s.state != State.WAIT_PIN or self._card is None or s.amount_fen is None:
                raise EngineError(f"no consumption password is asked for in state {s.state}")
            card, amount = self._card, s.amount_fen
            self._deciding = True
        try:
            self.submit(lambda: self._pin_on_card(card, amount, pin)).result()
        finally:
            with self._cond:
                self._deciding = False
        return self.screen()

    def _pin_on_card(self, card: PresentCard, amount: int, pin: str) -> None:
        out = self._run_decider(card, amount, pin)
        if out.code == "card_gone" and self.card_source is not None:
            # the card was lifted and put back while the password was keyed: use it again
            # if it is the same card
            try:
                again = self.card_source()
            except DriverError:
                again = None
            if again is not None and _same_card(again, card):
                with self._cond:
                    self._card = again
                card = again
                out = self._run_decider(card, amount, pin)
        self._finish(out, amount, card)

    def _run_decider(self, card: PresentCard, amount: int, pin: str | None) -> Outcome:
        try:
            return self.decider.decide(card, amount, pin)
        except YktError as exc:  # e.g. the journal cannot take the record: nothing sold
            log.error("sale failed: %s", exc)
            return Outcome(False, "error", f"terminal error, nothing charged: {exc}", True)
        except Exception as exc:  # a bug or a malformed answer must not wedge the till
            log.exception("sale decision failed")
            return Outcome(False, "error", f"terminal error: {exc.__class__.__name__}", True)

    def _finish(self, out: Outcome, amount: int, card: PresentCard) -> None:
        """Show the outcome; the caller has set ``_deciding``."""
        try:
            with self._cond:
                self._deciding = False  # in the same hold as the outcome a waiter wakes to
                self._show(out, amount, card)
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
            self._deciding = True  # one request at a time; the sale cannot change meanwhile
        try:
            pending = self.qr.start_reverse(amount)  # ReverseRefused (RuleError) while online
        except BaseException:
            with self._cond:
                self._deciding = False
            raise
        with self._cond:
            self._deciding = False
            if self._screen.amount_fen != amount or self._screen.state not in (
                State.AMOUNT_KEYED,
                State.WAIT_CREDENTIAL,
            ):
                try:  # never shown: close it now (a concurrent request may be on screen)
                    self.qr.void(pending, "the sale changed before the request was shown")
                except YktError as exc:
                    log.error(
                        "reverse-scan request %d not closed yet: %s", pending.request.order, exc
                    )
                raise EngineError("the sale changed while the request was made; try again")
            self._pending = pending
            self._let_go()
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
            except YktError as exc:  # e.g. the journal cannot take the record: nothing sold
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
            self._close_pending("too many wrong proof codes")
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

    def _show(self, out: Outcome, amount: int, card: PresentCard | None = None) -> None:
        common = dict(
            card_no=out.card_no,
            detail=out.detail,
            amount_fen=amount,
            code=out.code,
            reason=out.reason,
            method=out.method,
            offline=out.offline,
            account=out.account,
            balance_fen=out.balance_fen,
            tries_left=out.tries_left,
        )
        final = out.code != "needs_pin"
        if out.approved:
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
            self._set(
                State.DECLINED, approved=False, message=f"失败 / declined: {out.reason}", **common
            )
        if card is None:
            return
        self.timings.append(
            TapTiming(
                card.detected_ns,
                time.time_ns(),
                out.timing.get("card_io", 0),
                out.timing.get("journal", 0),
                out.code,
            )
        )
        del self.timings[:-2000]
        if final:
            feedback = getattr(card, "feedback", None)
            if feedback is not None:
                feedback(out.approved)
            if self._card is card:
                self._card = None
            card.close()


def _same_card(a: PresentCard, b: PresentCard) -> bool:
    try:
        return bool(a.uid) and a.uid == b.uid
    except DriverError:
        return False
