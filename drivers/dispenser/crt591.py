"""The Creator CRT-591 card dispenser (card issuing machine with a contactless read/write
position) on a serial port: ``serial:///dev/ttyS0?baud=9600`` (also ``&addr=N``, the address
set on the unit's DIP switches, default 0).

The exchange of one command (CRT-591-M001 protocol, frames in
:mod:`drivers.dispenser.crt591_frames`)::

    host  ── command frame ─────────▶  dispenser
          ◀──────────────── ACK ─────             within 300 ms (NAK: BCC wrong, send again)
          ◀──── answer frame (P / N) ─             when the command has been carried out
          ── ACK ────────────────────▶            (NAK: the answer was damaged, send again)

Commands used: INIT (``30``, PM ``33``: keep a card where it is), STATUS (``31``/``30``: the
status characters ``st0`` card position — 0 none, 1 at the gate, 2 at the read position;
``st1`` hopper — 0 empty, 1 few, 2 enough; ``st2`` error-card bin — 0 room, 1 full), MOVE
(``32``: ``32`` to the RF position = the encoder, ``30`` to the gate = the mouth, ``33`` into
the error-card bin).  Negative answers carry ``e1 e0``: ``A0`` hopper empty, ``10`` card jam,
``A1`` error-card bin full, ``B0`` not initialised since power-on (the driver initialises and
asks once more), others :data:`ERRORS`.

Noise never crashes the driver: garbage bytes are logged and skipped, a NAK or a missing ACK
makes it send the command again (up to :data:`RESENDS` times), a damaged answer (wrong BCC,
short frame) is refused with NAK so the device sends it again (up to :data:`NAKS` times); then
:class:`~drivers.errors.DispenserLineError`.  A device that never answers, or a port that went
away, is :class:`~drivers.errors.DeviceUnavailable`.  Every frame is logged at DEBUG as
``>>>``/``<<<`` hex.  The transport (a pyserial-like port: ``read``, ``write``,
``reset_input_buffer``, ``close``) is passed in (:class:`Crt591Link`), never derived from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from drivers.dispenser import crt591_frames as f
from drivers.dispenser.base import CardPosition, DispenserStatus, HopperLevel
from drivers.errors import (
    DeviceUnavailable,
    DeviceUrlError,
    DispenserError,
    DispenserJammed,
    DispenserLineError,
    HopperEmpty,
    RejectBinFull,
)

log = logging.getLogger(__name__)

BAUDS = {1200, 2400, 4800, 9600, 19200, 38400}
ACK_TIMEOUT = 0.3  # the protocol's time for the ACK
GAP = 0.3  # a frame whose bytes stop for this long is cut short
RESENDS = 3  # sending a command again after a NAK or no ACK
NAKS = 2  # asking for a damaged answer again
QUICK = 3.0  # STATUS: the answer comes at once
MOVE = 15.0  # a card move: seconds of motor work on a real unit
INIT = 30.0  # INIT after power-up sweeps the channel

#: e1 e0 of the CRT-591-M001 protocol (its error table)
ERRORS = {
    "00": "undefined command",
    "01": "command parameter error",
    "02": "command out of sequence",
    "03": "command not supported by this hardware",
    "04": "command data error",
    "05": "IC card contact not released",
    "10": "card jam",
    "12": "sensor error",
    "13": "card too long",
    "14": "card too short",
    "40": "card could not be retracted",
    "43": "card could not be moved to the read position",
    "45": "card was moved by hand",
    "50": "retract counter overflow",
    "51": "motor error",
    "A0": "the hopper (card stacker) is empty",
    "A1": "the error-card (reject) bin is full",
    "B0": "not initialised since power-on",
}
_POSITION: dict[int, CardPosition] = {0x30: "none", 0x31: "mouth", 0x32: "encoder"}
_HOPPER: dict[int, HopperLevel] = {0x30: "empty", 0x31: "low", 0x32: "ok"}


def error_for(code: str, what: str) -> DispenserError:
    """The exception of the device's error ``code`` (``e1 e0``) answering ``what``."""
    text = f"{what}: {ERRORS.get(code, 'unknown device error')} ({code})"
    if code == "A0":
        return HopperEmpty(text, code)
    if code == "10":
        return DispenserJammed(text + ": reset() recovers once the jam is cleared", code)
    if code == "A1":
        return RejectBinFull(text + ": empty the reject bin", code)
    return DispenserError(text, code)


def parse_url(url: str) -> tuple[str, int, int]:
    """``(device path, baud, address)`` of ``serial:///dev/ttyS0?baud=9600&addr=0``."""
    parts = urlsplit(url)
    if parts.scheme != "serial" or parts.netloc or not parts.path.startswith("/"):
        raise DeviceUrlError(f"a serial dispenser is serial:///dev/ttyXXX?baud=9600, got {url!r}")
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(q) - {"baud", "addr"}
    if unknown:
        raise DeviceUrlError(f"{url}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        baud = int(q.get("baud", "9600"))
        addr = int(q.get("addr", "0"))
    except ValueError:
        raise DeviceUrlError(f"{url}: baud and addr are numbers") from None
    if baud not in BAUDS:
        raise DeviceUrlError(f"{url}: baud must be one of {sorted(BAUDS)}")
    if not 0 <= addr <= 15:
        raise DeviceUrlError(f"{url}: addr is 0-15 (the unit's DIP switches)")
    return parts.path, baud, addr


def _port_errors() -> tuple[type[BaseException], ...]:
    try:
        import serial

        return (serial.SerialException, OSError)
    except ImportError:
        return (OSError,)


class Crt591Link:
    """One command at a time over ``port``, with the protocol's ACK/NAK and its retries."""

    def __init__(
        self,
        port: Any,
        name: str,
        addr: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.name = name
        self.addr = addr
        self.clock = clock
        self.parser = f.FrameParser()
        self._held: list[f.Event] = []  # parsed and not yet looked at (after an ACK)
        self.noise = 0  # garbage runs, bad frames, NAKs and missing ACKs seen
        self.errors = _port_errors()

    # -- the port ------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        log.debug("%s >>> %s", self.name, data.hex())
        try:
            self.port.write(data)
        except self.errors as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc

    def _read(self) -> bytes:
        """What arrived (up to the port's read timeout, a few tens of ms)."""
        try:
            waiting = getattr(self.port, "in_waiting", 0) or 1
            chunk = bytes(self.port.read(waiting))
        except self.errors as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc
        if chunk:
            log.debug("%s <<< %s", self.name, chunk.hex())
        return chunk

    def drain(self) -> None:
        """Forget what waits on the line (an answer nobody read: a host that died mid-command)."""
        self.parser.reset()
        self._held.clear()
        try:
            self.port.reset_input_buffer()
        except self.errors as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc

    def _noise(self, ev: f.Event) -> None:
        self.noise += 1
        log.warning("%s: line noise: %s %s", self.name, ev.reason or ev.kind, ev.raw.hex())

    # -- one command ---------------------------------------------------------------------------
    def transact(self, cm: int, pm: int, data: bytes = b"", timeout: float = QUICK) -> f.Frame:
        """Send a command, wait for its answer (positive or negative) and acknowledge it."""
        what = f"command {cm:02X}/{pm:02X}"
        frame = f.command(cm, pm, data, self.addr)
        self.drain()
        for attempt in range(RESENDS + 1):
            if attempt:
                log.warning("%s: %s sent again (%d)", self.name, what, attempt)
            self._write(frame)
            outcome = self._await_ack(cm, pm)
            if isinstance(outcome, f.Frame):  # the ACK was lost, the answer was not
                return outcome
            if outcome == "ack":
                return self._await_answer(cm, pm, what, self.clock() + timeout)
        raise DeviceUnavailable(
            f"{self.name}: the dispenser does not acknowledge {what} (sent {RESENDS + 1} "
            "times): check its power, cable, baud rate and address"
        )

    def _matches(self, fr: f.Frame, cm: int, pm: int) -> bool:
        return (
            fr.addr == self.addr
            and fr.head in (f.POSITIVE, f.NEGATIVE)
            and (fr.cm, fr.pm) == (cm, pm)
        )

    def _stray(self, fr: f.Frame) -> None:
        """A well-formed frame that answers no command of ours (a stale answer): acknowledge
        it, so the device's exchange ends, and go on waiting."""
        self.noise += 1
        log.warning("%s: a stray frame %s, acknowledged and ignored", self.name, fr.raw.hex())
        self._write(bytes([f.ACK]))

    def _events(self, last_byte: float) -> tuple[list[f.Event], float, float]:
        """Read once: the events, the time now, and the time the last byte came."""
        if self._held:
            held, self._held = self._held, []
            return held, self.clock(), last_byte
        chunk = self._read()
        now = self.clock()
        if chunk:
            last_byte = now
        events = self.parser.feed(chunk)
        if not chunk and self.parser.pending() and now - last_byte >= GAP:
            cut = self.parser.cut_short()
            events += [cut] if cut else []
        return events, now, last_byte

    def _await_ack(self, cm: int, pm: int) -> str | f.Frame:
        """ "ack", "nak", "none" (nothing in time), or the answer itself when it came without
        its ACK."""
        deadline = self.clock() + ACK_TIMEOUT
        last_byte = self.clock()
        while True:
            events, now, last_byte = self._events(last_byte)
            for i, ev in enumerate(events):
                if ev.kind == "control" and ev.byte == f.ACK:
                    self._held = events[i + 1 :]
                    return "ack"
                if ev.kind == "control" and ev.byte == f.NAK:
                    self._noise(f.Event("bad", ev.raw, reason="NAK: the device refused the frame"))
                    return "nak"
                if ev.kind == "frame" and ev.frame is not None:
                    if self._matches(ev.frame, cm, pm):
                        self._noise(f.Event("bad", b"", reason="the answer came without its ACK"))
                        self._write(bytes([f.ACK]))
                        return ev.frame
                    self._stray(ev.frame)
                    continue
                self._noise(ev)
            if now >= deadline and not self.parser.pending():
                self.noise += 1
                log.warning("%s: no ACK within %.1fs", self.name, ACK_TIMEOUT)
                return "none"

    def _await_answer(self, cm: int, pm: int, what: str, deadline: float) -> f.Frame:
        naks = 0
        last_byte = self.clock()
        while True:
            events, now, last_byte = self._events(last_byte)
            for ev in events:
                if ev.kind == "frame" and ev.frame is not None:
                    if self._matches(ev.frame, cm, pm):
                        self._write(bytes([f.ACK]))
                        return ev.frame
                    self._stray(ev.frame)
                elif ev.kind == "bad":
                    self._noise(ev)
                    if naks >= NAKS:
                        raise DispenserLineError(
                            f"{self.name}: the answer to {what} arrived damaged {naks + 1} "
                            f"times ({ev.reason}): the line is noisy; ask status()"
                        )
                    naks += 1
                    self._write(bytes([f.NAK]))
                    deadline = max(deadline, self.clock() + ACK_TIMEOUT * 3)
                elif ev.kind == "control" and ev.byte == f.EOT:
                    raise DispenserLineError(f"{self.name}: the dispenser abandoned {what} (EOT)")
                else:
                    self._noise(ev)
            if now >= deadline and not self.parser.pending():
                self._write(bytes([f.EOT]))  # clear the line before the next command
                raise DispenserLineError(
                    f"{self.name}: no answer to {what} in time after it was acknowledged; "
                    "its outcome is unknown: ask status()"
                )


class Crt591Dispenser:
    """:class:`drivers.dispenser.base.CardDispenser` on a CRT-591 behind ``link``."""

    def __init__(self, link: Crt591Link) -> None:
        self.link = link
        self.name = link.name
        self.firmware = ""
        self._lock = threading.Lock()
        self._last: DispenserStatus | None = None

    # -- commands ------------------------------------------------------------------------------
    def _run(self, cm: int, pm: int, what: str, timeout: float) -> f.Frame:
        """The positive answer to a command; after ``B0`` (not initialised since power-on: the
        command was not carried out) the driver initialises and sends it once more."""
        fr = self.link.transact(cm, pm, timeout=timeout)
        if fr.head == f.NEGATIVE and fr.error == "B0" and cm != f.CM_INIT:
            log.info("%s: the dispenser was powered up: initialising it", self.name)
            self._init()
            fr = self.link.transact(cm, pm, timeout=timeout)
        if fr.head == f.NEGATIVE:
            raise error_for(fr.error, f"{self.name}: {what}")
        return fr

    def _init(self) -> None:
        fr = self.link.transact(f.CM_INIT, f.INIT_LEAVE, timeout=INIT)
        if fr.head == f.NEGATIVE:
            raise error_for(fr.error, f"{self.name}: reset")
        self.firmware = fr.data.decode("ascii", "replace").strip()

    def _status(self) -> DispenserStatus:
        fr = self.link.transact(f.CM_STATUS, f.STATUS_CARD, timeout=QUICK)
        if fr.head == f.NEGATIVE and fr.error == "B0":
            self._init()
            fr = self.link.transact(f.CM_STATUS, f.STATUS_CARD, timeout=QUICK)
        if fr.head == f.NEGATIVE and fr.error == "10":
            last = self._last
            st = DispenserStatus(
                hopper=last.hopper if last else "ok",
                card_at="encoder",
                jammed=True,
                reject_bin_full=last.reject_bin_full if last else False,
                detail="card jam (10): clear it, then reset()",
            )
            self._last = st
            return st
        if fr.head == f.NEGATIVE:
            raise error_for(fr.error, f"{self.name}: status")
        st = self._decode(fr.st)
        self._last = st
        return st

    def _decode(self, st: bytes) -> DispenserStatus:
        card = _POSITION.get(st[0])
        hopper = _HOPPER.get(st[1])
        if card is None or hopper is None or st[2] not in (0x30, 0x31):
            raise DispenserLineError(f"{self.name}: status characters {st!r} mean nothing")
        full = st[2] == 0x31
        words = [
            {
                "none": "no card in the channel",
                "encoder": "card at the encoder",
                "mouth": "card at the mouth",
            }[card],
            {"ok": "hopper ok", "low": "hopper low", "empty": "hopper empty"}[hopper],
        ]
        if full:
            words.append("reject bin full")
        return DispenserStatus(hopper, card, False, full, "; ".join(words))

    def _move(self, pm: int, what: str, expect: CardPosition) -> None:
        """A MOVE; its answer's status must show the card where it was sent."""
        st = self._decode(self._run(f.CM_MOVE, pm, what, MOVE).st)
        self._last = st
        if st.card_at != expect:
            raise DispenserError(f"{self.name}: {what}: done, yet the unit reports {st.detail}")

    # -- CardDispenser ---------------------------------------------------------------------------
    def status(self) -> DispenserStatus:
        with self._lock:
            return self._status()

    def to_encoder(self) -> None:
        """Take one blank from the hopper to the encoder (the RF position).  Idempotent: with a
        card already at the encoder nothing moves and no second blank is fed; a card waiting at
        the mouth is refused (DispenserError), the device would pull the holder's card back."""
        with self._lock:
            st = self._status()
            if st.jammed:
                raise DispenserJammed(f"{self.name}: a card is jammed: reset() first", "10")
            if st.card_at == "encoder":
                log.info("%s: a card is at the encoder already: no blank fed", self.name)
                return
            if st.card_at == "mouth":
                raise DispenserError(
                    f"{self.name}: a card waits at the mouth: it is taken, or capture() it, "
                    "before a blank is fed"
                )
            self._move(f.MOVE_RF, "feed a blank to the encoder", "encoder")

    def to_mouth(self) -> None:
        """Move the card at the encoder to the gate, held there for the holder.  Idempotent:
        with the card at the mouth already nothing moves."""
        with self._lock:
            st = self._status()
            if st.jammed:
                raise DispenserJammed(f"{self.name}: a card is jammed: reset() first", "10")
            if st.card_at == "mouth":
                return
            if st.card_at == "none":
                raise DispenserError(f"{self.name}: no card at the encoder to hand out")
            self._move(f.MOVE_GATE, "issue the card to the mouth", "mouth")

    def capture(self) -> None:
        """The card at the encoder or the mouth into the reject bin.  Idempotent: with no card
        in the channel nothing moves."""
        with self._lock:
            st = self._status()
            if st.jammed:
                raise DispenserJammed(f"{self.name}: a card is jammed: reset() first", "10")
            if st.card_at == "none":
                return
            self._move(f.MOVE_REJECT, "capture the card into the reject bin", "none")

    def reset(self) -> None:
        """INIT keeping a card where it is (a jammed card is freed to the read position), then
        the status, logged: where a card is."""
        with self._lock:
            self._init()
            st = self._status()
            log.info("%s: reset (%s): %s", self.name, self.firmware or "?", st.detail)

    def close(self) -> None:
        try:
            self.link.port.close()
        except self.link.errors:
            pass


def open_url(url: str) -> Crt591Dispenser:
    path, baud, addr = parse_url(url)
    try:
        import serial
    except ImportError as exc:
        raise DeviceUnavailable("pyserial is not installed: pip install 'ykt[serial]'") from exc
    try:
        port = serial.Serial(path, baudrate=baud, timeout=0.02, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DeviceUnavailable(f"{url}: {exc}") from exc
    return Crt591Dispenser(Crt591Link(port, url, addr))
