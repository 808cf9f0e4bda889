"""The card-reader interface every reader implements (the simulated one included).

A reader reports each *arrival* of a card once, as a :class:`CardTap`: the UID the reader saw
and the identity read from the card.  A card that stays on the reader is not reported again
until it has been removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CardTap:
    uid: str  # upper-case hex, as the reader reports it
    card_no: str  # the campus card number read from the card
    reader: str  # the reader's name


class CardReader(Protocol):
    name: str

    def wait_for_tap(self, timeout: float) -> CardTap | None:
        """Block until a card arrives (returns it) or ``timeout`` seconds pass (None)."""
        ...

    def status(self) -> str:
        """A short human-readable state: "ready", "no reader", "card present", …"""
        ...

    def close(self) -> None: ...
