"""The frames of the Creator CRT-591 card dispenser family (CRT-591-M001 communication
protocol; the CRT-571 uses the same framing), pure functions and an incremental parser.

A command (host → dispenser)::

    F2  ADDR  LENH LENL  'C'(43)  CM  PM  DATA…  ETX(03)  BCC

A positive answer carries the three status characters ``st0 st1 st2``, a negative one the
two error characters ``e1 e0``::

    F2  ADDR  LENH LENL  'P'(50)  CM  PM  st0 st1 st2  DATA…  ETX  BCC
    F2  ADDR  LENH LENL  'N'(4E)  CM  PM  e1 e0        DATA…  ETX  BCC

``LEN`` (big-endian) counts the text from the head character (``C``/``P``/``N``) to the end
of DATA; ``BCC`` is the XOR of every byte from ``STX`` to ``ETX``, both included.  Between the
frames single control bytes travel: ``ACK`` (06) and ``NAK`` (15) acknowledge or refuse a
frame, ``EOT`` (04) clears the line.

:class:`FrameParser` turns a byte stream into events (a frame, a control byte, garbage, a bad
frame); it never raises on input, whatever arrives on the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

STX = 0xF2
ETX = 0x03
ACK = 0x06
NAK = 0x15
EOT = 0x04
ENQ = 0x05
CONTROL = frozenset({ACK, NAK, EOT, ENQ})

COMMAND = ord("C")
POSITIVE = ord("P")
NEGATIVE = ord("N")
HEADS = frozenset({COMMAND, POSITIVE, NEGATIVE})

#: the longest text a frame may carry (head to end of DATA); longer is noise
MAX_TEXT = 1024

# commands (CM) and their parameters (PM) this driver uses
CM_INIT = 0x30
CM_STATUS = 0x31
CM_MOVE = 0x32
INIT_HOLD = 0x30  # a card in the channel goes to the gate (the mouth)
INIT_CAPTURE = 0x31  # … into the error-card (reject) bin
INIT_LEAVE = 0x33  # … stays where it is
STATUS_CARD = 0x30  # st0 st1 st2
STATUS_SENSORS = 0x31  # the sensor block
MOVE_GATE = 0x30  # to the gate, held there (the mouth)
MOVE_IC = 0x31  # to the IC-contact position
MOVE_RF = 0x32  # to the RF (contactless) position: the encoder
MOVE_REJECT = 0x33  # into the error-card bin
MOVE_OUT = 0x39  # out of the gate altogether


def bcc(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def _frame(addr: int, text: bytes) -> bytes:
    if not 0 <= addr <= 0xFF:
        raise ValueError(f"address {addr} is not a byte")
    if not 3 <= len(text) <= MAX_TEXT:
        raise ValueError(f"a frame's text is 3 to {MAX_TEXT} bytes, not {len(text)}")
    body = bytes([STX, addr, len(text) >> 8, len(text) & 0xFF]) + text + bytes([ETX])
    return body + bytes([bcc(body)])


def command(cm: int, pm: int, data: bytes = b"", addr: int = 0) -> bytes:
    """The bytes of a command frame."""
    return _frame(addr, bytes([COMMAND, cm, pm]) + data)


def positive(cm: int, pm: int, st: bytes, data: bytes = b"", addr: int = 0) -> bytes:
    """The bytes of a positive answer (``st``: the three status characters)."""
    if len(st) != 3:
        raise ValueError("a positive answer has three status characters")
    return _frame(addr, bytes([POSITIVE, cm, pm]) + st + data)


def negative(cm: int, pm: int, error: str, data: bytes = b"", addr: int = 0) -> bytes:
    """The bytes of a negative answer (``error``: the two error characters, e.g. ``"10"``)."""
    code = error.encode("ascii")
    if len(code) != 2:
        raise ValueError("a negative answer has two error characters")
    return _frame(addr, bytes([NEGATIVE, cm, pm]) + code + data)


@dataclass(frozen=True)
class Frame:
    """One well-formed frame (its BCC checked)."""

    addr: int
    head: int  # COMMAND, POSITIVE or NEGATIVE
    cm: int
    pm: int
    payload: bytes  # after PM: st0-st2 + DATA (positive), e1 e0 + DATA (negative), DATA
    raw: bytes

    @property
    def st(self) -> bytes:
        """The status characters of a positive answer."""
        return self.payload[:3] if self.head == POSITIVE else b""

    @property
    def error(self) -> str:
        """The error characters of a negative answer, e.g. ``"10"``."""
        if self.head != NEGATIVE:
            return ""
        return self.payload[:2].decode("latin-1")

    @property
    def data(self) -> bytes:
        if self.head == POSITIVE:
            return self.payload[3:]
        if self.head == NEGATIVE:
            return self.payload[2:]
        return self.payload


@dataclass(frozen=True)
class Event:
    """What the parser found next on the line.

    ``kind``: ``"frame"`` (``frame`` set), ``"control"`` (``byte`` is ACK, NAK, EOT or ENQ),
    ``"garbage"`` (bytes that belong to no frame) or ``"bad"`` (a frame whose ETX, BCC,
    length or head is wrong, or one cut short: ``reason`` says which)."""

    kind: Literal["frame", "control", "garbage", "bad"]
    raw: bytes
    frame: Frame | None = None
    byte: int = 0
    reason: str = ""


class FrameParser:
    """Incremental: :meth:`feed` bytes as they arrive, get the events complete so far."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def pending(self) -> bool:
        """True while a frame has begun and not ended (more bytes are awaited)."""
        return bool(self._buf) and self._buf[0] == STX

    def cut_short(self) -> Event | None:
        """Give up on the frame begun (its bytes stopped coming): a ``bad`` event for it."""
        if not self.pending():
            return None
        raw = bytes(self._buf)
        self._buf.clear()
        return Event("bad", raw, reason=f"short frame ({len(raw)} bytes, then nothing)")

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        out: list[Event] = []
        while self._buf:
            first = self._buf[0]
            if first in CONTROL:
                del self._buf[0]
                out.append(Event("control", bytes([first]), byte=first))
                continue
            if first != STX:
                end = 1
                while end < len(self._buf) and self._buf[end] not in CONTROL | {STX}:
                    end += 1
                out.append(Event("garbage", bytes(self._buf[:end])))
                del self._buf[:end]
                continue
            if len(self._buf) < 4:
                break
            length = (self._buf[2] << 8) | self._buf[3]
            if not 3 <= length <= MAX_TEXT:
                out.append(self._bad(1, f"impossible length {length}"))
                continue
            total = 4 + length + 2
            if len(self._buf) < total:
                break
            raw = bytes(self._buf[:total])
            if raw[-2] != ETX:
                out.append(self._bad(1, "no ETX where the length says"))
                continue
            if bcc(raw[:-1]) != raw[-1]:
                del self._buf[:total]
                out.append(
                    Event("bad", raw, reason=f"wrong BCC {raw[-1]:02X} (want {bcc(raw[:-1]):02X})")
                )
                continue
            del self._buf[:total]
            text = raw[4:-2]
            if text[0] not in HEADS:
                out.append(Event("bad", raw, reason=f"unknown head {text[0]:02X}"))
                continue
            if (text[0] == POSITIVE and length < 6) or (text[0] == NEGATIVE and length < 5):
                out.append(Event("bad", raw, reason="an answer too short for its status"))
                continue
            frame = Frame(raw[1], text[0], text[1], text[2], bytes(text[3:]), raw)
            out.append(Event("frame", raw, frame=frame))
        return out

    def _bad(self, drop: int, reason: str) -> Event:
        """Drop ``drop`` bytes (the STX that began no frame: resynchronise after it)."""
        raw = bytes(self._buf[:drop])
        del self._buf[:drop]
        return Event("bad", raw, reason=reason)
