"""Serial PIN pads speaking STX/ETX/LRC frames (the framing of ANSI X3.28 that serial payment
peripherals use): ``serial:///dev/ttyUSB1?baud=9600``.

A frame is ``STX type data ETX LRC``: ``type`` one ASCII letter, ``data`` printable ASCII (at
most 32 bytes), ``LRC`` the XOR of every byte after STX up to and including ETX.  The receiver
answers ``ACK`` (06) to a good frame and ``NAK`` (15) to a bad one.

========= ========= ==================================================================
direction type      meaning
========= ========= ==================================================================
POS → pad ``P`` text  prompt: show ``text`` (the amount), take digits until Enter/Cancel
POS → pad ``I``       idle: stop asking, clear what was keyed
pad → POS ``K`` digits the diner pressed Enter after keying ``digits``
pad → POS ``X``       the diner pressed Cancel
========= ========= ==================================================================

Anything else on the line (bytes outside a frame, a bad LRC, an unknown type, a frame too long,
a frame whose next byte does not come within :data:`INTER_BYTE_S`, digits that are not
digits) is noise: NAKed when it looked like a frame, counted, logged
without its content, never passed on.  The transport is quiet (no DEBUG hex dumps): a ``K``
frame carries the consumption password.
"""

from __future__ import annotations

import logging
import time

from drivers.pinpad.base import PinEntry
from drivers.transport import SerialTransport, Transport, serial_url

log = logging.getLogger(__name__)

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15
MAX_DATA = 32
#: a frame whose next byte is this late (s) was cut short: noise, dropped and NAKed
INTER_BYTE_S = 0.3


def lrc(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def frame(kind: str, data: str = "") -> bytes:
    body = kind.encode("ascii") + data.encode("ascii") + bytes([ETX])
    return bytes([STX]) + body + bytes([lrc(body)])


class FrameReader:
    """Cuts frames out of a byte stream; counts noise."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.noise = 0
        self.frames = 0

    def feed(self, data: bytes) -> list[tuple[bool, bytes]]:
        """(good, type+data) for each frame completed by ``data``; good False: NAK it."""
        self.buf += data
        out: list[tuple[bool, bytes]] = []
        while True:
            start = self.buf.find(bytes([STX]))
            if start < 0:
                self._drop(len(self.buf))
                return out
            if start:
                self._drop(start)
            end = self.buf.find(bytes([ETX]), 1)
            again = self.buf.find(bytes([STX]), 1)
            if again >= 0 and (end < 0 or again < end):
                self._drop(again)  # a frame that never ended: a new one starts here
                out.append((False, b""))
                continue
            if end < 0:
                if len(self.buf) > MAX_DATA + 3:
                    self._drop(1)  # an STX with no end in sight: skip it, look again
                    out.append((False, b""))
                    continue
                return out
            if len(self.buf) < end + 2:
                return out  # the LRC is still to come
            body = bytes(self.buf[1 : end + 1])
            good = lrc(body) == self.buf[end + 1] and len(body) - 2 <= MAX_DATA
            del self.buf[: end + 2]
            if good:
                self.frames += 1
                out.append((True, body[:-1]))
            else:
                self.noise += 1
                out.append((False, b""))

    def expire(self) -> bool:
        """Drop a partial frame (its sender went quiet); True when there was one."""
        if not self.buf:
            return False
        self._drop(len(self.buf))
        return True

    def _drop(self, n: int) -> None:
        if n:
            self.noise += 1
            del self.buf[:n]


class FramedPinPad:
    def __init__(self, name: str, transport: Transport) -> None:
        self.name = name
        self.transport = transport
        self.reader = FrameReader()
        self._entries: list[PinEntry] = []
        self._refused = 0
        self._last_rx = time.monotonic()

    def prompt(self, text: str) -> None:
        self.transport.write(frame("P", "".join(c for c in text if " " <= c <= "~")[:MAX_DATA]))

    def idle(self) -> None:
        self.transport.write(frame("I"))

    def read(self, timeout: float) -> PinEntry | None:
        deadline = time.monotonic() + timeout
        while not self._entries:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.transport.read(256, min(left, INTER_BYTE_S / 3))
            if data:
                self._last_rx = time.monotonic()
                self._take(data)
            elif time.monotonic() - self._last_rx > INTER_BYTE_S and self.reader.expire():
                self._refused += 1
                self.transport.write(bytes([NAK]))
                log.warning("%s: a frame cut short refused (%d so far)", self.name, self.noise)
        return self._entries.pop(0)

    def _take(self, data: bytes) -> None:
        noise_before = self.reader.noise
        for good, body in self.reader.feed(data):
            entry = self._entry(body) if good else None
            if entry is None:
                self._refused += 1
                self.transport.write(bytes([NAK]))
                continue
            self.transport.write(bytes([ACK]))
            self._entries.append(entry)
        if self.reader.noise != noise_before:
            log.warning("%s: noise on the line refused (%d so far)", self.name, self.noise)

    def _entry(self, body: bytes) -> PinEntry | None:
        kind, data = body[:1], body[1:]
        if kind == b"K" and data.isdigit() and data.isascii():
            return PinEntry("pin", data.decode("ascii"))
        if kind == b"X" and not data:
            return PinEntry("cancel")
        self.reader.noise += 1
        return None

    @property
    def noise(self) -> int:
        return self.reader.noise

    def stats(self) -> dict[str, int]:
        return {"frames": self.reader.frames, "noise": self.reader.noise, "refused": self._refused}

    def close(self) -> None:
        self.transport.close()


def open_url(url: str) -> FramedPinPad:
    path, baud = serial_url(url)
    return FramedPinPad(url, SerialTransport(path, baud, quiet=True))
