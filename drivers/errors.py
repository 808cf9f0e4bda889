"""The root of every ykt exception, and the exceptions of the drivers package (pyscard's,
pyserial's and the OS's errors are converted here).

The root lives here, in the lowest layer, so that every package can derive from it while the
dependencies point one way (docs/architecture.md).  Every error class says what it means to a
person at a terminal (``exit_code``) and to an HTTP client (``http_status`` and ``code``);
:func:`sync.errors.exit_code` and the HTTP handlers read those attributes, nothing else maps
errors.  The other packages' trees: :mod:`sync.errors` (shared core and wire),
:mod:`sync.server.errors` (the server's answers), :mod:`edge.errors` (the terminal),
:mod:`sim.errors` (the simulator).

::

    YktError                        base of every ykt error
    └── DriverError                 a device failed
        ├── DeviceUrlError              a device URL with an unknown scheme or bad parameters
        ├── DeviceUnavailable           the device is absent, unplugged, or its service is down
        │   ├── ServiceUnavailable          the PC/SC service (pcscd) is not running or restarted
        │   ├── ReaderNotFound              no reader matches the configured name (unplugged?)
        │   └── PrinterNotReady             the printer answers but cannot print (paper out,
        │                                   cover open, offline)
        ├── DispenserError              the card dispenser refused or failed a command
        │   ├── HopperEmpty                 no blank card left in the hopper
        │   ├── DispenserJammed             a card jammed in the dispenser (reset() recovers)
        │   ├── RejectBinFull               the reject bin is full: nothing can be captured
        │   └── DispenserLineError          noise on the serial line, or no answer in time
        └── CardError                   a card-level failure
            ├── CardGone                    the card left the reader during an exchange
            ├── CardIOError                 the reader answered something that is not a response
            └── CardStatusError             a status word other than 90 00
                ├── CardAuthError               authentication refused, or access without it
                └── CardNotSupported            the reader or card does not know the command
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from drivers.printer.base import PrinterStatus


class YktError(Exception):
    """Base of every ykt error.

    ``exit_code``: what a command exits with when this error ends it (1: the operation failed;
    2: bad usage or configuration).  ``http_status`` and ``code``: the answer of an HTTP API
    that this error ends (the server's and the agents' control APIs)."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    code: str = "error"


class DriverError(YktError):
    """Base of every error raised by a driver."""

    http_status = 503
    code = "device_error"


class DeviceUrlError(DriverError, ValueError):
    exit_code = 2
    http_status = 422
    code = "bad_device_url"


class DeviceUnavailable(DriverError):
    pass


class ServiceUnavailable(DeviceUnavailable):
    pass


class ReaderNotFound(DeviceUnavailable):
    pass


class PrinterNotReady(DeviceUnavailable):
    """The printer answers but cannot print; ``status`` is its
    :class:`drivers.printer.base.PrinterStatus`."""

    code = "printer_not_ready"

    def __init__(self, message: str, status: PrinterStatus) -> None:
        super().__init__(message)
        self.status = status


class DispenserError(DriverError):
    """The card dispenser refused or failed a command; ``device_code`` is the device's own
    error code when it gave one (CRT-591: two characters such as ``"10"``), else ``""``."""

    code = "dispenser_error"

    def __init__(self, message: str, device_code: str = "") -> None:
        super().__init__(message)
        self.device_code = device_code


class HopperEmpty(DispenserError):
    code = "hopper_empty"


class DispenserJammed(DispenserError):
    code = "dispenser_jammed"


class RejectBinFull(DispenserError):
    code = "reject_bin_full"


class DispenserLineError(DispenserError):
    """Noise on the serial line (garbage, a NAK too many, a short frame, a wrong BCC) or no
    answer in time after the command was acknowledged: the command's outcome is unknown, ask
    :meth:`status` (or :meth:`reset`) before anything else."""

    code = "dispenser_line"


class CardError(DriverError):
    pass


class CardGone(CardError):
    pass


class CardIOError(CardError):
    pass


class CardStatusError(CardError):
    """A status word other than 90 00; ``sw`` holds it (e.g. ``0x6300``)."""

    def __init__(self, message: str, sw: int) -> None:
        super().__init__(f"{message} (SW {sw:04X})")
        self.sw = sw


class CardAuthError(CardStatusError):
    pass


class CardNotSupported(CardStatusError):
    pass
