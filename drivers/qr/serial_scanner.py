"""Serial QR scanners (USB CDC-ACM or RS-232) on pyserial: the scanner decodes the code itself
and sends its text as one line.

``serial:///dev/ttyACM0?baud=9600`` (also ``&newline=cr|lf|crlf``, any of which ends a line by
default).  Each line is one presentation; empty lines are ignored; a line that is not ASCII or
longer than :data:`MAX_LINE` is serial noise: logged and dropped, never passed on.  pyserial
errors become :class:`drivers.errors.DeviceUnavailable` here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from drivers.errors import DeviceUnavailable
from drivers.qr.base import QrRead
from drivers.transport import serial_url

log = logging.getLogger(__name__)

MAX_LINE = 2048


def parse_url(url: str) -> tuple[str, int]:
    """``serial:///dev/ttyXXX?baud=9600`` -> (path, baud): the serial URL of every driver."""
    return serial_url(url)


class SerialScanner:
    def __init__(self, url: str, port: Any = None) -> None:
        """Open the scanner at ``url``; ``port`` injects an open pyserial-like port (tests)."""
        self.name = url
        path, baud = parse_url(url)
        if port is None:
            try:
                import serial
            except ImportError as exc:
                raise DeviceUnavailable(
                    "pyserial is not installed: pip install 'ykt[serial]'"
                ) from exc
            try:
                port = serial.Serial(path, baudrate=baud, timeout=0.1)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise DeviceUnavailable(f"{url}: {exc}") from exc
        self._port = port
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._lines = 0
        self._noise = 0
        self._reads = 0
        self._closed = False
        self._skipping = False  # inside an over-long line: drop up to its end

    def _serial_error(self) -> tuple[type[BaseException], ...]:
        try:
            import serial

            return (serial.SerialException, OSError)
        except ImportError:
            return (OSError,)

    def _take_line(self) -> bytes | None:
        """The next complete line in the buffer (over-long lines dropped), or None."""
        while True:
            ends = [i for i in (self._buf.find(b"\n"), self._buf.find(b"\r")) if i >= 0]
            if not ends:
                if len(self._buf) > MAX_LINE:
                    log.warning(
                        "%s: a line over %d bytes: serial noise, dropped", self.name, MAX_LINE
                    )
                    self._noise += 1
                    self._buf.clear()
                    self._skipping = True
                return None
            end = min(ends)
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._skipping:  # the rest of an over-long line
                self._skipping = False
                continue
            if len(line) > MAX_LINE:
                log.warning("%s: a line over %d bytes: serial noise, dropped", self.name, MAX_LINE)
                self._noise += 1
                continue
            return line

    def read(self, timeout: float) -> QrRead | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._closed:
                line = self._take_line()
                while line is not None:
                    text = self._check(line)
                    if text:
                        self._reads += 1
                        return QrRead(text, self.name, self._lines, 0.0)
                    line = self._take_line()
                try:  # blocks up to the port's timeout (0.1 s)
                    chunk = self._port.read(max(1, getattr(self._port, "in_waiting", 0) or 1))
                except self._serial_error() as exc:
                    raise DeviceUnavailable(f"{self.name}: {exc}") from exc
                if chunk:
                    log.debug("%s <<< %s", self.name, bytes(chunk).hex())
                    self._buf += chunk
                elif time.monotonic() >= deadline:
                    return None
        return None

    def _check(self, line: bytes) -> str | None:
        self._lines += 1
        line = line.strip(b"\r\n")  # not spaces: Base45 texts may begin or end with one
        if not line:
            return None
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self._noise += 1
            log.warning("%s: a line that is not ASCII: serial noise, dropped", self.name)
            return None
        if not text.isprintable():
            self._noise += 1
            log.warning("%s: a line with control characters: serial noise, dropped", self.name)
            return None
        return text

    def status(self) -> str:
        return "closed" if self._closed else "ready"

    def rearm(self) -> None:
        """Nothing to forget: every line a scanner sends is a presentation."""

    def stats(self) -> dict[str, Any]:
        return {"lines": self._lines, "noise": self._noise, "reads": self._reads}

    def close(self) -> None:
        self._closed = True
        try:
            self._port.close()
        except self._serial_error():
            pass


def open_url(url: str) -> SerialScanner:
    return SerialScanner(url)
