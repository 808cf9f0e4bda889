"""The PIN-pad interface: ask the diner for the consumption password, read what was keyed.

The digits are held in a :class:`PinEntry` whose ``repr`` hides them, so a log line or a
traceback that shows the entry does not show the password."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class PinEntry:
    kind: Literal["pin", "cancel"]
    digits: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"PinEntry({self.kind}, {len(self.digits)} digits)"


@runtime_checkable
class PinPad(Protocol):
    name: str

    def prompt(self, text: str) -> None:
        """Show ``text`` (the amount) and take keys until Enter or Cancel."""
        ...

    def idle(self) -> None:
        """Stop asking (the sale ended, was cancelled or timed out)."""
        ...

    def read(self, timeout: float) -> PinEntry | None:
        """The next entry (Enter or Cancel on the pad), or None after ``timeout`` s.
        Noise on the line is dropped (counted in :meth:`stats`), never returned."""
        ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...
