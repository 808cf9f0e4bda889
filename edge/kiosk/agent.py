"""The kiosk agent process: identity (role ``kiosk``), card keys, its own journal, the holder's
reader, the encoder, the card dispenser, the engine (:mod:`edge.kiosk.engine`), and the control
API its screen uses (:mod:`edge.kiosk.control`).

One device thread owns the readers and the dispenser: it waits for a card on the holder's
reader and runs every other device job (the control API's actions) from a queue, waking the
reader's wait to do so.  At start it first finishes or undoes any reissue order a crash left
open (:meth:`edge.kiosk.engine.KioskEngine.recover`).  Device problems are shown on the screen
in plain words while they last (reader gone, dispenser gone or jammed, hopper empty or low),
and logged once when they start and once when they end.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drivers.dispenser.base import CardDispenser, DispenserStatus
from drivers.errors import DeviceUnavailable, DispenserError, DriverError
from drivers.qr.base import QrSource
from drivers.reader.base import CardReader, PresentCard
from drivers.registry import open_device
from edge import identity
from edge.cache import Cache
from edge.counter import Counter
from edge.kiosk.common import WORDS
from edge.kiosk.engine import KioskEngine
from edge.kiosk.orders import KioskJournal
from edge.kiosk.upstream import KioskServer
from edge.link import Link
from edge.pos.cardkeys import KeyProvider
from edge.receipts import ReceiptQueue, merchant_line, service_receipt
from edge.uplink import Uplink
from sync.card.keys import Keystore
from sync.client import ServerClient
from sync.clock import Clock, SystemClock
from sync.db import Database
from sync.errors import CardRefused
from sync.records import CardRow

log = logging.getLogger(__name__)

DISPENSER_POLL_S = 5.0
CARD_GONE_S = 5.0  # the card off the reader this long: its account leaves the screen


@dataclass
class KioskConfig:
    data: Path
    server: str | None = None
    enroll: str | None = None
    reader: str = "sim://kiosk"
    encoder: str = "sim://encoder"
    dispenser: str = "sim://dispenser?encoder=encoder"
    camera: str | None = None
    printer: str | None = None  # receipt printer (drivers/printer): escpos+serial://…, sim://…
    keystore: Path | None = None
    control_host: str = "127.0.0.1"
    control_port: int = 8702
    idle_s: float = 60.0
    poll_wait_s: float = 20.0
    seed: int | None = None


def _close(device: Any) -> None:
    if device is not None:
        with contextlib.suppress(DriverError):
            device.close()


class KioskAgent:
    def __init__(self, cfg: KioskConfig, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.rng = random.Random(cfg.seed) if cfg.seed is not None else random.SystemRandom()
        self.ident, key = identity.load_or_enroll(cfg.data, cfg.server, cfg.enroll, "kiosk")
        self.journal = KioskJournal(cfg.data / "kiosk.db", self.clock)

        def client() -> ServerClient:
            return ServerClient(
                self.ident.server, terminal_id=self.ident.terminal_id, key=key, clock=self.clock
            )

        def holder_client(token: str) -> ServerClient:
            return ServerClient(
                self.ident.server,
                clock=self.clock,
                headers={"Authorization": f"Bearer {token}"},
            )

        # the delta feed, pulled as a POS does (edge.uplink, feed half only): the hotlist,
        # policy and account snapshots, without any password verifier (docs/security.md)
        self.cache = Cache(Database(cfg.data / "cache.db", synchronous="NORMAL"))
        self.link = Link(self.clock)
        self.uplink = Uplink(
            None, self.cache, client, self.link, self.rng, poll_wait_s=cfg.poll_wait_s
        )
        self.key_provider = KeyProvider(
            cfg.keystore or cfg.data / "card-keys.json",
            None if cfg.keystore else client().keystore,
            role="kiosk",
        )
        self.engine = KioskEngine(
            self, KioskServer(client(), holder_client), self.journal, self.clock, self.rng,
            idle_s=cfg.idle_s, tz=self.ident.tz, cache=self.cache,
        )  # fmt: skip
        # the receipt printer (optional): the POS's durable queue and printer thread
        # (edge.receipts, edge.counter), fed with a receipt per reissue and transfer
        self.receipts: ReceiptQueue | None = None
        self.counter: Counter | None = None
        if cfg.printer:
            self.receipts = ReceiptQueue(
                Database(cfg.data / "receipts.db", synchronous="FULL"), self.clock
            )
            self.counter = Counter(
                None, self.receipts, self.clock, self.ident.tz, printer=cfg.printer,
                set_notice=self.engine.notice,
            )  # fmt: skip
            self.engine.on_receipt = self._queue_receipt
        self.reader: CardReader | None = None
        self.encoder: CardReader | None = None
        self._dispenser: CardDispenser | None = None
        self.camera: QrSource | None = None
        self.camera_error = ""
        self.reader_error = ""
        self.dispenser_error = ""
        self.dispenser_status: DispenserStatus | None = None
        self.recovered: list[dict[str, Any]] = []
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._beat = time.monotonic()
        self._dispenser_checked = 0.0
        self._card_gone_since: float | None = None

    def _queue_receipt(self, kind: str, fields: list[tuple[str, str]]) -> None:
        if self.receipts is not None:
            self.receipts.enqueue(service_receipt(merchant_line(self.ident), kind, fields))

    # -- the devices (edge.kiosk.engine.Devices) ---------------------------------------------
    def holder_card(self) -> PresentCard | None:
        if self.reader is None:
            self._open_reader()
        if self.reader is None:
            raise DeviceUnavailable(self.reader_error or "no card reader")
        try:
            return self.reader.current_card()
        except DeviceUnavailable as exc:
            self._reader_problem(str(exc))
            raise

    def encoder_card(self, timeout: float) -> PresentCard:
        """The card at the encoder, waiting up to ``timeout`` for the reader to report it;
        DeviceUnavailable when none comes (or the reader is gone)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.encoder is None:
                    self.encoder = open_device("reader", self.cfg.encoder)
                card = self.encoder.current_card()
                if card is not None and card.uid:
                    return card
                left = deadline - time.monotonic()
                if left > 0:
                    self.encoder.wait_for_card(min(left, 0.5))
            except DeviceUnavailable as exc:  # the reader or its service went away: reopen
                _close(self.encoder)
                self.encoder = None
                if time.monotonic() >= deadline:
                    raise DeviceUnavailable(f"encoder {self.cfg.encoder}: {exc}") from exc
                time.sleep(0.1)
                continue
            if time.monotonic() >= deadline:
                raise DeviceUnavailable(
                    f"no card at the encoder {self.cfg.encoder} within {timeout:.0f} s"
                )

    def _open_encoder(self) -> None:
        """The encoder's reader, opened before the dispenser moves a card to it (a simulated
        dispenser puts the blank on the simulated reader of that name, which must exist)."""
        if self.encoder is None:
            try:
                self.encoder = open_device("reader", self.cfg.encoder)
            except DriverError as exc:
                log.warning("encoder %s: %s", self.cfg.encoder, exc)

    def _open_camera(self) -> None:
        url = self.cfg.camera or ""
        if url.startswith(("camera:", "sim:")) and "decoder=" not in url:
            url += ("&" if "?" in url else "?") + "decoder=zxing"
        try:
            self.camera = open_device("qr", url)
            self.camera_error = ""
        except DriverError as exc:
            self.camera_error = str(exc)
            log.error("camera %s unavailable: %s", self.cfg.camera, exc)

    def dispenser(self) -> CardDispenser:
        self._open_encoder()
        if self._dispenser is None:
            try:
                disp: CardDispenser = open_device("dispenser", self.cfg.dispenser)
            except DriverError as exc:
                self.dispenser_error = str(exc)
                raise DeviceUnavailable(f"card dispenser {self.cfg.dispenser}: {exc}") from exc
            self._dispenser = disp
            self.dispenser_error = ""
        return self._dispenser

    def keys(self) -> Keystore:
        return self.key_provider.get()

    def read_code(self, timeout: float) -> str | None:
        if not self.cfg.camera:
            raise DeviceUnavailable("this kiosk has no camera (--camera)")
        if self.camera is None:
            self._open_camera()
        if self.camera is None:
            raise DeviceUnavailable(f"camera {self.cfg.camera}: {self.camera_error}")
        deadline = time.monotonic() + timeout
        self.camera.rearm()
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.camera.read(min(left, 0.5))
            except DriverError as exc:
                _close(self.camera)
                self.camera = None
                raise DeviceUnavailable(f"camera {self.cfg.camera}: {exc}") from exc
            if got is not None:
                return got.text
        return None

    # -- what device providers see (edge.devices.TerminalHost) ------------------------------
    @property
    def data_dir(self) -> Path:
        return self.cfg.data

    def card_record(self, card_no: str) -> CardRow | None:
        return None  # a kiosk makes no simulated card from its cache: it is shown images

    def card_keys(self) -> Keystore:
        return self.key_provider.get()

    # -- the device thread --------------------------------------------------------------------
    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the device thread (at once when called there, or before start)."""
        fut: Future[Any] = Future()
        if threading.current_thread() is self._thread or self._thread is None:
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

    def call(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        return self.submit(fn).result(timeout)

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

    def _open_reader(self) -> None:
        try:
            self.reader = open_device("reader", self.cfg.reader)
        except DriverError as exc:
            self._reader_problem(str(exc))
            return
        log.info("reader %s open", self.cfg.reader)

    def _reader_problem(self, text: str) -> None:
        _close(self.reader)
        self.reader = None
        if text != self.reader_error:
            log.error("card reader %s: %s", self.cfg.reader, text)
            self.reader_error = text
            self.engine.notice("reader", WORDS["reader_gone"])

    def _reader_ok(self) -> None:
        if self.reader_error:
            log.warning("card reader %s works again (was: %s)", self.cfg.reader, self.reader_error)
            self.reader_error = ""
            self.engine.notice("reader", None)

    def _check_dispenser(self) -> None:
        """Now and then, while nobody is being served: the hopper, a jam, the port."""
        if time.monotonic() - self._dispenser_checked < DISPENSER_POLL_S:
            return
        self._dispenser_checked = time.monotonic()
        try:
            st = self.dispenser_status = self.dispenser().status()
        except (DeviceUnavailable, DispenserError) as exc:
            _close(self._dispenser)
            self._dispenser = None
            self.dispenser_status = None
            self.dispenser_error = str(exc)
            self.engine.notice("dispenser", WORDS["dispenser_gone"])
            return
        if st.jammed:
            self.engine.notice("dispenser", WORDS["dispenser_jammed"])
        elif st.hopper == "empty":
            self.engine.notice("dispenser", WORDS["hopper_empty"])
        else:
            self.engine.notice("dispenser", None)

    def _loop(self) -> None:
        try:
            self.recovered = self.engine.recover()
        except Exception:  # the agent keeps serving what still works
            log.exception("recovering the open reissue orders failed")
        while not self._stop.is_set():
            self._beat = time.monotonic()
            self._run_jobs()
            self._check_dispenser()
            if self.reader is None:
                self._open_reader()
                if self.reader is None:
                    self._stop.wait(0.5)
                    continue
            try:
                card = self.reader.wait_for_card(0.5)
            except DriverError as exc:
                self._reader_problem(str(exc))
                continue
            if self.reader.healthy():
                self._reader_ok()
            if card is not None:
                self._card_gone_since = None
                try:
                    self.engine.card_arrived(card)
                except Exception:  # the agent never dies on one bad card
                    log.exception("a card on %s failed", card.reader)
            else:
                self._watch_card_left()
        self._run_jobs()

    def _watch_card_left(self) -> None:
        """While the screen shows a card's account: the card taken away for ``CARD_GONE_S``
        ends that (the account leaves the screen)."""
        if not self.engine.showing_card or self.reader is None:
            self._card_gone_since = None
            return
        try:
            there = self.reader.current_card() is not None
        except DriverError:
            there = False
        if there:
            self._card_gone_since = None
        elif self._card_gone_since is None:
            self._card_gone_since = time.monotonic()
        elif time.monotonic() - self._card_gone_since >= CARD_GONE_S:
            self._card_gone_since = None
            self.engine.card_left()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if not self.key_provider.loaded():
            try:
                self.key_provider.get()
            except CardRefused as exc:
                log.warning("card keys not available yet (%s)", exc.reason)
        if self.cfg.camera:
            self._open_camera()  # now: its picture may be shown before the first scan
        self._thread = threading.Thread(target=self._loop, name="kiosk-devices", daemon=True)
        self._thread.start()
        self.uplink.start()
        if self.counter is not None:
            self.counter.start()

    def stop(self) -> None:
        self.uplink.stop()
        if self.counter is not None:
            self.counter.stop()
        self._stop.set()
        if self.reader is not None:
            self.reader.wake()
        if self._thread is not None:
            self._thread.join(10)
        for dev in (self.reader, self.encoder, self._dispenser, self.camera):
            _close(dev)
        self.reader = self.encoder = self._dispenser = None
        self.camera = None
        self.journal.close()

    def alive(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and time.monotonic() - self._beat < 120  # a reissue may hold the thread a while
            and self.uplink.alive()
            and (self.counter is None or self.counter.alive())
        )

    def status(self) -> dict[str, Any]:
        st = self.dispenser_status
        disp = {"status": asdict(st) if st else "unknown", "error": self.dispenser_error}
        # the open orders first: an order only moves on, so one that is finished when they are
        # read is finished in ``orders`` too (read the other way round, an order finishing in
        # between showed as open in ``orders`` and missing from ``open_orders``)
        open_orders = [o.public() for o in self.journal.open_orders()]
        return {
            "terminal_id": self.ident.terminal_id,
            "name": self.ident.name,
            "role": self.ident.role,
            "server": self.ident.server,
            "reader": self.cfg.reader,
            "reader_status": self.reader.status() if self.reader else "unavailable",
            "reader_error": self.reader_error,
            "encoder": self.cfg.encoder,
            "dispenser": self.cfg.dispenser,
            "dispenser_state": disp,
            "camera": self.cfg.camera,
            "camera_error": self.camera_error,
            "card_keys": "loaded"
            if self.key_provider.loaded()
            else f"missing: {self.key_provider.error}",
            "orders": self.journal.recent(),
            "open_orders": open_orders,
            "recovered": self.recovered,
            "card_writes": self.journal.writes(),
            "issue_timings": list(self.engine.issue_timings)[-20:],
            # the delta feed (edge.uplink): how fresh the hotlist and policy are
            "online": self.link.online,
            "link_error": self.link.last_error,
            "feed_version": self.cache.version,
            "feed_pulled_ms": self.uplink.last_pull_ms,
            "cache": self.cache.counts(),
            "reissue_fee_fen": self.engine.cached_fee(),
            "printer": self.counter.status()["printer"] if self.counter else None,
        }
