"""An in-process simulated card reader (``sim://NAME``) implementing
:class:`drivers.reader.base.CardReader`.

Cards are put on it with :meth:`SimReader.present` (by the agent's control API, which
``ykt sim sale`` uses) and taken away with :meth:`SimReader.remove`.  Every reader is kept in a
process-wide table by name so the control API finds the one the agent opened.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit

from drivers.errors import DeviceUrlError
from drivers.reader.base import CardTap
from sim.errors import SimUsageError

log = logging.getLogger(__name__)

_READERS: dict[str, SimReader] = {}
_LOCK = threading.Lock()
_NAME = re.compile(r"^[\w.-]{1,64}$")


class SimReader:
    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._present: CardTap | None = None
        self._fresh = False  # an arrival not yet reported
        self._closed = False
        self.taps = 0

    def present(self, card_no: str, uid: str = "00000000") -> CardTap:
        """Put a card on the reader (replacing any card already there)."""
        if not card_no or len(card_no) > 32:
            raise SimUsageError("a simulated card needs a card number of 1-32 characters")
        tap = CardTap(uid=uid.upper(), card_no=card_no, reader=self.name)
        with self._cond:
            self._present = tap
            self._fresh = True
            self.taps += 1
            self._cond.notify_all()
        log.debug("sim reader %s: card %s presented", self.name, card_no)
        return tap

    def remove(self) -> None:
        with self._cond:
            self._present = None
            self._fresh = False

    def wait_for_tap(self, timeout: float) -> CardTap | None:
        with self._cond:
            if not self._fresh:
                self._cond.wait_for(lambda: self._fresh or self._closed, timeout)
            if not self._fresh or self._closed:
                return None
            self._fresh = False
            return self._present

    def status(self) -> str:
        with self._cond:
            return "card present" if self._present else "ready"

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with _LOCK:
            if _READERS.get(self.name) is self:
                del _READERS[self.name]


def open_url(url: str) -> SimReader:
    name = urlsplit(url).netloc or urlsplit(url).path.lstrip("/")
    if not _NAME.match(name):
        raise DeviceUrlError(f"sim:// reader needs a name: sim://NAME, got {url!r}")
    with _LOCK:
        reader = SimReader(name)
        _READERS[name] = reader
    return reader


def get(name: str) -> SimReader:
    with _LOCK:
        try:
            return _READERS[name]
        except KeyError:
            raise SimUsageError(f"no simulated reader named {name!r} in this process") from None
