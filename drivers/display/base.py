"""The customer-display interface: show a few short lines to the diner."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class CustomerDisplay(Protocol):
    name: str
    #: characters per line and lines (a 2x20 pole display)
    columns: int
    rows: int

    def show(self, lines: list[str]) -> None:
        """Clear the display and show ``lines`` (cut to its size);
        :class:`drivers.errors.DeviceUnavailable` when the display is gone."""
        ...

    def close(self) -> None: ...
