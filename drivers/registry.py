"""Devices are named by URL and opened here (one table of schemes per device kind).

============= =========================== ===================================================
kind          scheme                      device
============= =========================== ===================================================
``qr``        ``camera:///dev/video0``    a camera through OpenCV (:mod:`drivers.qr.camera`)
``qr``        ``camera://file/PATH``      a video, image or image folder through OpenCV
``qr``        ``serial:///dev/ttyACM0``   a serial QR scanner on pyserial
                                          (:mod:`drivers.qr.serial_scanner`)
``reader``    ``pcsc://``                 the first PC/SC reader pcscd lists
                                          (:mod:`drivers.reader.pcsc`)
``reader``    ``pcsc://NAME``             the PC/SC reader called NAME (or whose name starts so)
``dispenser`` ``serial:///dev/ttyS0``     a Creator CRT-591 card dispenser on pyserial
                                          (``?baud=9600&addr=0``, :mod:`drivers.dispenser.crt591`)
``printer``   ``escpos+usb://VID:PID``    an ESC/POS receipt printer on USB, a serial port or
``printer``   ``escpos+serial:///dev/…``  the network (python-escpos commands;
``printer``   ``escpos+net://HOST:9100``  :mod:`drivers.printer.escpos`)
``display``   ``serial:///dev/ttyUSB0``   a pole display, Epson DM-D commands
                                          (:mod:`drivers.display.dmd`)
``pinpad``    ``serial:///dev/ttyUSB1``   a PIN pad, STX/ETX/LRC frames
                                          (:mod:`drivers.pinpad.framed`)
any           ``sim://NAME``              a simulated device, from the ``ykt.devices`` entry
                                          point ``sim`` (the simulator, :mod:`sim.devices`)
============= =========================== ===================================================

Other packages add schemes without this module knowing them: an entry point in the group
``ykt.devices`` named after the scheme points at a :class:`Provider`, loaded the first time a
URL of that scheme is opened.  This is how ``sim://`` reaches the registry while nothing here
imports the simulator.  Optional libraries (OpenCV, zxing-cpp, pyzbar, pyserial, pyscard) are
imported only when a device that needs them is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, overload, runtime_checkable
from urllib.parse import urlsplit

from drivers.dispenser import crt591
from drivers.dispenser.base import CardDispenser
from drivers.display import dmd
from drivers.display.base import CustomerDisplay
from drivers.errors import DeviceUrlError
from drivers.pinpad import framed
from drivers.pinpad.base import PinPad
from drivers.printer import escpos
from drivers.printer.base import Printer
from drivers.qr import camera, serial_scanner
from drivers.qr.base import QrSource
from drivers.reader import pcsc
from drivers.reader.base import CardReader

Opener = Callable[[str], Any]

#: the entry-point group of device providers (name: the URL scheme)
GROUP = "ykt.devices"


@runtime_checkable
class Provider(Protocol):
    """Devices of one URL scheme, from another package (an entry point of :data:`GROUP`)."""

    def open(self, kind: str, url: str) -> Any:
        """The device of ``kind`` named by ``url``; :class:`DeviceUrlError` for a kind it
        does not make."""
        ...


#: kind -> scheme -> opener(url)
_TABLE: dict[str, dict[str, Opener]] = {}
#: scheme -> entry point of its provider (loaded on first use)
_ENTRY: dict[str, Any] = {}
_PROVIDERS: dict[str, Provider] = {}


def register(kind: str, scheme: str, opener: Opener) -> None:
    _TABLE.setdefault(kind, {})[scheme] = opener


def schemes(kind: str) -> list[str]:
    _load_builtin()
    return sorted(set(_TABLE.get(kind, {})) | set(_ENTRY))


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if not scheme:
        raise DeviceUrlError(f"{url!r} is not a device URL (expected scheme://…)")
    return scheme


def provider(url: str) -> Provider | None:
    """The provider of ``url``'s scheme when another package provides it (``sim://``), else
    None (a built-in driver)."""
    _load_builtin()
    scheme = scheme_of(url)
    with _load_lock:
        if scheme not in _PROVIDERS and scheme in _ENTRY:
            loaded = _ENTRY[scheme].load()
            if not isinstance(loaded, Provider):
                raise DeviceUrlError(
                    f"the {scheme}:// provider {_ENTRY[scheme].value} has no open()"
                )
            _PROVIDERS[scheme] = loaded
        return _PROVIDERS.get(scheme)


@overload
def open_device(kind: Literal["reader"], url: str) -> CardReader: ...
@overload
def open_device(kind: Literal["qr"], url: str) -> QrSource: ...
@overload
def open_device(kind: Literal["dispenser"], url: str) -> CardDispenser: ...
@overload
def open_device(kind: Literal["printer"], url: str) -> Printer: ...
@overload
def open_device(kind: Literal["display"], url: str) -> CustomerDisplay: ...
@overload
def open_device(kind: Literal["pinpad"], url: str) -> PinPad: ...
def open_device(
    kind: Literal["reader", "qr", "dispenser", "printer", "display", "pinpad"], url: str
) -> CardReader | QrSource | CardDispenser | Printer | CustomerDisplay | PinPad:
    """Open the device of ``kind`` named by ``url``: a :class:`CardReader`, a
    :class:`QrSource`, a :class:`CardDispenser`, a :class:`Printer`, a
    :class:`CustomerDisplay` or a :class:`PinPad` (:class:`DeviceUrlError` when the scheme has
    no driver of that kind, or its provider made something else)."""
    _load_builtin()
    scheme = scheme_of(url)
    opener = _TABLE.get(kind, {}).get(scheme)
    if opener is not None:
        device = opener(url)
    else:
        found = provider(url)
        if found is None:
            known = ", ".join(f"{s}://" for s in schemes(kind)) or "none"
            raise DeviceUrlError(f"no {kind} driver for {scheme}:// (known: {known})")
        device = found.open(kind, url)
    if kind == "reader" and isinstance(device, CardReader):
        return device
    if kind == "qr" and isinstance(device, QrSource):
        return device
    if kind == "dispenser" and isinstance(device, CardDispenser):
        return device
    if kind == "printer" and isinstance(device, Printer):
        return device
    if kind == "display" and isinstance(device, CustomerDisplay):
        return device
    if kind == "pinpad" and isinstance(device, PinPad):
        return device
    raise DeviceUrlError(f"{url}: the {scheme}:// driver made no {kind} ({device!r})")


_loaded = False
_load_lock = threading.RLock()


def _load_builtin() -> None:
    """Register the built-in drivers and find the providers once (threads may open devices at
    the same time)."""
    global _loaded
    with _load_lock:
        if not _loaded:
            _register_builtin()
            for ep in entry_points(group=GROUP):
                _ENTRY.setdefault(ep.name, ep)
            _loaded = True


def _register_builtin() -> None:
    register("qr", "camera", camera.open_url)
    register("qr", "serial", serial_scanner.open_url)
    register("reader", "pcsc", pcsc.open_url)
    register("dispenser", "serial", crt591.open_url)
    for scheme in ("escpos+usb", "escpos+serial", "escpos+net"):
        register("printer", scheme, escpos.open_url)
    register("display", "serial", dmd.open_url)
    register("pinpad", "serial", framed.open_url)
