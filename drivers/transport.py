"""Byte transports under the serial-line drivers (printer, customer display, PIN pad): a
serial port on pyserial, a TCP socket (a network printer's port 9100), a USB printer's bulk
endpoints on pyusb.

A driver is given a transport (CONVENTIONS §1: composed, never inherited); tests give it a
pseudo-terminal or a loopback socket, so the real code path runs.  Library errors (pyserial's,
pyusb's, the OS's) become :class:`drivers.errors.DeviceUnavailable` here.  Frames are logged at
DEBUG as ``>>>``/``<<<`` hex, except by drivers that say a transport carries secrets
(``quiet=True``: the PIN pad).
"""

from __future__ import annotations

import logging
import select
import socket
import time
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from drivers.errors import DeviceUnavailable, DeviceUrlError

log = logging.getLogger(__name__)

BAUDS = {1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400}


class Transport(Protocol):
    name: str
    #: whether the device answers (status queries need an answer)
    two_way: bool

    def write(self, data: bytes) -> None:
        """Send all of ``data`` (:class:`DeviceUnavailable` when the device is gone)."""
        ...

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes, waiting up to ``timeout`` s for the first (b"" when none came)."""
        ...

    def discard_input(self) -> None:
        """Forget bytes received and not read (a late answer to an earlier question)."""
        ...

    def close(self) -> None: ...


def serial_url(url: str, schemes: tuple[str, ...] = ("serial",)) -> tuple[str, int]:
    """``serial:///dev/ttyUSB0?baud=9600`` -> (path, baud)."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or parts.netloc or not parts.path.startswith("/"):
        raise DeviceUrlError(f"expected {schemes[0]}:///dev/ttyXXX?baud=9600, got {url!r}")
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(q) - {"baud"}
    if unknown:
        raise DeviceUrlError(f"{url}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        baud = int(q.get("baud", "9600"))
    except ValueError:
        raise DeviceUrlError(f"{url}: baud is a number") from None
    if baud not in BAUDS:
        raise DeviceUrlError(f"{url}: baud must be one of {sorted(BAUDS)}")
    return parts.path, baud


def _hex(data: bytes) -> str:
    return data.hex(" ") if len(data) <= 64 else data[:64].hex(" ") + f" … ({len(data)} bytes)"


class SerialTransport:
    """A serial port (RS-232, USB-serial, a pseudo-terminal) on pyserial."""

    two_way = True

    def __init__(self, path: str, baud: int = 9600, *, quiet: bool = False) -> None:
        self.name = path
        self.quiet = quiet
        try:
            import serial
        except ImportError as exc:
            raise DeviceUnavailable("pyserial is not installed: pip install 'ykt[serial]'") from exc
        self._errors: tuple[type[BaseException], ...] = (serial.SerialException, OSError)
        try:
            self._port: Any = serial.Serial(path, baudrate=baud, timeout=0, write_timeout=2)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceUnavailable(f"{path}: {exc}") from exc

    def write(self, data: bytes) -> None:
        if not self.quiet:
            log.debug("%s >>> %s", self.name, _hex(data))
        try:
            self._port.write(data)
            self._port.flush()
        except self._errors as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc

    def read(self, n: int, timeout: float) -> bytes:
        try:
            r, _, _ = select.select([self._port.fileno()], [], [], max(timeout, 0))
            data = bytes(self._port.read(n)) if r else b""
        except self._errors as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc
        except ValueError as exc:  # a closed port has no file number
            raise DeviceUnavailable(f"{self.name}: closed") from exc
        if r and not data:  # readable and nothing to read: the other end is gone
            raise DeviceUnavailable(f"{self.name}: the device hung up")
        if data and not self.quiet:
            log.debug("%s <<< %s", self.name, _hex(data))
        return data

    def discard_input(self) -> None:
        try:
            self._port.reset_input_buffer()
        except self._errors as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc

    def close(self) -> None:
        try:
            self._port.close()
        except self._errors:
            pass


class TcpTransport:
    """A TCP connection (a network printer's raw port, 9100)."""

    two_way = True

    def __init__(self, host: str, port: int, timeout: float = 3.0) -> None:
        self.name = f"{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data: bytes) -> None:
        log.debug("%s >>> %s", self.name, _hex(data))
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc

    def read(self, n: int, timeout: float) -> bytes:
        try:
            r, _, _ = select.select([self._sock], [], [], max(timeout, 0))
            if not r:
                return b""
            data = self._sock.recv(n)
        except OSError as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc
        if not data:
            raise DeviceUnavailable(f"{self.name}: the printer closed the connection")
        log.debug("%s <<< %s", self.name, _hex(data))
        return data

    def discard_input(self) -> None:
        while True:
            r, _, _ = select.select([self._sock], [], [], 0)
            if not r:
                return
            try:
                if not self._sock.recv(4096):
                    return
            except OSError:
                return

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class UsbTransport:
    """A USB printer's bulk endpoints on pyusb (the kernel's usblp driver must not hold the
    interface: docs/hardware.md)."""

    two_way = True

    def __init__(self, vid: int, pid: int) -> None:
        self.name = f"usb {vid:04x}:{pid:04x}"
        try:
            import usb.core
            import usb.util
        except ImportError as exc:
            raise DeviceUnavailable("pyusb is not installed: pip install 'ykt[printer]'") from exc
        self._usb_error: type[BaseException] = usb.core.USBError
        try:
            dev = usb.core.find(idVendor=vid, idProduct=pid)
            if dev is None:
                raise DeviceUnavailable(f"{self.name}: no such USB device (unplugged?)")
            if dev.is_kernel_driver_active(0):
                dev.detach_kernel_driver(0)
            dev.set_configuration()
            intf = dev.get_active_configuration()[(0, 0)]

            def ep(direction: int) -> Any:
                return usb.util.find_descriptor(
                    intf,
                    custom_match=lambda e: (
                        usb.util.endpoint_direction(e.bEndpointAddress) == direction
                    ),
                )

            self._out = ep(usb.util.ENDPOINT_OUT)
            self._in = ep(usb.util.ENDPOINT_IN)
        except (usb.core.USBError, NotImplementedError, ValueError) as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc
        if self._out is None:
            raise DeviceUnavailable(f"{self.name}: no bulk OUT endpoint")
        self.two_way = self._in is not None
        self._dev = dev

    def write(self, data: bytes) -> None:
        log.debug("%s >>> %s", self.name, _hex(data))
        try:
            self._out.write(data, timeout=5000)
        except self._usb_error as exc:
            raise DeviceUnavailable(f"{self.name}: {exc}") from exc

    def read(self, n: int, timeout: float) -> bytes:
        if self._in is None:
            return b""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = bytes(self._in.read(max(n, self._in.wMaxPacketSize), timeout=100))
            except self._usb_error as exc:
                if getattr(exc, "errno", None) in (110, None) and time.monotonic() < deadline:
                    continue  # a read timeout: ask again until ours passes
                if getattr(exc, "errno", None) == 110:
                    return b""
                raise DeviceUnavailable(f"{self.name}: {exc}") from exc
            if data:
                log.debug("%s <<< %s", self.name, _hex(data))
                return data[:n]
            if time.monotonic() >= deadline:
                return b""

    def discard_input(self) -> None:
        if self._in is None:
            return
        try:
            while self._in.read(self._in.wMaxPacketSize, timeout=1):
                pass
        except self._usb_error:
            return

    def close(self) -> None:
        try:
            import usb.util

            usb.util.dispose_resources(self._dev)
        except Exception:  # pyusb raises many kinds on a device that is gone
            pass
