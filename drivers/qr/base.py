"""The QR-source interface every source implements (camera, serial scanner, simulated camera),
and the decoder interface the image sources use.

A source reports each *presentation* of a code once, as a :class:`QrRead`: a code that stays in
view is not reported again until it has left the view (like a card on a reader), so a phone
held up for half a second is one read, not fifteen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class QrRead:
    text: str  # the code's text as decoded
    source: str  # the source's name
    frame: int  # the frame (or line) number it was read from
    decode_ms: float  # time spent decoding that frame (0 for scanners that decode themselves)


@runtime_checkable
class QrSource(Protocol):
    name: str

    def read(self, timeout: float) -> QrRead | None:
        """Block until a code is presented (returns it) or ``timeout`` seconds pass (None)."""
        ...

    def status(self) -> str:
        """A short human-readable state: "ready", "camera gone", "ended", …"""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters: frames seen, decoded, dropped, reads …"""
        ...

    def rearm(self) -> None:
        """Forget what is in view: a code still held up is reported again (the POS calls this
        when a sale starts waiting for a credential, so a phone shown early still pays)."""
        ...

    def close(self) -> None: ...


class Decoder(Protocol):
    """Finds QR codes in a grayscale image (a 2-D ``uint8`` numpy array)."""

    name: str

    def decode(self, gray: Any) -> list[str]:
        """The texts of the QR codes found; one fast pass (a camera brings more frames)."""
        ...

    def decode_still(self, gray: Any) -> list[str]:
        """The texts found with extra passes, for a single still image (no next frame)."""
        ...
