"""The POS agent process: identity, journal, caches, reader, camera (QR source), engine,
uplink, control API."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.errors import DriverError
from drivers.qr.base import QrSource
from drivers.reader.base import CardReader
from drivers.registry import open_device
from edge import identity
from edge.cache import Cache
from edge.clock import Clock, SystemClock
from edge.db import Database
from edge.journal import Journal
from edge.link import Link
from edge.pos.decide import Decider
from edge.pos.decide_qr import QrDecider
from edge.pos.engine import Engine
from edge.uplink import Uplink
from sync.client import ServerClient

log = logging.getLogger(__name__)


@dataclass
class PosConfig:
    data: Path
    server: str | None = None
    enroll: str | None = None
    reader: str = "sim://r1"
    camera: str | None = (
        None  # QR source: camera:///dev/video0, camera://file/…, serial://…, sim://…
    )
    decoder: str = "zxing"
    control_host: str = "127.0.0.1"
    control_port: int = 8701
    operator: str = ""
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
        self.decider = Decider(
            self.journal,
            self.cache,
            client(),
            self.link,
            self.clock,
            self.ident.tz,
            operator=cfg.operator,
        )
        self.qr = QrDecider(
            self.decider, self.ident.terminal_id, self.ident.campus_id, key, self.rng
        )
        self.engine = Engine(self.decider, self.clock, self.qr, on_armed=self._rearm_camera)
        self.reader: CardReader | None = None
        self.camera: QrSource | None = None
        self.camera_error = ""
        self._camera_beat = time.monotonic()
        self.reader_error = ""
        self._stop = threading.Event()
        self._reader_beat = time.monotonic()

    # -- reader -------------------------------------------------------------------------------
    def _reader_loop(self) -> None:
        while not self._stop.is_set():
            self._reader_beat = time.monotonic()
            if self.reader is None:
                try:
                    self.reader = open_device("reader", self.cfg.reader)
                    self.reader_error = ""
                    log.info("reader %s ready", self.cfg.reader)
                except DriverError as exc:
                    self.reader_error = str(exc)
                    log.error("reader %s unavailable: %s", self.cfg.reader, exc)
                    self._stop.wait(2.0)
                    continue
            try:
                tap = self.reader.wait_for_tap(0.5)
            except DriverError as exc:
                self.reader_error = str(exc)
                log.error("reader error: %s (reopening)", exc)
                self._close_reader()
                continue
            if tap is None:
                continue
            try:
                self.engine.on_card(tap)
            except Exception:  # the agent never dies on one bad tap
                log.exception("tap of card %s failed", tap.card_no)
            self.uplink.kick()

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
                self._close_camera()
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

    def _close_camera(self) -> None:
        if self.camera is not None:
            try:
                self.camera.close()
            except DriverError:
                pass
            self.camera = None

    def _close_reader(self) -> None:
        if self.reader is not None:
            try:
                self.reader.close()
            except DriverError:
                pass
            self.reader = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.uplink.start()
        self._reader_thread = threading.Thread(target=self._reader_loop, name="reader", daemon=True)
        self._reader_thread.start()
        self._camera_thread: threading.Thread | None = None
        if self.cfg.camera:
            self._open_camera()  # first try now, so the camera is there when the API answers
            self._camera_thread = threading.Thread(
                target=self._camera_loop, name="camera", daemon=True
            )
            self._camera_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.uplink.stop()
        self._close_reader()
        self._close_camera()

    def alive(self) -> bool:
        camera_ok = self._camera_thread is None or (
            self._camera_thread.is_alive() and time.monotonic() - self._camera_beat < 10
        )
        return (
            self.uplink.alive()
            and self._reader_thread.is_alive()
            and time.monotonic() - self._reader_beat < 10
            and camera_ok
        )

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
            "camera": self.cfg.camera,
            "camera_status": self.camera.status() if self.camera else "unavailable",
            "camera_error": self.camera_error,
            "camera_stats": self.camera.stats() if self.camera else {},
        }
