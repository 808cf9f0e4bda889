"""The kiosk's two state machines: a holder's visit (the screens) and the reissue order (R11).

**The visit** (``state`` of :meth:`KioskEngine.screen`)::

    idle ──card on the reader──► card ──action──► card (message) ─┐
      │                                                          │ idle timeout, "home",
      ├──card-less action (loss, unlock, lost-card query)────────┤ card taken away
      └──reissue: identify──► quote ──confirm──► issuing ──► take_card ──► idle
                                │                   │
                                └──cancel───────────┴──fault──► fault (what still works)

Every holder action is one call (control API, :mod:`edge.kiosk.control`), answered when it is
decided; the screen follows from :meth:`screen` (long-polled).  After ``idle_s`` without a
touch the visit ends and everything the holder keyed or read is forgotten (not while a card is
being issued).

**The reissue order** (:mod:`edge.kiosk.reissue` runs it, :mod:`edge.kiosk.orders` has the steps): identify (the server's quote:
fee, balance, desk-only card types refused), then on confirmation: a blank from the hopper to
the encoder, the order at the server for that blank's UID (the order id is the kiosk's; the
server charges the fee once per order id), encode, read back and verify, close the order, issue
to the mouth.  Each step is journaled before it is taken, so :meth:`recover` (at start) finishes
or undoes any order a crash or fault interrupted: a card that may be half-encoded is captured
into the reject bin and never handed out; the order is asked again with a fresh blank (same
order id: no second fee) and the new card replaces the half-encoded one at the server.

All device work (readers, dispenser) happens on the caller's thread; the agent calls the
engine from its device thread only (:meth:`edge.kiosk.agent.KioskAgent.submit`).
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.errors import CardGone, DeviceUnavailable, DispenserError, DriverError
from drivers.reader.base import PresentCard
from edge.cache import Cache
from edge.errors import EngineError
from edge.kiosk.common import WORDS, Devices, HolderError, KioskFault, words
from edge.kiosk.orders import KioskJournal
from edge.kiosk.reissue import OrderRunner
from edge.kiosk.upstream import KioskServer
from sync import rules
from sync.card.app import CampusCard
from sync.clock import DEFAULT_TZ, Clock, iso
from sync.errors import CardRefused, RuleError, ServerRefused, ServerUnavailable
from sync.money import format_fen

log = logging.getLogger(__name__)

IDLE_S = 60.0


@dataclass
class Screen:
    state: str = "idle"
    version: int = 0
    account: dict[str, Any] | None = None  # what the card on the reader showed
    quote: dict[str, Any] | None = None  # reissue: who, fee, balance after
    order: dict[str, Any] | None = None  # reissue: the order as it goes
    message: str = ""  # the outcome of the last action
    ok: bool = True
    code: str = ""
    notices: dict[str, str] = field(default_factory=dict)  # device/server problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "version": self.version,
            "account": self.account,
            "quote": self.quote,
            "order": self.order,
            "message": self.message,
            "ok": self.ok,
            "code": self.code,
            "notices": [{"code": k, "text": v} for k, v in sorted(self.notices.items())],
        }


class KioskEngine:
    def __init__(
        self,
        devices: Devices,
        server: KioskServer,
        journal: KioskJournal,
        clock: Clock,
        rng: random.Random,
        idle_s: float = IDLE_S,
        tz: str = DEFAULT_TZ,
        pin_max_tries: int = rules.DEFAULT_PIN_MAX_TRIES,
        cache: Cache | None = None,
    ) -> None:
        self.dev = devices
        self.server = server
        self.journal = journal
        self.clock = clock
        self.rng = rng
        self.idle_s = idle_s
        self.tz = tz
        self.pin_max_tries = pin_max_tries
        #: what the delta feed brought (hotlist, policy, account snapshots): what the kiosk
        #: knows while the server is unreachable
        self.cache = cache
        #: told each completed reissue or transfer (its kind and fields): the receipt printer
        #: queues it (:class:`edge.kiosk.agent.KioskAgent`); it never raises into the action
        self.on_receipt: Callable[[str, list[tuple[str, str]]], None] | None = None
        self._cond = threading.Condition()
        self._screen = Screen()
        self._touched = time.monotonic()
        self._issuing = False
        self._pending_identity: dict[str, str] | None = None
        self._card_no = ""  # the card number last read off the holder's reader
        self.orders = OrderRunner(devices, server, journal, self.notice)

    # -- the screen ---------------------------------------------------------------------------
    def screen(self) -> dict[str, Any]:
        with self._cond:
            self._expire()
            return self._screen.as_dict()

    def wait(self, after: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._expire()
                left = deadline - time.monotonic()
                if self._screen.version > after or left <= 0:
                    return self._screen.as_dict()
                idle_left = self._touched + self.idle_s - time.monotonic()
                self._cond.wait(max(0.01, min(left, idle_left if idle_left > 0 else left)))

    def _set(self, state: str | None = None, **kw: Any) -> None:
        with self._cond:
            s = self._screen
            if state is not None:
                s.state = state
            for k, v in kw.items():
                setattr(s, k, v)
            s.version += 1
            self._cond.notify_all()

    def touch(self) -> None:
        self._touched = time.monotonic()

    def _expire(self) -> None:
        """Caller holds the condition: the idle timeout ends the visit and forgets it."""
        s = self._screen
        if self._issuing or s.state == "idle":
            return
        if time.monotonic() - self._touched >= self.idle_s:
            self._forget()

    def _forget(self) -> None:
        self._pending_identity = None  # what the holder keyed goes with the visit
        s = self._screen
        s.state, s.account, s.quote, s.order = "idle", None, None, None
        s.message, s.ok, s.code = "", True, ""
        s.version += 1
        self._cond.notify_all()

    @property
    def showing_card(self) -> bool:
        """The screen shows the account of a card (which should still be on the reader)."""
        return self._screen.state == "card"

    def card_left(self) -> None:
        """The card was taken off the reader: its account leaves the screen (the next person
        at the kiosk must not see it)."""
        with self._cond:
            if self._screen.state == "card" and not self._issuing:
                self._forget()

    @property
    def issue_timings(self) -> deque[dict[str, float]]:
        """Where the time of the last reissues went (:class:`edge.kiosk.reissue.OrderRunner`)."""
        return self.orders.issue_timings

    def home(self) -> dict[str, Any]:
        """Back to the start screen, forgetting the visit (not while a card is being issued)."""
        with self._cond:
            if self._issuing:
                raise EngineError("a card is being issued: please wait")
            self._forget()
            return self._screen.as_dict()

    def notice(self, code: str, text: str | None) -> None:
        """A device or server problem (``text``) or its end (None), shown on every screen."""
        with self._cond:
            had = self._screen.notices.get(code)
            if text == had:
                return
            if text is None:
                self._screen.notices.pop(code, None)
            else:
                self._screen.notices[code] = text
            self._screen.version += 1
            self._cond.notify_all()

    def _receipt(self, kind: str, fields: list[tuple[str, str]]) -> None:
        hook = self.on_receipt
        if hook is None:
            return
        try:
            hook(kind, fields)
        except Exception:  # a receipt problem never undoes nor blocks what was done
            log.exception("the receipt of a %s was not queued", kind)

    def _reissued(self, order_id: str, card_no: str, fee_fen: int, balance_fen: int) -> None:
        self._receipt(
            "补卡 REISSUE",
            [
                ("卡号 Card no:", card_no),
                ("工本费 Fee:", format_fen(fee_fen)),
                ("余额 Balance:", format_fen(balance_fen)),
                ("时间 Time:", self._now()),
                ("订单 Order:", order_id),
            ],
        )

    def _now(self) -> str:
        return iso(self.clock.now_ms(), self.tz)[:19].replace("T", " ")

    def _outcome(self, ok: bool, message: str, code: str = "", state: str | None = None) -> None:
        self._set(state, message=message, ok=ok, code=code)

    # -- errors: plain words ------------------------------------------------------------------
    def _guard(
        self, fn: Callable[[], dict[str, Any]], offline: Callable[[], str] | None = None
    ) -> dict[str, Any]:
        """Run a holder action: its failures become the screen's message and a clear error.
        ``offline``: what to add to the plain words when the server is unreachable."""
        self.touch()
        self._card_no = ""  # a card-present action reads it again (_proof)
        try:
            out = fn()
        except ServerUnavailable as exc:
            self.notice("server", WORDS["server_down"])
            hot = self._hotlisted()
            if hot is not None:  # the feed said so: refused, server or not
                text = words(hot, WORDS["card_blocked"])
                self._outcome(False, text, hot)
                raise HolderError(hot, text) from exc
            text = WORDS["server_down"]
            extra = offline() if offline is not None else ""
            if extra:
                text = f"{text}\n{extra}"
            self._outcome(False, text, "server_unavailable")
            raise KioskFault("server_unavailable", f"{text} ({exc})") from exc
        except ServerRefused as exc:
            self.notice("server", None)
            text = words(exc.code, exc.message)
            self._outcome(False, text, exc.code)
            raise HolderError(exc.code, text) from exc
        except CardRefused as exc:
            text = words(exc.code, f"这张卡不能办理 / this card cannot be served: {exc.reason}")
            self._outcome(False, text, exc.code)
            raise HolderError(exc.code, text) from exc
        except CardGone as exc:
            self._outcome(False, WORDS["no_card"], "no_card")
            raise HolderError("no_card", WORDS["no_card"]) from exc
        except DeviceUnavailable as exc:
            self._outcome(False, WORDS["reader_gone"], "reader_gone")
            raise KioskFault("reader_gone", f"{WORDS['reader_gone']} ({exc})") from exc
        except (HolderError, KioskFault) as exc:
            self._outcome(False, str(exc), exc.code)
            raise
        except DriverError as exc:
            self._outcome(
                False, f"读卡失败，请重新放卡 / reading the card failed: {exc}", "card_io"
            )
            raise HolderError("card_io", str(exc)) from exc
        self.notice("server", None)
        return out

    # -- the card on the reader ---------------------------------------------------------------
    def _card(self) -> PresentCard:
        card = self.dev.holder_card()
        if card is None:
            raise HolderError("no_card", WORDS["no_card"])
        return card

    def _proof(self, card: PresentCard) -> dict[str, Any]:
        with card.exclusive():
            proof = dict(CampusCard(card, self.dev.keys()).read_proof())
        self._card_no = str(proof.get("card_no", ""))
        return proof

    def _hotlisted(self) -> str | None:
        """Whether the card last read on the reader is on the hotlist the feed brought: the
        WORDS code of its refusal (lost, frozen, cancelled, expired, replaced by a new card),
        or None (not known to be refused)."""
        card_no, cache = self._card_no, self.cache
        if not card_no or cache is None:
            return None
        row = cache.card(card_no)
        if row is None:
            return None
        if row.status != "active":
            return "card_replaced" if row.status == "replaced" else "card_blocked"
        acct = cache.account(row.account_id)
        if acct is None or acct.status == rules.AccountStatus.NORMAL:
            return None
        return f"card_{acct.status}"

    def cached_fee(self) -> int | None:
        """R11's reissue fee as the feed's policy last said (None: no policy pulled yet)."""
        return None if self.cache is None else self.cache.policy.reissue_fee_fen

    def card_arrived(self, card: PresentCard) -> None:
        """The reader saw a card arrive: show its account (failures are shown, not raised)."""
        if self._issuing:
            return
        try:
            self._read(card)
        except (HolderError, KioskFault):
            pass

    def read_card(self) -> dict[str, Any]:
        """Balance (R20, R9): the account of the card on the reader."""
        return self._guard(lambda: self._read(self._card()))

    def _read(self, card: PresentCard) -> dict[str, Any]:
        def go() -> dict[str, Any]:
            proof = self._proof(card)
            acct = self.server.read_card(proof)
            self._set("card", account=acct, quote=None, order=None)
            self._outcome(True, f"余额 / balance {format_fen(acct['balance_fen'])}")
            return acct

        return self._guard(go)

    def change_query_password(self, old: str, new: str) -> dict[str, Any]:
        """R4 with the card: the old query password confirms."""
        _password(old)
        _password(new)

        def go() -> dict[str, Any]:
            proof = self._proof(self._card())
            out = self.server.change_query_password(proof, old, new)
            self._outcome(True, "查询密码已修改 / query password changed")
            return out

        return self._guard(go)

    def change_consume_password(self, old: str, new: str) -> dict[str, Any]:
        """R5 written onto the card: the old consumption password first (checked on the card,
        its wrong try counted on the card before the check, the card's lock respected), then the
        server records the change and answers the new identity, which is written and read back."""
        _password(old)
        _password(new)

        def go() -> dict[str, Any]:
            card = self._card()
            keys = self.dev.keys()
            with card.exclusive():
                cc = CampusCard(card, keys)
                proof = cc.read_proof()
                view = cc.read()  # leaves the counter sector open for writing
                if view.counters.tries >= self.pin_max_tries:
                    raise HolderError(
                        "pin_locked",
                        "消费密码已锁定，请到服务台解锁 / the consumption password is locked: "
                        "see the service desk",
                    )
                counted = view.counters.next(tries=view.counters.tries + 1)
                cc.write_counters(view, counted)  # R5: the try counts before the check
                if not cc.check_pin(view, old):
                    left = self.pin_max_tries - counted.tries
                    raise HolderError(
                        "wrong_pin",
                        f"消费密码错误，还可尝试 {max(left, 0)} 次 / wrong consumption password, "
                        f"{max(left, 0)} tries left",
                    )
                out = self.server.change_consume_password(proof, old, new)
                blob = base64.b64decode(out["write"]["identity"])
                self._write_identity(cc, str(proof["card_no"]), blob, "consume_password")
                view = cc.read()
                # the wrong tries start again in the server's new epoch (R5, as the desk's reset)
                epoch = int(out["write"].get("pin_epoch", view.counters.epoch))
                cc.write_counters(view, view.counters.next(tries=0, epoch=epoch))
                if not cc.check_pin(cc.read(), new):
                    raise HolderError("card_io", "写卡校验失败 / the card did not read back")
            self._outcome(
                True, "消费密码已修改并写入卡片 / consumption password changed on the card"
            )
            return {"card_no": out["card_no"], "changed": "consume_password", "written": True}

        return self._guard(go)

    def _write_identity(self, cc: CampusCard, card_no: str, blob: bytes, what: str) -> None:
        wid = self.journal.write_started(card_no, cc.uid.hex().upper(), what)
        try:
            cc.write_identity(blob)
        except BaseException as exc:
            self.journal.write_ended(wid, f"failed: {exc}")
            raise
        self.journal.write_ended(wid, "ok")

    def set_limit(self, amount_fen: int, pin: str) -> dict[str, Any]:
        """R6 with the card and the consumption password."""
        _password(pin)
        if isinstance(amount_fen, bool) or not 0 < amount_fen <= 99_999_999:
            raise HolderError("bad_amount", "限额金额不对 / not a limit amount")

        def go() -> dict[str, Any]:
            proof = self._proof(self._card())
            out = self.server.set_limit(proof, amount_fen, pin)
            self._outcome(True, f"每日限额已改为 {format_fen(amount_fen)} / daily limit changed")
            if self._screen.account is not None:
                self._set(account={**self._screen.account, "limit_fen": amount_fen})
            return {"card_no": out["card_no"], "limit_fen": amount_fen}

        return self._guard(go)

    def pull_transition(self) -> dict[str, Any]:
        """R7: the transition balance (过渡余额) onto the account now."""

        def go() -> dict[str, Any]:
            out = self.server.pull_transition(self._proof(self._card()))
            moved = int(out["moved_fen"])
            self._outcome(
                True,
                f"过渡余额 {format_fen(moved)} 已转入账户 / moved onto the account"
                if moved
                else "没有过渡余额 / there is no transition balance",
            )
            if self._screen.account is not None:
                acct = {**self._screen.account, "balance_fen": out["balance_fen"]}
                self._set(account={**acct, "transition_fen": out["transition_fen"]})
            return out

        return self._guard(go)

    def correct(self) -> dict[str, Any]:
        """R20 card correction: the card's basic data and validity rewritten from the server."""

        def go() -> dict[str, Any]:
            card = self._card()
            with card.exclusive():
                cc = CampusCard(card, self.dev.keys())
                proof = cc.read_proof()
                out = self.server.correction(proof)
                blob = base64.b64decode(out["write"]["identity"])
                self._write_identity(cc, str(proof["card_no"]), blob, "correction")
                back = cc.read()
                if back.identity.card_no != proof["card_no"]:
                    raise HolderError("card_io", "写卡校验失败 / the card did not read back")
            self._outcome(True, "卡片已校正 / card corrected")
            w = out["write"]
            return {"card_no": out["card_no"], "expires": w.get("expires"), "written": True}

        return self._guard(go)

    def electricity(
        self, building: str, room: str, amount_fen: int, password: str
    ) -> dict[str, Any]:
        """R15 transfer (转账业务) with the card on the reader and the query password."""
        _password(password)

        def go() -> dict[str, Any]:
            card = self._card()
            proof = self._proof(card)
            acct = self.server.read_card(proof)
            rid = f"kiosk-{self.rng.getrandbits(64):016x}"
            out = self.server.electricity(acct["number"], password, building, room, amount_fen, rid)
            self._outcome(
                True,
                f"已向 {building}-{room} 转入电费 {format_fen(amount_fen)} / electricity paid",
            )
            self._receipt(
                "电费转账 ELECTRICITY",
                [
                    ("卡号 Card no:", str(proof["card_no"])),
                    ("房间 Room:", f"{building}-{room}"),
                    ("金额 Amount:", format_fen(amount_fen)),
                    ("时间 Time:", self._now()),
                    ("流水 Request:", rid),
                ],
            )
            return out

        return self._guard(go)

    # -- without the card ---------------------------------------------------------------------
    def holder_status(self, action: str, number: str, password: str) -> dict[str, Any]:
        """R10 loss report / unlock with number (card number for temporary cards) and query
        password."""
        _password(password)

        def go() -> dict[str, Any]:
            out = self.server.holder_status(action, number, password)
            text = (
                "挂失成功 / card reported lost"
                if action == "report-loss"
                else ("解挂成功 / card unlocked")
            )
            self._outcome(True, text, state="message")
            return out

        return self._guard(go)

    def found_cards(self, number: str, password: str) -> dict[str, Any]:
        """R17 lost-card query: where a found card of the holder was handed in."""
        _password(password)

        def go() -> dict[str, Any]:
            out = self.server.found_cards(number, password)
            n = len(out.get("found", []))
            text = (
                f"有 {n} 条拾卡登记 / {n} found-card registration(s)"
                if n
                else "暂无拾卡登记 / nobody has handed in your card yet"
            )
            self._outcome(True, text, state="message")
            return out

        return self._guard(go)

    # -- reissue (R11) ------------------------------------------------------------------------
    def reissue_quote(self, identity: dict[str, str]) -> dict[str, Any]:
        """Identify the holder (number + ID-card number, or an authentication code): the fee
        and the balance after it, or a refusal (desk-only card types, a fee over the balance)."""

        def go() -> dict[str, Any]:
            self._reissue_possible()
            quote = self.server.reissue_quote(identity)
            self._pending_identity = dict(identity)
            self._set("quote", quote=quote, order=None)
            self._outcome(
                True,
                f"补卡工本费 {format_fen(quote['fee_fen'])}，补卡后余额 "
                f"{format_fen(quote['balance_after_fen'])} / reissue fee and balance after",
            )
            return quote

        return self._guard(go, offline=self._offline_fee)

    def _offline_fee(self) -> str:
        fee = self.cached_fee()
        if fee is None:
            return ""
        return f"补卡工本费 {format_fen(fee)} / the reissue fee is {format_fen(fee)}"

    def reissue_scan(self, timeout: float = 15.0) -> dict[str, Any]:
        """R11 by the app's authentication code held up to the kiosk's camera."""

        def go() -> dict[str, Any]:
            try:
                text = self.dev.read_code(timeout)
            except DeviceUnavailable as exc:
                raise KioskFault(
                    "no_camera",
                    "摄像头不可用，请输入学工号和身份证号 / the camera does not work: give the "
                    "number and ID-card number",
                ) from exc
            if not text:
                raise HolderError(
                    "no_code",
                    "未识别到认证码，请把手机上的认证码对准摄像头 / no authentication code was "
                    "read: hold the app's code up to the camera",
                )
            return self.reissue_quote({"auth_code": text})

        return self._guard(go)

    def _reissue_possible(self) -> None:
        """Refuse a reissue at once when the dispenser cannot do it (the screen says so)."""
        try:
            st = self.dev.dispenser().status()
        except DeviceUnavailable as exc:
            self.notice("dispenser", WORDS["dispenser_gone"])
            raise KioskFault("dispenser_gone", WORDS["dispenser_gone"]) from exc
        except DispenserError as exc:
            self.notice("dispenser", WORDS["dispenser_gone"])
            raise KioskFault("dispenser_gone", f"{WORDS['dispenser_gone']} ({exc})") from exc
        if st.hopper == "empty":
            self.notice("dispenser", WORDS["hopper_empty"])
            raise KioskFault("hopper_empty", WORDS["hopper_empty"])
        if st.jammed:
            self.notice("dispenser", WORDS["dispenser_jammed"])
            raise KioskFault("dispenser_jammed", WORDS["dispenser_jammed"])
        self.notice("dispenser", None)

    def reissue_confirm(self) -> dict[str, Any]:
        """The holder confirmed the fee: run the order to a card at the mouth."""
        identity = self._pending_identity
        if self._screen.state != "quote" or not identity:
            raise EngineError("identify first (reissue quote), then confirm")
        quote = dict(self._screen.quote or {})
        self.touch()
        t0 = self.orders.start_lap()
        order_id = f"k{self.clock.now_ms():x}{self.rng.getrandbits(48):012x}"
        order = self.journal.create(order_id, str(quote.get("number", "")), identity)
        self._pending_identity = None
        with self._cond:
            self._issuing = True
        self._set("issuing", order=order.public(), message="正在制卡，请稍候 / making your card")
        try:
            order = self.orders.run(order)
        except (KioskFault, HolderError) as exc:
            self._outcome(False, str(exc), exc.code, state="fault")
            raise
        finally:
            with self._cond:
                self._issuing = False
                self._touched = time.monotonic()
        self.orders.end_lap(t0)
        answer = order.answer
        self._set(
            "take_card",
            order=order.public(),
            message="请取走新卡 / please take your new card",
            ok=True,
            code="",
        )
        balance = int(answer.get("balance_fen", order.balance_fen))
        self._reissued(order.order_id, order.card_no, order.fee_fen, balance)
        return {
            "order_id": order.order_id,
            "fee_fen": order.fee_fen,
            "card_no": order.card_no,
            "uid": order.uid,
            "balance_fen": balance,
        }

    def recover(self) -> list[dict[str, Any]]:
        """At start: finish (or undo) every order a crash or fault left open."""
        out = []
        for order in self.journal.open_orders():
            log.warning("order %s was interrupted at %s: resuming", order.order_id, order.step)
            if order.step == "feeding":
                captured = self.orders.capture_quietly()
                done = self.journal.step(
                    order,
                    "undone",
                    note="interrupted before the server: nothing charged",
                    rejected=order.rejected + captured,
                )
                out.append(done.public())
                continue
            with self._cond:
                self._issuing = True
            self._set("issuing", order=order.public(), message="正在完成补卡 / finishing a reissue")
            try:
                done = self.orders.run(order)
                self._set(
                    "take_card",
                    order=done.public(),
                    message="请取走新卡 / please take your new card",
                    ok=True,
                    code="",
                )
                out.append(done.public())
                bal = int(done.answer.get("balance_fen", done.balance_fen))
                self._reissued(done.order_id, done.card_no, done.fee_fen, bal)
            except (KioskFault, HolderError) as exc:
                log.error("order %s could not be finished: %s", order.order_id, exc)
                fresh = self.journal.get(order.order_id)
                out.append(fresh.public() if fresh else order.public())
                self._outcome(False, str(exc), exc.code, state="fault")
            finally:
                with self._cond:
                    self._issuing = False
                    self._touched = time.monotonic()
        return out


def _password(pw: str) -> None:
    try:
        rules.check_password_format(pw)
    except RuleError as exc:
        raise HolderError("bad_password", f"密码为6位数字 / {exc}") from exc


__all__ = ["Devices", "HolderError", "KioskEngine", "KioskFault", "Screen"]
