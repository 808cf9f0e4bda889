"""The counter peripherals of a POS: receipt printer, customer display, PIN pad.  A kiosk
uses the printer half alone (``engine=None``: no screen to follow, it queues its receipts).

None of them is in a sale's path: the engine decides and journals as before, and this module
follows its screens (:meth:`edge.pos.engine.Engine.wait`) on threads of its own.

- **printer** thread: after each journaled sale the receipt is queued durably
  (:class:`edge.receipts.PrintQueue`) and printed; paper out, cover open or a printer gone
  leave it queued (the screens say so), and it prints once the printer is back.
- **display** (from the screen thread): the amount due, then approved / declined and the
  balance.  A display that fails is closed and opened again at the next change.
- **PIN pad** thread: when a sale waits for the consumption password (R19, docs/rules.md) the
  pad is asked for it; what the diner keys goes straight to the engine, never to a log or a
  screen.  Noise on the line is refused by the driver.

Each device's state, last problem and its events are in :meth:`Counter.status`
(``GET /control/status`` ``devices``); a device that fails is reopened every
:data:`REOPEN_S` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.display.base import CustomerDisplay
from drivers.errors import DriverError
from drivers.pinpad.base import PinPad
from drivers.printer.base import Printer, PrinterNotReady
from drivers.registry import open_device
from edge.pos.engine import Engine
from edge.receipts import ReceiptQueue, yuan
from sync.clock import Clock, iso
from sync.errors import YktError

log = logging.getLogger(__name__)

REOPEN_S = 2.0
STATUS_POLL_S = 0.5


@dataclass
class DeviceState:
    kind: str
    url: str | None
    state: str = "not configured"
    error: str = ""
    since: float | None = None
    events: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=20))

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "error": self.error,
            "events": list(self.events),
        }


class Counter:
    def __init__(
        self,
        engine: Engine | None,
        queue: ReceiptQueue,
        clock: Clock,
        tz: str,
        *,
        printer: str | None = None,
        display: str | None = None,
        pinpad: str | None = None,
        set_notice: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.clock = clock
        self.tz = tz
        self.set_notice = set_notice
        self.dev = {
            "printer": DeviceState("printer", printer),
            "display": DeviceState("display", display),
            "pinpad": DeviceState("pinpad", pinpad),
        }
        self.printer: Printer | None = None
        self.display: CustomerDisplay | None = None
        self.pinpad: PinPad | None = None
        self._display_tried = 0.0
        self._prompting = False
        self._pad_lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.latencies_ms: deque[int] = deque(maxlen=2000)  # approval -> printed
        self._beat = {
            "screen": time.monotonic(),
            "printer": time.monotonic(),
            "pinpad": time.monotonic(),
        }

    # -- device bookkeeping ---------------------------------------------------------------
    def _event(self, kind: str, text: str) -> None:
        self.dev[kind].events.append({"time": iso(self.clock.now_ms(), self.tz), "event": text})

    def _problem(self, kind: str, state: str, text: str) -> None:
        d = self.dev[kind]
        if d.error == text and d.state == state:
            return
        if d.since is None:
            d.since = time.monotonic()
        d.state, d.error = state, text
        log.error("%s %s: %s", kind, d.url, text)
        self._event(kind, f"problem: {text}")
        if self.set_notice is not None and kind == "printer":
            self.set_notice(kind, f"打印机故障，小票已排队 / printer: {text}; receipt queued")

    def _ok(self, kind: str) -> None:
        d = self.dev[kind]
        d.state = "ready"
        if d.since is None:
            return
        lasted = time.monotonic() - d.since
        log.warning("%s %s works again after %.1f s (was: %s)", kind, d.url, lasted, d.error)
        self._event(kind, f"recovered after {lasted:.1f} s (was: {d.error})")
        d.since, d.error = None, ""
        if self.set_notice is not None and kind == "printer":
            self.set_notice(kind, None)

    def _open(self, kind: Any) -> Any:
        d = self.dev[kind]
        assert d.url is not None
        try:
            device = open_device(kind, d.url)
        except DriverError as exc:
            self._problem(kind, "unavailable", str(exc))
            return None
        self._event(kind, "open")
        if kind != "printer":  # a printer is ready once its status says so
            self._ok(kind)
        return device

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.queue.catch_up()
        if self.engine is not None:
            self._spawn("screen", self._screen_loop)
        if self.dev["printer"].url:
            self._spawn("printer", self._printer_loop)
        if self.dev["pinpad"].url and self.engine is not None:
            self._spawn("pinpad", self._pinpad_loop)

    def _spawn(self, name: str, fn: Callable[[], None]) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        with self.queue.changed:
            self.queue.changed.notify_all()
        for t in self._threads:
            t.join(3)
        for device in (self.printer, self.display, self.pinpad):
            if device is not None:
                with contextlib.suppress(DriverError):
                    device.close()

    def alive(self) -> bool:
        now = time.monotonic()
        return all(t.is_alive() and now - self._beat[t.name] < 10 for t in self._threads)

    # -- screens: display, PIN pad prompt, receipts ----------------------------------------
    def _screen_loop(self) -> None:
        assert self.engine is not None  # started only with an engine
        version = -1
        while not self._stop.is_set():
            self._beat["screen"] = time.monotonic()
            screen = self.engine.wait(version, 1.0)
            if screen["version"] == version:
                continue
            version = screen["version"]
            try:
                if self.queue.catch_up():
                    pass  # the printer thread was woken
                self._show(screen)
                self._prompt(screen)
            except Exception:  # a device problem never stops the till
                log.exception("counter devices: screen %s", screen.get("state"))

    def _show(self, s: dict[str, Any]) -> None:
        if not self.dev["display"].url:
            return
        lines = display_lines(s)
        if lines is None:
            return
        if self.display is None:
            if time.monotonic() - self._display_tried < REOPEN_S:
                return
            self._display_tried = time.monotonic()
            self.display = self._open("display")
            if self.display is None:
                return
        try:
            self.display.show(lines)
        except DriverError as exc:
            self._problem("display", "unavailable", str(exc))
            with contextlib.suppress(DriverError):
                self.display.close()
            self.display = None
            self._display_tried = time.monotonic()

    def _prompt(self, s: dict[str, Any]) -> None:
        """Ask the PIN pad for the password while the screen waits for it (the screen thread
        and the PIN-pad thread both call this)."""
        with self._pad_lock:
            pad = self.pinpad
            if pad is None:
                return
            want = s["state"] == "wait_pin"
            try:
                if want:
                    pad.prompt(f"PIN {yuan(s['amount_fen'] or 0)}")
                    self._prompting = True
                elif self._prompting:
                    pad.idle()
                    self._prompting = False
            except DriverError as exc:
                self._pinpad_failed(exc)

    # -- printer --------------------------------------------------------------------------
    def _printer_loop(self) -> None:
        while not self._stop.is_set():
            self._beat["printer"] = time.monotonic()
            if self.printer is None:
                self.printer = self._open("printer")
                if self.printer is None:
                    self._stop.wait(REOPEN_S)
                    continue
            job = self.queue.next()
            if job is None:
                self._idle_printer()
                continue
            try:
                self.printer.print(job.doc)
            except PrinterNotReady as exc:
                self.queue.failed(job.id, str(exc))
                self._problem("printer", exc.status.describe(), str(exc))
                self._stop.wait(STATUS_POLL_S)
                continue
            except DriverError as exc:
                self.queue.failed(job.id, str(exc))
                self._printer_gone(exc)
                continue
            self.queue.printed(job.id)
            self._ok("printer")
            made = self.queue.record_ts(job.seq) if job.seq else None
            if made is not None and job.copy == 0:
                self.latencies_ms.append(self.clock.now_ms() - made)
            if job.seq:
                log.info("receipt of seq %d printed (copy %d)", job.seq, job.copy)
            else:
                log.info("a receipt of no journal record printed (a shift report, a service)")

    def _idle_printer(self) -> None:
        """Nothing to print: wait for a receipt, looking at the printer now and then so its
        state on the screens is the printer's."""
        with self.queue.changed:
            self.queue.changed.wait(2.0)
        if self._stop.is_set() or self.queue.next() is not None or self.printer is None:
            return
        try:
            st = self.printer.status()
        except DriverError as exc:
            self._printer_gone(exc)
            return
        if st.ready:
            self._ok("printer")
        else:
            self._problem("printer", st.describe(), st.describe())

    def _printer_gone(self, exc: DriverError) -> None:
        self._problem("printer", "unavailable", str(exc))
        if self.printer is not None:
            with contextlib.suppress(DriverError):
                self.printer.close()
        self.printer = None
        self._stop.wait(REOPEN_S)

    # -- PIN pad --------------------------------------------------------------------------
    def _pinpad_failed(self, exc: DriverError) -> None:
        self._problem("pinpad", "unavailable", str(exc))
        pad, self.pinpad = self.pinpad, None
        if pad is not None:
            with contextlib.suppress(DriverError):
                pad.close()

    def _pinpad_loop(self) -> None:
        assert self.engine is not None  # started only with an engine
        while not self._stop.is_set():
            self._beat["pinpad"] = time.monotonic()
            if self.pinpad is None:
                self.pinpad = self._open("pinpad")
                if self.pinpad is None:
                    self._stop.wait(REOPEN_S)
                    continue
                self._prompting = False
                self._prompt(self.engine.screen())  # a sale may be waiting already
            pad = self.pinpad
            if pad is None:
                continue
            try:
                entry = pad.read(0.5)
            except DriverError as exc:
                self._pinpad_failed(exc)
                continue
            if entry is None:
                continue
            self._prompting = False
            try:
                if entry.kind == "cancel":
                    self.engine.cancel()
                    log.info("the diner cancelled on the PIN pad")
                else:
                    self.engine.key_pin(entry.digits)
                    log.info("consumption password keyed on the PIN pad")
            except YktError as exc:  # never the digits: the error names the problem only
                log.warning("PIN pad entry refused: %s", exc.__class__.__name__)
                with contextlib.suppress(DriverError):
                    self._prompt(self.engine.screen())

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        out = {k: d.as_dict() for k, d in self.dev.items()}
        out["printer"]["queue"] = self.queue.counts()
        if self.pinpad is not None:
            out["pinpad"]["stats"] = self.pinpad.stats()
        return out


def display_lines(s: dict[str, Any]) -> list[str] | None:
    """What the pole display shows for a screen (None: leave it as it is)."""
    amount = s.get("amount_fen")
    state = s["state"]
    if state == "idle":
        return ["WELCOME", ""]
    if state in ("amount_keyed", "wait_credential", "wait_proof") and amount is not None:
        return [f"{'AMOUNT DUE':<11}{yuan(amount):>9}", ""]
    if state == "wait_pin" and amount is not None:
        return [f"{'AMOUNT DUE':<11}{yuan(amount):>9}", "KEY PIN ON PIN PAD"]
    if state == "approved" and amount is not None:
        bal = s.get("balance_fen")
        return [
            f"{'PAID':<11}{yuan(amount):>9}",
            f"{'BALANCE':<11}{yuan(bal):>9}" if bal is not None else "APPROVED",
        ]
    if state == "declined":
        return ["DECLINED", (s.get("code") or "")[:20]]
    return None
