"""Exceptions of the drivers package (pyscard's and the OS's errors are converted here).

::

    DriverError
    ├── DeviceUrlError        a device URL with an unknown scheme or bad parameters
    ├── DeviceUnavailable     the device is absent, unplugged, or its service is down
    │   ├── ServiceUnavailable    the PC/SC service (pcscd) is not running or was restarted
    │   └── ReaderNotFound        no reader matches the configured name (unplugged?)
    └── CardError             a card-level failure
        ├── CardGone              the card left the reader during an exchange
        ├── CardIOError           the reader answered something that is not a response
        └── CardStatusError       the card/reader answered a status word other than 90 00
            ├── CardAuthError         authentication refused, or an access without it (keys)
            └── CardNotSupported      the reader or card does not know the command
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error raised by a driver."""


class DeviceUrlError(DriverError, ValueError):
    pass


class DeviceUnavailable(DriverError):
    pass


class ServiceUnavailable(DeviceUnavailable):
    pass


class ReaderNotFound(DeviceUnavailable):
    pass


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
