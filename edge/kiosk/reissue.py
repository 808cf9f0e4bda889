"""The reissue order (R11) at the kiosk, step by step (the steps: :mod:`edge.kiosk.orders`).

:class:`OrderRunner` drives one order from its journaled step to the card at the mouth: a blank
from the hopper to the encoder, the server's order for that blank's UID (the order id is the
kiosk's: the server charges the fee once per order id), encoding and reading back, closing the
order, the move to the mouth.  Each step is journaled before it is taken, so the same
:meth:`OrderRunner.run` finishes an order a crash interrupted: a card that may be half-encoded
goes into the reject bin and the order takes another blank (same order id: no second fee); an
order the server never made is undone with nothing charged.  A jam (or line noise: the outcome
of a move unknown) is reset and the order carries on; a fault that stays keeps the order open
for the next start.

Tests SIGKILL the kiosk at each step: ``YKT_KIOSK_CRASH=fed|ordered|encoded|done`` or
``encode:N`` (after N APDUs of encoding the new card).
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager

from drivers.dispenser.base import CardDispenser
from drivers.errors import (
    CardError,
    DeviceUnavailable,
    DispenserError,
    DispenserJammed,
    DispenserLineError,
    DriverError,
    HopperEmpty,
)
from drivers.reader.base import PresentCard
from edge.kiosk.common import WORDS, Devices, KioskFault, words
from edge.kiosk.orders import KioskJournal, Order
from edge.kiosk.upstream import KioskServer
from sync.card.app import CampusCard
from sync.card.layout import Counters
from sync.errors import CardRefused, ServerRefused, ServerUnavailable

log = logging.getLogger(__name__)

ENCODER_WAIT_S = 5.0
CRASH_ENV = "YKT_KIOSK_CRASH"  # tests: "STEP" or "encode:N" (SIGKILL the kiosk there)


def _crash_point(name: str) -> None:
    """Tests: SIGKILL this process at ``name`` when ``YKT_KIOSK_CRASH`` names it."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("crash point %s: SIGKILL", name)
        os.kill(os.getpid(), signal.SIGKILL)


class _CrashingCard:
    """A card whose ``transmit`` SIGKILLs the process after ``n`` APDUs (``encode:N``)."""

    def __init__(self, card: PresentCard, n: int) -> None:
        self._card, self._left = card, n
        self.reader, self.atr, self.detected_ns = card.reader, card.atr, card.detected_ns

    @property
    def uid(self) -> bytes:
        return self._card.uid

    def transmit(self, apdu: bytes) -> bytes:
        if self._left <= 0:
            _crash_point(os.environ.get(CRASH_ENV, ""))
        self._left -= 1
        return self._card.transmit(apdu)

    def exclusive(self) -> AbstractContextManager[None]:
        return self._card.exclusive()

    def reset(self) -> None:
        self._card.reset()

    def close(self) -> None:
        self._card.close()


def _maybe_crashing(card: PresentCard) -> PresentCard:
    spec = os.environ.get(CRASH_ENV, "")
    if spec.startswith("encode:"):
        return _CrashingCard(card, int(spec.split(":", 1)[1]))
    return card


class _EncodeFailed(Exception):
    """The card at the encoder was not written or does not read back: it goes to the reject
    bin and the order takes another blank."""


class OrderRunner:
    """Runs reissue orders on the kiosk's devices; ``notice(code, text)`` shows a device or
    server problem on the screen (None: it is over)."""

    def __init__(
        self,
        devices: Devices,
        server: KioskServer,
        journal: KioskJournal,
        notice: Callable[[str, str | None], None],
    ) -> None:
        self.dev = devices
        self.server = server
        self.journal = journal
        self.notice = notice
        #: where the time of the last reissues went, in ms (benchmarks): the blank fed to the
        #: encoder, the server's order, encoding and read-back, the order closed, the card moved
        #: to the mouth, and confirm -> card at the mouth in all
        self.issue_timings: deque[dict[str, float]] = deque(maxlen=100)
        self._mark = time.perf_counter()
        self._lap: dict[str, float] = {}

    def start_lap(self) -> float:
        self._lap = {}
        self._mark = time.perf_counter()
        return self._mark

    def end_lap(self, t0: float) -> None:
        self._lap["total_ms"] = (time.perf_counter() - t0) * 1000
        self.issue_timings.append(dict(self._lap))

    def run(self, order: Order) -> Order:
        """Drive ``order`` from its journaled step to the mouth (also used by :meth:`recover`)."""
        try:
            disp = self.dev.dispenser()
        except DeviceUnavailable as exc:
            raise self._undo_or_keep(order, "dispenser_gone", WORDS["dispenser_gone"]) from exc
        for attempt in range(3):
            try:
                return self._steps(order, disp)
            except (_EncodeFailed, CardError) as exc:
                # the card at the encoder failed (not written, not read back, gone): it goes to
                # the reject bin and the order takes another blank
                log.warning("order %s: the new card failed (%s): reject bin", order.order_id, exc)
                order = self.journal.get(order.order_id) or order
                if attempt == 2:
                    raise self._undo_or_keep(
                        order, "encode_failed", f"写卡失败 / writing the card failed: {exc}"
                    ) from exc
            except (DispenserJammed, DispenserLineError) as exc:  # stuck, or the outcome unknown
                log.warning("order %s: dispenser jammed (%s): reset", order.order_id, exc)
                order = self.journal.get(order.order_id) or order
                if not self._reset(disp) or attempt == 2:
                    self.notice("dispenser", WORDS["dispenser_jammed"])
                    raise self._undo_or_keep(
                        order, "dispenser_jammed", WORDS["dispenser_jammed"]
                    ) from exc
            except HopperEmpty as exc:
                self.notice("dispenser", WORDS["hopper_empty"])
                order = self.journal.get(order.order_id) or order
                raise self._undo_or_keep(order, "hopper_empty", WORDS["hopper_empty"]) from exc
            except (DeviceUnavailable, DispenserError) as exc:
                self.notice("dispenser", WORDS["dispenser_gone"])
                order = self.journal.get(order.order_id) or order
                raise self._undo_or_keep(
                    order, "dispenser_gone", f"{WORDS['dispenser_gone']} ({exc})"
                ) from exc
            except ServerUnavailable as exc:
                self.notice("server", WORDS["server_down"])
                order = self.journal.get(order.order_id) or order
                raise self._undo_or_keep(order, "server_unavailable", WORDS["server_down"]) from exc
            except ServerRefused as exc:
                order = self.journal.get(order.order_id) or order
                text = words(exc.code, exc.message)
                raise self._undo_or_keep(order, exc.code, text, refused=True) from exc
            order = self.journal.get(order.order_id) or order
        raise AssertionError("unreachable")

    def _split(self, name: str) -> None:
        now = time.perf_counter()
        self._lap[name] = self._lap.get(name, 0.0) + (now - self._mark) * 1000
        self._mark = now

    def _reset(self, disp: CardDispenser) -> bool:
        try:
            disp.reset()
            return not disp.status().jammed
        except DispenserError:
            return False

    def _undo_or_keep(
        self, order: Order, code: str, text: str, refused: bool = False
    ) -> KioskFault:
        """A fault stopped ``order``.  Before the server knew of it, the order is undone
        (nothing was charged; a blank at the encoder is captured); so it is when the server
        refused to make it (``refused``, 4xx: nothing was written, and a retry of an order the
        server has would not be refused: the kiosk that opened it is not identified again).
        Otherwise it stays open in the journal and the kiosk finishes it when it can (at its
        next start): the fee is already charged and is never charged again."""
        if order.step == "feeding" or (refused and order.step == "ordered" and not order.answer):
            captured = self.capture_quietly()
            self.journal.step(
                order, "undone", note=f"{code}: nothing charged", rejected=order.rejected + captured
            )
            return KioskFault(code, f"{text}；未扣费 / nothing was charged")
        self.journal.step(order, order.step, note=code)
        return KioskFault(
            code,
            f"{text}；已登记补卡单 {order.order_id}，工本费只收一次，恢复后自动完成或到服务台领取 / "
            f"order {order.order_id} is kept: the fee is charged once; it is finished when the "
            "kiosk works again, or at the service desk",
        )

    def capture_quietly(self) -> int:
        """Put a card in the channel into the reject bin; how many cards went there (0, 1)."""
        try:
            disp = self.dev.dispenser()
            there = disp.status().card_at != "none"
            disp.capture()
            return int(there)
        except (DispenserError, DeviceUnavailable) as exc:
            log.warning("cannot capture the card at the encoder: %s", exc)
            return 0

    def _steps(self, order: Order, disp: CardDispenser) -> Order:
        st = disp.status()
        if st.jammed:
            raise DispenserJammed("jammed", "10")
        if order.step in ("feeding", "ordered", "encoding"):
            keep = (
                order.step == "ordered"
                and st.card_at == "encoder"
                and self._uid_at_encoder() == order.uid
            )
            if st.card_at != "none" and not keep:
                # a card this order cannot hand out: one left at the mouth, one of unknown
                # origin at the encoder, or one a crash or fault left half-encoded
                log.warning(
                    "order %s: the card at the %s goes to the reject bin",
                    order.order_id,
                    st.card_at,
                )
                disp.capture()
                order = self.journal.step(order, order.step, rejected=order.rejected + 1)
            disp.to_encoder()
            _crash_point("fed")
            self._split("feed_ms")
            blank = self.dev.encoder_card(ENCODER_WAIT_S)
            uid = blank.uid.hex().upper()
            order = self.journal.step(order, "ordered", uid=uid)
            answer = self.server.reissue(order.order_id, uid, order.identity)
            card = answer["card"]
            order = self.journal.step(
                order,
                "encoding",
                answer=answer,
                card_no=str(card["card_no"]),
                fee_fen=int(answer["fee_fen"]),
                balance_fen=int(answer["balance_fen"]),
            )
            _crash_point("ordered")
            self._split("order_ms")
            self._encode(order, blank)
            order = self.journal.step(order, "encoded")
            _crash_point("encoded")
            self._split("encode_ms")
        if order.step == "encoded":
            st = disp.status()
            if st.card_at == "encoder":
                try:
                    self._verify(order, self.dev.encoder_card(ENCODER_WAIT_S))
                except _EncodeFailed:
                    self.journal.step(order, "encoding")  # captured and made again
                    raise
            elif st.card_at != "mouth":
                raise KioskFault("card_lost", "新卡不在发卡通道中 / the new card left the channel")
            answer = self.server.reissue_done(order.order_id)
            order = self.journal.step(order, "done", balance_fen=int(answer["balance_fen"]))
            _crash_point("done")
            self._split("done_ms")
        if order.step == "done":
            disp.to_mouth()
            order = self.journal.step(order, "at_mouth")
            self._split("mouth_ms")
        return order

    def _uid_at_encoder(self) -> str | None:
        try:
            return self.dev.encoder_card(ENCODER_WAIT_S).uid.hex().upper()
        except DriverError:
            return None

    def _encode(self, order: Order, blank: PresentCard) -> None:
        card = order.answer["card"]
        blob = base64.b64decode(card["identity"])
        tag = bytes.fromhex(card["tag"])
        try:
            counters = Counters.carried(card.get("counters"))
        except ValueError as exc:
            raise KioskFault("bad_answer", f"the server's card data: {exc}") from exc
        wid = self.journal.write_started(order.card_no, order.uid, f"reissue {order.order_id}")
        try:
            writer = _maybe_crashing(blank)
            with blank.exclusive():
                CampusCard(writer, self.dev.keys()).encode(blob, tag, counters)
            self._verify(order, blank)
        except (DriverError, CardRefused, _EncodeFailed) as exc:
            self.journal.write_ended(wid, f"failed: {exc}")
            raise _EncodeFailed(str(exc)) from exc
        self.journal.write_ended(wid, "ok")

    def _verify(self, order: Order, card: PresentCard) -> None:
        """Read the card back: the card number, UID, generation and tag the server issued."""
        want = order.answer["card"]
        try:
            with card.exclusive():
                proof = CampusCard(card, self.dev.keys()).read_proof()
        except (DriverError, CardRefused) as exc:
            raise _EncodeFailed(f"reading the new card back: {exc}") from exc
        got = (proof["card_no"], proof["uid"], proof["generation"], proof["tag"])
        exp = (want["card_no"], order.uid, want["generation"], str(want["tag"]).upper())
        if got != exp:
            raise _EncodeFailed(f"the new card reads back as {got}, not {exp}")
