"""The POS agent process: identity, journal, caches, card keys, reader, camera (QR source),
engine, uplink, control API.

The reader thread owns the card reader: it waits for card arrivals and runs every other card
job (the consumption password keyed on the control API, a card already lying on the reader
when an amount is keyed) from a queue, waking the reader's wait to do so.  A reader or pcscd
problem is logged once when it starts and once when it is over (with how long it lasted),
kept in ``reader_events`` and shown on the screens as a notice meanwhile (docs/hardware.md).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.errors import DriverError
from drivers.qr.base import QrSource
from drivers.reader.base import CardReader, PresentCard
from drivers.registry import open_device
from edge import identity
from edge.cache import Cache
from edge.counter import Counter
from edge.errors import TillError, TillNotFound
from edge.journal import Journal
from edge.link import Link
from edge.pos.cardkeys import KeyProvider
from edge.pos.decide import Decider
from edge.pos.decide_qr import QrDecider
from edge.pos.engine import Engine
from edge.pos.till import Till
from edge.receipts import PrintQueue
from edge.uplink import Uplink
from sync.card.app import CampusCard
from sync.card.keys import Keystore
from sync.client import ServerClient
from sync.clock import Clock, SystemClock, iso
from sync.db import Database
from sync.errors import CardRefused, YktError
from sync.records import CardRow

log = logging.getLogger(__name__)


def _close_quietly(device: CardReader | QrSource | None) -> None:
    """Close a device the agent lets go of (it may already be gone: unplugged, its service
    down)."""
    if device is not None:
        with contextlib.suppress(DriverError):
            device.close()


@dataclass
class PosConfig:
    data: Path
    server: str | None = None
    enroll: str | None = None
    reader: str = "sim://r1"
    keystore: Path | None = None
    camera: str | None = (
        None  # QR source: camera:///dev/video0, camera://file/…, serial://…, sim://…
    )
    decoder: str = "zxing"
    control_host: str = "127.0.0.1"
    control_port: int = 8701
    operator: str = ""
    printer: str | None = None  # receipt printer: escpos+serial://…, escpos+net://…, …
    display: str | None = None  # customer pole display: serial://…
    pinpad: str | None = None  # PIN pad: serial://…
    poll_wait_s: float = 20.0
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class PosAgent:
    def __init__(self, cfg: PosConfig, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.rng = random.Random(cfg.seed) if cfg.seed is not None else random.SystemRandom()
        self.ident, key = identity.load_or_enroll(cfg.data, cfg.server, cfg.enroll, "pos")
        self.journal = Journal(
            Database(cfg.data / "journal.db", synchronous="FULL"),
            self.ident.terminal_id,
            key,
            self.clock,
            self.ident.tz,
        )
        self.cache = Cache(Database(cfg.data / "cache.db", synchronous="NORMAL"))
        self.link = Link(self.clock)

        def client() -> ServerClient:
            return ServerClient(
                self.ident.server, terminal_id=self.ident.terminal_id, key=key, clock=self.clock
            )

        self.uplink = Uplink(
            self.journal, self.cache, client, self.link, self.rng, poll_wait_s=cfg.poll_wait_s
        )
        key_client = client()
        self.keys = KeyProvider(
            cfg.keystore or cfg.data / "card-keys.json",
            None if cfg.keystore else key_client.keystore,
            role=self.ident.role,
        )
        self.decider = Decider(
            self.journal,
            self.cache,
            client(),
            self.link,
            self.clock,
            self.ident.tz,
            self.keys,
            operator=cfg.operator,
        )
        self.till = Till(
            self.journal,
            self.cache,
            self.link,
            self.clock,
            self.ident.tz,
            self.ident.terminal_id,
            cfg.operator,
            self._set_operator,
        )
        self.uplink.after_push = self.till.push_reports
        self.uplink.alarm_sink = self.till.note_alarms
        self._tap_lock = threading.Lock()
        self._tap_waiter: Future[int] | None = None  # a refund waiting for a card tap
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._reader_thread: threading.Thread | None = None
        self.qr = QrDecider(
            self.decider, self.ident.terminal_id, self.ident.campus_id, key, self.rng
        )
        try:  # a reverse-scan request shown when the terminal stopped can no longer be paid here
            self.qr.close_open("the terminal started again")
        except YktError as exc:
            log.error("open reverse-scan requests not closed yet: %s", exc)
        self.engine = Engine(
            self.decider,
            self.clock,
            self.qr,
            on_armed=self._rearm_camera,
            submit=self.submit,
            card_source=self._lying,
            gate=self._may_sell,
        )
        self.till.on_change = self.engine.touch
        self.receipts = PrintQueue(
            Database(cfg.data / "receipts.db", synchronous="FULL"),
            self.journal,
            self.ident,
            self.clock,
            merchant=lambda: self.cache.merchant_name,
        )
        self.till.on_journaled = self.receipts.catch_up  # a refund's receipt
        if cfg.printer:  # the Z report of each shift closed is printed, after its receipts
            self.till.on_closed = self.receipts.add_report
        self._notices: dict[str, str] = {}
        self._notice_lock = threading.Lock()
        self.counter = Counter(
            self.engine,
            self.receipts,
            self.clock,
            self.ident.tz,
            printer=cfg.printer,
            display=cfg.display,
            pinpad=cfg.pinpad,
            set_notice=self.notice,
        )
        self.reader: CardReader | None = None
        self.camera: QrSource | None = None
        self.camera_error = ""
        self._camera_beat = time.monotonic()
        self._camera_thread: threading.Thread | None = None
        self.reader_error = ""
        self.reader_events: deque[dict[str, str]] = deque(maxlen=50)
        self._problem_since: float | None = None
        self._stop = threading.Event()
        self._reader_beat = time.monotonic()

    # -- the till ----------------------------------------------------------------------------
    def _set_operator(self, number: str) -> None:
        """The operator every record journaled from now on carries (``op``)."""
        self.decider.operator = number

    def _may_sell(self) -> None:
        reason = self.till.refusal()
        if reason is not None:
            raise TillError(reason, "sign_in_required")

    def card_account(self, wait_s: float = 15.0) -> int:
        """The account of the next card tapped (or lying on the reader): a refund found by
        tapping the card.  The tap goes to the till, not to a sale."""
        if self.engine.waiting_for_card:
            raise TillError("a sale waits for a card: cancel it first", "sale_open")
        fut: Future[int] = Future()
        with self._tap_lock:
            if self._tap_waiter is not None:
                raise TillError("a refund already waits for a card", "tap_waiting")
            self._tap_waiter = fut
        self.engine.touch()

        def lying() -> None:
            card = self._lying()
            if card is not None:
                self._take_tap(card)

        self.submit(lying)
        try:
            return fut.result(timeout=wait_s)
        except TimeoutError:
            raise TillNotFound(f"no card was tapped within {wait_s:.0f} s", "no_card") from None
        finally:
            with self._tap_lock:
                if self._tap_waiter is fut:
                    self._tap_waiter = None
            self.engine.touch()

    def wait_acked(self, seq: int, timeout: float) -> bool:
        """Wait until the server has acked record ``seq`` (False after ``timeout``)."""
        self.uplink.kick()
        with self.uplink.synced:
            return self.uplink.synced.wait_for(lambda: self.journal.acked >= seq, timeout)

    @property
    def tap_waiting(self) -> bool:
        """A refund waits for a card to be tapped."""
        with self._tap_lock:
            return self._tap_waiter is not None

    def _take_tap(self, card: PresentCard) -> bool:
        """Hand a card to a refund waiting for a tap (card thread); False when none waits."""
        with self._tap_lock:
            fut, self._tap_waiter = self._tap_waiter, None
        if fut is None:
            return False
        try:
            with card.exclusive():
                view = CampusCard(card, self.keys.get()).read()
            fut.set_result(view.identity.account_id)
        except (DriverError, CardRefused) as exc:
            fut.set_exception(TillError(f"the card could not be read: {exc}", "card_error"))
        finally:
            card.close()
        return True

    # -- the card thread ----------------------------------------------------------------------
    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the reader thread (at once when called there)."""
        fut: Future[Any] = Future()
        if threading.current_thread() is self._reader_thread or self._reader_thread is None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        self._jobs.put((fn, fut))
        reader = self.reader
        if reader is not None:
            reader.wake()
        return fut

    def _run_jobs(self) -> None:
        while True:
            try:
                fn, fut = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the waiting thread
                fut.set_exception(exc)

    def _lying(self) -> PresentCard | None:
        """The card lying on the reader now (card thread)."""
        if self.reader is None:
            return None
        try:
            return self.reader.current_card()
        except DriverError as exc:
            log.warning("cannot reach the card on the reader: %s", exc)
            return None

    def amount_keyed(self) -> None:
        """An amount was keyed: a card already lying on the reader pays (card thread)."""

        def job() -> None:
            if not self.engine.waiting_for_card:
                return
            card = self._lying()
            if card is not None:
                self._on_card(card)

        self.submit(job)

    def _on_card(self, card: PresentCard) -> None:
        try:
            if not self.engine.waiting_for_card and self._take_tap(card):
                return
            if not self.engine.on_card(card):
                card.close()
        except Exception:  # the agent never dies on one bad tap
            log.exception("tap of a card on %s failed", card.reader)
        self.uplink.kick()

    def _problem(self, text: str) -> None:
        if text == self.reader_error:
            return
        if self._problem_since is None:
            self._problem_since = time.monotonic()
        self.reader_error = text
        log.error("card reader %s: %s", self.cfg.reader, text)
        self._event(f"problem: {text}")
        self.notice("reader", f"读卡器故障 / card reader problem: {text}")

    def _solved(self) -> None:
        if self._problem_since is None:
            return
        lasted = time.monotonic() - self._problem_since
        log.warning(
            "card reader %s works again after %.1f s (was: %s)",
            self.cfg.reader,
            lasted,
            self.reader_error,
        )
        self._event(f"recovered after {lasted:.1f} s (was: {self.reader_error})")
        self._problem_since = None
        self.reader_error = ""
        self.notice("reader", None)

    def notice(self, source: str, text: str | None) -> None:
        """Show (or clear) ``source``'s device problem on the screens, with the others'."""
        with self._notice_lock:
            if text is None:
                self._notices.pop(source, None)
            else:
                self._notices[source] = text
            shown = " · ".join(self._notices[k] for k in sorted(self._notices)) or None
            self.engine.set_notice(shown)

    def _event(self, text: str) -> None:
        self.reader_events.append({"time": iso(self.clock.now_ms(), self.ident.tz), "event": text})

    def _reader_loop(self) -> None:
        while not self._stop.is_set():
            self._reader_beat = time.monotonic()
            self._run_jobs()
            if self.reader is None:
                try:
                    self.reader = open_device("reader", self.cfg.reader)
                    log.info("reader %s open", self.cfg.reader)
                except DriverError as exc:
                    self._problem(str(exc))
                    self._stop.wait(0.5)
                    continue
            try:
                card = self.reader.wait_for_card(0.5)
            except DriverError as exc:
                self._problem(str(exc))
                self._run_jobs()
                self._stop.wait(0.25)
                continue
            if self.reader_error and self.reader.healthy():
                self._solved()
            if card is not None:
                self._on_card(card)
        self._run_jobs()

    # -- camera (QR source) -------------------------------------------------------------------
    def _camera_url(self) -> str:
        url = self.cfg.camera or ""
        if url.startswith(("camera:", "sim:")) and "decoder=" not in url:
            url += ("&" if "?" in url else "?") + f"decoder={self.cfg.decoder}"
        return url

    def _open_camera(self) -> bool:
        try:
            self.camera = open_device("qr", self._camera_url())
        except DriverError as exc:
            self.camera_error = str(exc)
            log.error("QR source %s unavailable: %s", self.cfg.camera, exc)
            return False
        self.camera_error = ""
        log.info("QR source %s ready", self.cfg.camera)
        return True

    def _camera_loop(self) -> None:
        while not self._stop.is_set():
            self._camera_beat = time.monotonic()
            if self.camera is None and not self._open_camera():
                self._stop.wait(2.0)
                continue
            assert self.camera is not None
            try:
                read = self.camera.read(0.5)
            except DriverError as exc:
                self.camera_error = str(exc)
                log.error("QR source error: %s (reopening)", exc)
                _close_quietly(self.camera)
                self.camera = None
                continue
            if read is None:
                continue
            try:
                self.engine.on_code(read.text)
            except Exception:  # the agent never dies on one bad code
                log.exception("code from %s failed", read.source)
            self.uplink.kick()

    def _rearm_camera(self) -> None:
        cam = self.camera
        if cam is not None:
            cam.rearm()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if not self.keys.loaded():  # fetch the card keys now, not at the first tap
            threading.Thread(target=self._prefetch_keys, name="keys", daemon=True).start()
        self.uplink.start()
        self.counter.start()
        self._reader_thread = threading.Thread(target=self._reader_loop, name="reader", daemon=True)
        self._reader_thread.start()
        if self.cfg.camera:
            self._open_camera()  # first try now, so the camera is there when the API answers
            self._camera_thread = threading.Thread(
                target=self._camera_loop, name="camera", daemon=True
            )
            self._camera_thread.start()

    def _prefetch_keys(self) -> None:
        try:
            self.keys.get()
        except CardRefused as exc:
            log.warning("card keys not available yet (%s); retried at the next tap", exc.reason)

    def stop(self) -> None:
        self._stop.set()
        self.uplink.stop()
        self.counter.stop()
        reader = self.reader
        if reader is not None:
            reader.wake()
        if self._reader_thread is not None:
            self._reader_thread.join(5)
        _close_quietly(self.reader)
        _close_quietly(self.camera)
        self.reader = self.camera = None

    def alive(self) -> bool:
        camera_ok = self._camera_thread is None or (
            self._camera_thread.is_alive() and time.monotonic() - self._camera_beat < 10
        )
        return (
            camera_ok
            and self.uplink.alive()
            and self.counter.alive()
            and self._reader_thread is not None
            and self._reader_thread.is_alive()
            and time.monotonic() - self._reader_beat < 10
        )

    # -- what device providers see (edge.devices.TerminalHost) ------------------------------
    @property
    def data_dir(self) -> Path:
        return self.cfg.data

    def card_record(self, card_no: str) -> CardRow | None:
        record = self.cache.card(card_no)
        if record is None and self.link.online:
            # issued a moment ago: the feed may not be here yet (pulled on the card thread,
            # whose server client is not shared)
            self.submit(self.decider.refresh).result(timeout=15)
            record = self.cache.card(card_no)
        return record

    def card_keys(self) -> Keystore:
        return self.keys.get()

    def timings(self) -> list[dict[str, Any]]:
        return [t.__dict__ for t in list(self.engine.timings)]

    def status(self) -> dict[str, Any]:
        return {
            "terminal_id": self.ident.terminal_id,
            "name": self.ident.name,
            "server": self.ident.server,
            "online": self.link.online,
            "link_error": self.link.last_error,
            "journal_head": self.journal.head_seq,
            "acked": self.journal.acked,
            "queued": self.journal.queued,
            "push_error": self.uplink.last_push_error,
            "unsynced_offline_fen": self.journal.unsynced_offline_fen,
            "feed_version": self.cache.version,
            "cache": self.cache.counts(),
            "reader": self.cfg.reader,
            "reader_status": self.reader.status() if self.reader else "unavailable",
            "reader_error": self.reader_error,
            "reader_events": list(self.reader_events),
            "card_keys": "loaded" if self.keys.loaded() else f"missing: {self.keys.error}",
            "camera": self.cfg.camera,
            "camera_status": self.camera.status() if self.camera else "unavailable",
            "camera_error": self.camera_error,
            "camera_stats": self.camera.stats() if self.camera else {},
            "till": {**self.till.state(), "waiting_for_tap": self.tap_waiting},
            "devices": self.counter.status(),
        }
