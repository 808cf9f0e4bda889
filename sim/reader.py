"""An in-process simulated card reader (``sim://NAME``) implementing
:class:`drivers.reader.base.CardReader`, with simulated MIFARE Classic 1K cards
(:class:`sim.mifare.MifareClassic1K`, the same emulator that sits behind pcscd's vpcd).

A test (or the agent's control API, which ``ykt sim sale`` uses) puts a card on it with
:meth:`SimReader.present`; that is a *tap*: the card stays while the application works with
it and leaves when the application lets go of it (:meth:`SimCard.close`) or when
:meth:`SimReader.remove` takes it away.  Readers are kept in a process-wide table by name so
the control API finds the one the agent opened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from drivers.errors import CardGone
from sim.mifare import MifareClassic1K, Torn
from sim.named import Named

log = logging.getLogger(__name__)

_READERS: Named[SimReader] = Named("reader")


class SimCard:
    """A simulated card on a simulated reader (implements ``PresentCard``)."""

    def __init__(self, reader: SimReader, emu: MifareClassic1K, stays: bool = False) -> None:
        self._reader = reader
        self.emu = emu
        self.stays = stays
        self.reader = reader.name
        self.uid = emu.uid
        self.atr = emu.atr
        self.detected_ns = time.time_ns()
        self.feedback_log: list[bool] = []
        self.gone = False

    def transmit(self, apdu: bytes) -> bytes:
        if self.gone:
            raise CardGone("the simulated card left the reader")
        try:
            return self.emu.apdu(apdu)
        except Torn as exc:
            self._reader.remove(self)
            raise CardGone(f"the simulated card left the reader: {exc}") from exc

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._reader.io_lock:
            yield

    def reset(self) -> None:
        if self.gone:
            raise CardGone("the simulated card left the reader")
        self.emu.power_on()

    def feedback(self, ok: bool) -> None:
        self.feedback_log.append(ok)

    def close(self) -> None:
        """The application is done: the simulated hand takes the card away (end of a tap),
        unless the card stays (held at a dispenser's encoder until the dispenser moves it)."""
        if not self.stays:
            self._reader.remove(self)


class SimReader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.io_lock = threading.RLock()
        self._cond = threading.Condition()
        self._card: SimCard | None = None
        self._fresh = False  # an arrival not yet reported
        self._woken = False
        self._closed = False
        self.taps = 0

    def present(self, emu: MifareClassic1K, stays: bool = False) -> SimCard:
        """Put a card on the reader (replacing any card already there): an arrival.  A tap
        ends when the application lets go of the card; a card that ``stays`` (a dispenser's
        card at its encoder) leaves only through :meth:`remove`."""
        card = SimCard(self, emu, stays)
        emu.power_on()
        with self._cond:
            if self._card is not None:
                self._card.gone = True
            self._card = card
            self._fresh = True
            self.taps += 1
            self._cond.notify_all()
        log.debug("sim reader %s: card %s presented", self.name, emu.uid.hex())
        return card

    def remove(self, card: SimCard | None = None) -> None:
        """Take the card (or only ``card``, if it is still the one there) away."""
        with self._cond:
            if self._card is not None and (card is None or self._card is card):
                self._card.gone = True
                self._card = None
                self._fresh = False

    def wait_for_card(self, timeout: float) -> SimCard | None:
        with self._cond:
            if not self._fresh:
                self._cond.wait_for(lambda: self._fresh or self._closed or self._woken, timeout)
            self._woken = False
            if not self._fresh or self._closed:
                return None
            self._fresh = False
            return self._card

    def current_card(self) -> SimCard | None:
        with self._cond:
            self._fresh = False  # handed out: not an arrival to report again
            return self._card

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def status(self) -> str:
        with self._cond:
            return "card present" if self._card else "ready"

    def healthy(self) -> bool:
        return not self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        _READERS.drop(self.name, self)


def open_url(url: str) -> SimReader:
    name = _READERS.name_in(url)
    return _READERS.put(name, SimReader(name))


def get(name: str) -> SimReader:
    return _READERS.get(name)
