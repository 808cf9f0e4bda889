"""The card-reader interface every reader implements (the simulated one included).

Two small protocols, composed (never derived from one another):

- :class:`CardReader` watches one reader and reports each *arrival* of a card once, as a
  :class:`PresentCard`; a card that stays on the reader is not reported again until it has
  been removed, but :meth:`CardReader.current_card` hands out the card lying there now.
- :class:`PresentCard` is the transport to that card: its UID, its ATR, and ``transmit`` of
  raw APDUs (command bytes in, response bytes with the status word out).  Card drivers such
  as :class:`drivers.card.mifare_classic.MifareClassic` speak their commands over it.

Errors are those of :mod:`drivers.errors`: :class:`~drivers.errors.CardGone` when the card
left mid-exchange, :class:`~drivers.errors.DeviceUnavailable` when the reader or its service
went away (the caller closes the reader and opens it again later).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable


class PresentCard(Protocol):
    reader: str  # the reader's name
    atr: bytes
    detected_ns: int  # time.time_ns() when the reader reported the card (benchmarks)

    @property
    def uid(self) -> bytes:
        """The UID the reader reads (PC/SC Part 3 GET DATA, ``FF CA``); may raise CardGone."""
        ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one APDU; return the response data followed by SW1 SW2."""
        ...

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the card for a sequence of APDUs no other application may interleave with."""
        ...

    def reset(self) -> None:
        """Power-cycle / re-select the card (needed after a failed MIFARE authentication)."""
        ...

    def close(self) -> None:
        """Let go of the card (it may stay on the reader)."""
        ...


@runtime_checkable
class CardReader(Protocol):
    name: str

    def wait_for_card(self, timeout: float) -> PresentCard | None:
        """Block until a card arrives (returns it), or ``timeout`` seconds pass, or
        :meth:`wake` is called (None)."""
        ...

    def current_card(self) -> PresentCard | None:
        """The card lying on the reader now, or None."""
        ...

    def wake(self) -> None:
        """Make a blocked :meth:`wait_for_card` return None at once (thread-safe)."""
        ...

    def status(self) -> str:
        """A short human-readable state: "ready", "no reader", "card present", …"""
        ...

    def healthy(self) -> bool:
        """True while the reader is there and its service answers."""
        ...

    def close(self) -> None: ...
