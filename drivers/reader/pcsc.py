"""PC/SC card readers through pcscd, on pyscard's low-level ``smartcard.scard`` API.

URL: ``pcsc://`` (the first reader pcscd lists) or ``pcsc://NAME`` (the reader called NAME, or
whose name starts with NAME; percent-escapes allowed).  A name filter is the way to make sure
no unexpected reader is used: an unmatched reader is never touched, and with ``pcsc://`` alone
the reader chosen is logged together with every other reader that is present.

What real deployments hit (docs/hardware.md), and what this driver does about it:

- **pcscd restarted**: the PC/SC context dies with it (``SCARD_E_NO_SERVICE``,
  ``SCARD_E_SERVICE_STOPPED``, ``SCARD_E_INVALID_HANDLE``, ``SCARD_F_COMM_ERROR``).  The call
  raises :class:`~drivers.errors.ServiceUnavailable`; the next call establishes a new context.
- **reader unplugged / replugged**: ``SCARD_E_UNKNOWN_READER`` or a reader state ``UNKNOWN``
  raises :class:`~drivers.errors.ReaderNotFound`; while it is away the driver waits on
  pcscd's plug-and-play notification and picks the reader up again when it returns.
- **pyscard's monitor thread dying silently**: not used at all.  Card events come from our
  own ``SCardGetStatusChange`` calls on the caller's thread, so a dead thread cannot go
  unnoticed (the agent's watchdog checks that thread's heartbeat).
- **a transmit after the card left**: ``SCARD_W_REMOVED_CARD`` (0x80100069) and
  ``SCARD_E_NOT_TRANSACTED`` (0x80100016), as well as ``SCARD_E_NO_SMARTCARD``,
  ``SCARD_W_RESET_CARD`` and ``SCARD_W_UNPOWERED_CARD``, all raise
  :class:`~drivers.errors.CardGone`.
- **kernel NFC drivers** (``pn533``/``nfc`` modules) holding an ACR122U: pcscd then lists no
  reader; docs/hardware.md (Troubleshooting) says how to blacklist them.

pyscard is optional (the ``pcsc`` extra): without it, opening a ``pcsc://`` URL raises
:class:`~drivers.errors.DeviceUnavailable` with the install hint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from drivers.card.mifare_classic import MifareClassic
from drivers.errors import (
    CardGone,
    CardIOError,
    DeviceUnavailable,
    DeviceUrlError,
    DriverError,
    ReaderNotFound,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)

try:  # optional hardware library (the pcsc extra; docs/hardware.md)
    from smartcard import scard as _scard
except ImportError:  # pragma: no cover - exercised on machines without pyscard
    _scard = None

PNP = "\\\\?PnP?\\Notification"

# pcsc-lite return codes (as unsigned 32-bit values)
SERVICE_GONE = {0x8010001D, 0x8010001E, 0x80100003, 0x80100013, 0x80100001}
READER_GONE = {0x80100009, 0x80100017, 0x8010002E}
CARD_GONE = {0x80100069, 0x80100016, 0x8010000C, 0x80100068, 0x80100067, 0x80100066}
TIMEOUT = 0x8010000A
CANCELLED = 0x80100002

#: Readers whose LED and buzzer answer the ACR122U pseudo-APDU ``FF 00 40``.
FEEDBACK_READERS = ("ACR122", "ACS ACR122", "ACR1252", "ACS ACR1252")


def available() -> bool:
    return _scard is not None


def _u32(rv: int) -> int:
    return rv & 0xFFFFFFFF


def _message(rv: int) -> str:
    assert _scard is not None
    try:
        text = str(_scard.SCardGetErrorMessage(rv))
    except Exception:  # pragma: no cover - pyscard always knows its codes
        text = "error"
    return f"{text} (0x{_u32(rv):08X})"


def _raise_for(rv: int, what: str) -> None:
    code = _u32(rv)
    if code == 0:
        return
    msg = f"{what}: {_message(rv)}"
    if code in SERVICE_GONE:
        raise ServiceUnavailable(msg)
    if code in READER_GONE:
        raise ReaderNotFound(msg)
    if code in CARD_GONE:
        raise CardGone(msg)
    raise CardIOError(msg)


def parse_url(url: str) -> str:
    """The reader-name filter of a ``pcsc://`` URL ("" for the first reader)."""
    if not url.startswith("pcsc://"):
        raise DeviceUrlError(f"not a pcsc:// URL: {url!r}")
    name = unquote(url[len("pcsc://") :]).rstrip("/")
    if any(c in name for c in "\x00\n\r"):
        raise DeviceUrlError("a reader name cannot hold control characters")
    return name


def matches(name_filter: str, reader: str) -> bool:
    return not name_filter or reader == name_filter or reader.startswith(name_filter)


class PcscCard:
    """A card on a PC/SC reader (implements :class:`drivers.reader.base.PresentCard`)."""

    def __init__(
        self, owner: PcscReader, hcard: Any, protocol: int, atr: bytes, detected_ns: int
    ) -> None:
        self._owner = owner
        self._hcard = hcard
        self._protocol = protocol
        self.reader = owner.reader_name or ""
        self.atr = atr
        self.detected_ns = detected_ns
        self._uid: bytes | None = None
        self._closed = False

    @property
    def uid(self) -> bytes:
        """The UID (PC/SC Part 3 GET DATA), asked for the first time it is needed: a card
        nobody wants to talk to costs no APDU.  A card that cannot tell raises CardGone if it
        left, else gives b""."""
        if self._uid is None:
            try:
                self._uid = _get_uid(self)
            except CardGone:
                raise
            except DriverError as exc:
                log.warning("card on %s did not tell its UID: %s", self.reader, exc)
                self._uid = b""
        return self._uid

    def transmit(self, apdu: bytes) -> bytes:
        assert _scard is not None
        if self._closed:
            raise CardGone("the card was let go")
        try:
            rv, resp = _scard.SCardTransmit(self._hcard, self._protocol, list(apdu))
        except _scard.error as exc:  # pyscard's own exception for bad arguments
            raise CardIOError(f"transmit: {exc}") from exc
        _raise_for(rv, "transmit")
        if not resp:  # vpcd answers nothing when the card left mid-exchange
            raise CardGone("the card did not answer (it left the reader)")
        return bytes(resp)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        assert _scard is not None
        _raise_for(_scard.SCardBeginTransaction(self._hcard), "begin transaction")
        try:
            yield
        finally:
            rv = _scard.SCardEndTransaction(self._hcard, _scard.SCARD_LEAVE_CARD)
            if _u32(rv) not in (0, *CARD_GONE, *SERVICE_GONE, *READER_GONE):
                log.warning("end transaction: %s", _message(rv))

    def reset(self) -> None:
        assert _scard is not None
        rv, proto = _scard.SCardReconnect(
            self._hcard,
            _scard.SCARD_SHARE_SHARED,
            _scard.SCARD_PROTOCOL_T0 | _scard.SCARD_PROTOCOL_T1,
            _scard.SCARD_RESET_CARD,
        )
        _raise_for(rv, "reset card")
        self._protocol = proto

    def feedback(self, ok: bool) -> None:
        """Green LED and one short beep, or red LED and two beeps, on readers that have them
        (ACR122U pseudo-APDU ``FF 00 40``); a no-op on other readers, never an error."""
        if not self.reader.startswith(FEEDBACK_READERS):
            return
        apdu = feedback_apdu(ok)
        try:
            self.transmit(apdu)
        except DriverError as exc:
            log.debug("reader feedback failed: %s", exc)

    def close(self) -> None:
        if self._closed or _scard is None:
            return
        self._closed = True
        try:
            _scard.SCardDisconnect(self._hcard, _scard.SCARD_LEAVE_CARD)
        except _scard.error:  # pragma: no cover
            pass


def feedback_apdu(ok: bool) -> bytes:
    """ACR122U LED/buzzer control: P2 = LED state control, then T1 T2 (×100 ms), repetitions,
    buzzer link (01: on during T1)."""
    if ok:
        return bytes([0xFF, 0x00, 0x40, 0x2E, 0x04, 0x01, 0x00, 0x01, 0x01])
    return bytes([0xFF, 0x00, 0x40, 0x5D, 0x04, 0x02, 0x01, 0x02, 0x01])


class PcscReader:
    """One PC/SC reader, chosen by name (implements :class:`drivers.reader.base.CardReader`)."""

    def __init__(self, name_filter: str) -> None:
        if _scard is None:
            raise DeviceUnavailable(
                "pcsc:// needs pyscard: pip install 'ykt[pcsc]' (and the pcscd service)"
            )
        self.name_filter = name_filter
        self.name = f"pcsc://{name_filter}"
        self.reader_name: str | None = None
        self._ctx: Any = None
        self._lock = threading.Lock()  # guards _ctx against wake() from another thread
        self._state = 0  # last dwEventState we saw (0: unaware)
        self._present = False
        self._problem = ""
        self._establish()

    # -- context and reader ---------------------------------------------------------------
    def _establish(self) -> Any:
        assert _scard is not None
        with self._lock:
            if self._ctx is not None:
                return self._ctx
        try:
            rv, ctx = _scard.SCardEstablishContext(_scard.SCARD_SCOPE_USER)
        except _scard.error as exc:  # pragma: no cover
            raise ServiceUnavailable(f"PC/SC: {exc}") from exc
        if _u32(rv) != 0:
            self._problem = "pcscd not running"
            raise ServiceUnavailable(f"cannot reach pcscd: {_message(rv)}")
        with self._lock:
            self._ctx = ctx
        self._state = 0
        log.info("PC/SC context established")
        return ctx

    def _drop_context(self) -> None:
        assert _scard is not None
        with self._lock:
            ctx, self._ctx = self._ctx, None
        self.reader_name = None
        self._state = 0
        self._present = False
        if ctx is not None:
            try:
                _scard.SCardReleaseContext(ctx)
            except _scard.error:  # pragma: no cover
                pass

    def _call(self, fn: Any, *args: Any) -> Any:
        """Call a context function; a dead service drops the context and raises."""
        assert _scard is not None
        out = fn(*args)
        rv = out[0] if isinstance(out, tuple | list) else out
        if _u32(rv) in SERVICE_GONE:
            self._drop_context()
            self._problem = "pcscd stopped or restarted"
            raise ServiceUnavailable(f"pcscd went away: {_message(rv)}")
        return out

    def readers(self) -> list[str]:
        assert _scard is not None
        ctx = self._establish()
        rv, names = self._call(_scard.SCardListReaders, ctx, [])
        if _u32(rv) == 0x8010002E:  # no readers available
            return []
        _raise_for(rv, "list readers")
        return [str(n) for n in names]

    def _find(self) -> str:
        if self.reader_name is not None:
            return self.reader_name
        names = self.readers()
        chosen = next((n for n in names if matches(self.name_filter, n)), None)
        if chosen is None:
            self._problem = f"reader {self.name_filter or '(any)'} not found"
            raise ReaderNotFound(
                f"reader {self.name_filter or '(any)'!r} not found; present: "
                + (", ".join(repr(n) for n in names) or "none")
            )
        others = [n for n in names if n != chosen]
        log.info(
            "using PC/SC reader %r%s",
            chosen,
            f" (ignoring {', '.join(map(repr, others))})" if others else "",
        )
        self.reader_name = chosen
        self._state = 0
        return chosen

    def _wait_for_readers(self, timeout: float) -> None:
        """Block until the set of readers changes (plug-and-play) or ``timeout`` passes."""
        assert _scard is not None
        ctx = self._establish()
        try:
            count = len(self.readers())
        except ReaderNotFound:
            count = 0
        rv, _states = self._call(
            _scard.SCardGetStatusChange, ctx, int(timeout * 1000), [(PNP, count << 16)]
        )
        if _u32(rv) not in (0, TIMEOUT, CANCELLED):
            time.sleep(min(timeout, 0.2))  # no plug-and-play support: poll instead

    # -- the CardReader protocol ----------------------------------------------------------
    def wait_for_card(self, timeout: float) -> PcscCard | None:
        assert _scard is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                reader = self._find()
            except ReaderNotFound:
                self._wait_for_readers(min(left, 1.0))
                if time.monotonic() >= deadline:
                    self._find()  # still missing: tell the caller
                continue
            ctx = self._establish()
            rv, states = self._call(
                _scard.SCardGetStatusChange, ctx, int(left * 1000), [(reader, self._state)]
            )
            code = _u32(rv)
            if code in (TIMEOUT, CANCELLED):
                return None
            if code in READER_GONE:
                self._lost_reader(_message(rv))
                continue
            _raise_for(rv, "watch reader")
            _name, event, _atr = states[0]
            first = self._state == 0
            count_changed = (event >> 16) != (self._state >> 16)
            self._state = event & ~_scard.SCARD_STATE_CHANGED
            if event & (_scard.SCARD_STATE_UNKNOWN | _scard.SCARD_STATE_IGNORE):
                self._lost_reader("the reader disappeared")
                continue
            if event & _scard.SCARD_STATE_UNAVAILABLE:
                self._problem = "reader unavailable"
                continue
            present = bool(event & _scard.SCARD_STATE_PRESENT) and not (
                event & _scard.SCARD_STATE_MUTE
            )
            # an arrival: absent before, or the event counter moved (removed and put back
            # between two of our calls); the state seen first after (re)connecting is not one
            arrived = present and not first and (not self._present or count_changed)
            if self._problem:
                log.warning("reader %s ready again (was: %s)", reader, self._problem)
                self._problem = ""
            self._present = present
            if arrived:
                detected = time.time_ns()
                card = self._connect(reader, detected)
                if card is not None:
                    return card
                self._present = False  # gone again before we could talk to it

    def _lost_reader(self, why: str) -> None:
        log.warning("reader %s lost: %s", self.reader_name, why)
        self._problem = f"reader {self.reader_name} unplugged"
        self.reader_name = None
        self._present = False
        raise ReaderNotFound(f"reader {self.name_filter or '(any)'} went away: {why}")

    def _connect(self, reader: str, detected_ns: int) -> PcscCard | None:
        assert _scard is not None
        ctx = self._establish()
        rv, hcard, proto = self._call(
            _scard.SCardConnect,
            ctx,
            reader,
            _scard.SCARD_SHARE_SHARED,
            _scard.SCARD_PROTOCOL_T0 | _scard.SCARD_PROTOCOL_T1,
        )
        if _u32(rv) in CARD_GONE:
            return None
        _raise_for(rv, f"connect to the card on {reader}")
        rv, _rname, _state, _proto, atr = _scard.SCardStatus(hcard)
        return PcscCard(self, hcard, proto, bytes(atr) if _u32(rv) == 0 else b"", detected_ns)

    def current_card(self) -> PcscCard | None:
        try:
            reader = self._find()
        except ReaderNotFound:
            return None
        return self._connect(reader, time.time_ns())

    def wake(self) -> None:
        with self._lock:
            ctx = self._ctx
        if ctx is not None and _scard is not None:
            try:
                _scard.SCardCancel(ctx)
            except _scard.error:  # pragma: no cover
                pass

    def status(self) -> str:
        if self._problem:
            return self._problem
        if self.reader_name is None:
            return "looking for a reader"
        return f"{self.reader_name}: " + ("card present" if self._present else "ready")

    def healthy(self) -> bool:
        return self._ctx is not None and self.reader_name is not None and not self._problem

    def close(self) -> None:
        if _scard is not None:
            self._drop_context()


def _get_uid(card: PcscCard) -> bytes:
    """PC/SC Part 3 GET DATA (``FF CA 00 00 00``): the card's UID."""

    return MifareClassic(card).get_uid()


def open_url(url: str) -> PcscReader:
    return PcscReader(parse_url(url))
