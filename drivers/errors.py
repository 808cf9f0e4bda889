"""Exceptions of the drivers package.

::

    DriverError
    ├── DeviceUrlError      a device URL with an unknown scheme or bad parameters
    ├── DeviceUnavailable   the device is absent, unplugged, or its service is down
    └── CardError           a card-level failure
        └── CardGone        the card left the reader during an exchange
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error raised by a driver."""


class DeviceUrlError(DriverError, ValueError):
    pass


class DeviceUnavailable(DriverError):
    pass


class CardError(DriverError):
    pass


class CardGone(CardError):
    pass
