"""ESC/POS receipt printers: the commands from python-escpos, the bytes through a transport.

==================================== =============================================================
URL                                  transport
==================================== =============================================================
``escpos+usb://VID:PID``             USB bulk endpoints (pyusb), e.g. ``escpos+usb://0416:5011``
``escpos+serial:///dev/ttyS1?baud=…`` a serial port (pyserial; default 9600 baud)
``escpos+net://HOST[:PORT]``         a network printer's raw port (default 9100)
==================================== =============================================================

python-escpos's printer classes *are* their transports (``Serial(Escpos)``); here its
:class:`escpos.printer.Dummy` only builds the commands and a :class:`drivers.transport.Transport`
is passed in (CONVENTIONS §1).  Chinese text goes in the printer's Chinese character mode
(``FS &``) encoded in GB18030, as Chinese thermal printers take it; the QR code is the printer's
own (``GS ( k``, model 2).

The status is read with the real-time commands ``DLE EOT n`` (n = 1 printer, 2 offline cause,
4 roll paper sensor), answered by the printer even while it is offline; a job ends with one, so
the answer comes once the printer got every byte before it: paper that runs out in the middle
of a receipt is reported for that receipt.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from drivers.errors import DeviceUnavailable, DeviceUrlError
from drivers.printer.base import PrinterNotReady, PrinterStatus, Receipt
from drivers.transport import SerialTransport, TcpTransport, Transport, UsbTransport, serial_url

log = logging.getLogger(__name__)

DLE_EOT = b"\x10\x04"
FS_AND = b"\x1c\x26"  # select Chinese character mode
FS_DOT = b"\x1c\x2e"  # cancel Chinese character mode
ENCODING = "gb18030"
STATUS_TIMEOUT = 1.0


def _answer_ok(byte: int) -> bool:
    """A status answer has bits 1 and 4 set and bits 0 and 7 clear (ESC/POS)."""
    return byte & 0x93 == 0x12


def parse_status(printer: int, offline: int, paper: int) -> PrinterStatus:
    """The answers to ``DLE EOT 1``, ``2`` and ``4`` as a :class:`PrinterStatus`."""
    return PrinterStatus(
        online=not printer & 0x08,
        cover_open=bool(offline & 0x04),
        paper_out=bool(offline & 0x20) or bool(paper & 0x60),
        error=bool(offline & 0x40),
        paper_near_end=bool(paper & 0x0C),
    )


def encode_receipt(receipt: Receipt) -> bytes:
    """The ESC/POS bytes of ``receipt`` (python-escpos builds the commands)."""
    try:
        from escpos.printer import Dummy
    except ImportError as exc:
        raise DeviceUnavailable(
            "python-escpos is not installed: pip install 'ykt[printer]'"
        ) from exc

    d: Any = Dummy()

    def text(line: str) -> None:
        d._raw(line.encode(ENCODING, errors="replace") + b"\n")

    d.hw("INIT")
    d._raw(FS_AND)
    d.set(align="center", bold=True, double_height=True, double_width=True)
    text(receipt.title)
    d.set(align="left", normal_textsize=True, bold=False)
    for line in receipt.lines:
        text(line)
    if receipt.qr:
        d.set(align="center", normal_textsize=True)
        d._raw(FS_DOT)
        d.qr(receipt.qr, native=True, size=4, ec=1)  # ec 1: QR_ECLEVEL_M
        d._raw(FS_AND)
    d.set(align="center", normal_textsize=True)
    for line in receipt.footer:
        text(line)
    d._raw(FS_DOT)
    d.cut(feed=True)
    return bytes(d.output)


class EscposPrinter:
    def __init__(self, name: str, transport: Transport) -> None:
        self.name = name
        self.transport = transport
        self._lock = threading.Lock()

    def _ask(self, n: int) -> int:
        self.transport.write(DLE_EOT + bytes([n]))
        got = self.transport.read(1, STATUS_TIMEOUT)
        if not got:
            raise _NoAnswer
        if not _answer_ok(got[0]):
            raise DeviceUnavailable(f"{self.name}: not a status answer: {got.hex()}")
        return got[0]

    def _status(self) -> PrinterStatus:
        if not self.transport.two_way:
            return PrinterStatus(answered=False)
        self.transport.discard_input()
        try:
            return parse_status(self._ask(1), self._ask(2), self._ask(4))
        except _NoAnswer:
            return PrinterStatus(answered=False, online=False)

    def status(self) -> PrinterStatus:
        with self._lock:
            return self._status()

    def print(self, receipt: Receipt) -> None:
        data = encode_receipt(receipt)
        with self._lock:
            before = self._status()
            if self.transport.two_way and not before.ready:
                raise PrinterNotReady(f"{self.name}: {before.describe()}", before)
            self.transport.write(data)
            after = self._status()  # answered once the printer took the whole job
            if self.transport.two_way and not after.ready:
                raise PrinterNotReady(f"{self.name}: {after.describe()} while printing", after)

    def close(self) -> None:
        self.transport.close()


class _NoAnswer(Exception):
    pass


def open_url(url: str) -> EscposPrinter:
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "escpos+serial":
        path, baud = serial_url(url, ("escpos+serial",))
        return EscposPrinter(url, SerialTransport(path, baud))
    if scheme == "escpos+net":
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise DeviceUrlError(f"a network printer is escpos+net://HOST[:PORT], got {url!r}")
        try:
            port = parts.port or 9100
        except ValueError:
            raise DeviceUrlError(f"{url}: the port is not a number") from None
        return EscposPrinter(url, TcpTransport(parts.hostname, port))
    if scheme == "escpos+usb":
        try:
            vid, pid = (int(x, 16) for x in parts.netloc.split(":"))
        except ValueError:
            raise DeviceUrlError(
                f"a USB printer is escpos+usb://VID:PID (hex), got {url!r}"
            ) from None
        if not (0 <= vid <= 0xFFFF and 0 <= pid <= 0xFFFF) or parts.path not in ("", "/"):
            raise DeviceUrlError(f"a USB printer is escpos+usb://VID:PID (hex), got {url!r}")
        return EscposPrinter(url, UsbTransport(vid, pid))
    raise DeviceUrlError(f"not an ESC/POS printer URL: {url!r}")
