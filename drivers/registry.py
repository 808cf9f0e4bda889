"""Devices are named by URL and opened here (one table of schemes per device kind).

``sim://NAME``      the in-process simulated device called NAME (:mod:`sim`)
``pcsc://``         the first PC/SC reader pcscd lists (:mod:`drivers.reader.pcsc`)
``pcsc://NAME``     the PC/SC reader called NAME (or whose name starts with NAME)
=================== ======================================================================
=======
=========== =========================== ===================================================
kind        scheme                      device
=========== =========================== ===================================================
``reader``  ``sim://NAME``              the in-process simulated card reader (:mod:`sim`)
``qr``      ``sim://NAME``              the in-process simulated camera (:mod:`sim.camera`)
``qr``      ``camera:///dev/video0``    a camera through OpenCV (:mod:`drivers.qr.camera`)
``qr``      ``camera://file/PATH``      a video, image or image folder through OpenCV
``qr``      ``serial:///dev/ttyACM0``   a serial QR scanner on pyserial
                                        (:mod:`drivers.qr.serial_scanner`)
``reader``  ``pcsc://``                 the first PC/SC reader pcscd lists
                                        (:mod:`drivers.reader.pcsc`)
``reader``  ``pcsc://NAME``             the PC/SC reader called NAME (or whose name starts so)
=========== =========================== ===================================================

Other hardware schemes (``pcsc://``, ``escpos+…://``) register themselves in the same tables
as their drivers land.  Optional libraries (OpenCV, zxing-cpp, pyzbar, pyserial) are imported
only when a device that needs them is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from drivers.errors import DeviceUrlError

Opener = Callable[[str], Any]

#: kind -> scheme -> opener(url)
_TABLE: dict[str, dict[str, Opener]] = {}


def register(kind: str, scheme: str, opener: Opener) -> None:
    _TABLE.setdefault(kind, {})[scheme] = opener


def schemes(kind: str) -> list[str]:
    _load_builtin()
    return sorted(_TABLE.get(kind, {}))


def open_device(kind: str, url: str) -> Any:
    """Open the device of ``kind`` ("reader", …) named by ``url``."""
    _load_builtin()
    scheme = urlsplit(url).scheme
    if not scheme:
        raise DeviceUrlError(f"{url!r} is not a device URL (expected scheme://…)")
    try:
        opener = _TABLE[kind][scheme]
    except KeyError:
        known = ", ".join(f"{s}://" for s in schemes(kind)) or "none"
        raise DeviceUrlError(f"no {kind} driver for {scheme}:// (known: {known})") from None
    return opener(url)


_loaded = False
_load_lock = threading.Lock()


def _load_builtin() -> None:
    """Register the built-in drivers once (threads may open devices at the same time)."""
    global _loaded
    with _load_lock:
        if not _loaded:
            _register_builtin()
            _loaded = True


def _register_builtin() -> None:
    from drivers.qr import camera, serial_scanner
    from sim import camera as sim_camera
    from sim import reader as sim_reader

    register("reader", "sim", sim_reader.open_url)
    register("qr", "sim", sim_camera.open_url)
    register("qr", "camera", camera.open_url)
    register("qr", "serial", serial_scanner.open_url)
    register("reader", "pcsc", _open_pcsc)


def _open_pcsc(url: str) -> Any:
    from drivers.reader import pcsc  # imports pyscard (optional) only when asked for

    return pcsc.open_url(url)
