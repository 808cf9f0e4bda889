"""The receipt-printer interface: print a receipt document, read the printer's status.

A :class:`Receipt` is what to print (text lines in any language, a QR code), not how: the
driver turns it into its printer's commands (ESC/POS, GB18030 text).  :meth:`Printer.print`
returns only once the printer said it printed the whole receipt (on a two-way transport: its
status read after the job); :class:`PrinterNotReady` when it is out of paper, its cover is open
or it is offline, before or during the job: the caller keeps the receipt and prints it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from drivers.errors import PrinterNotReady

__all__ = ["Printer", "PrinterNotReady", "PrinterStatus", "Receipt"]


@dataclass(frozen=True)
class Receipt:
    title: str  # printed large and centred (the merchant)
    lines: list[str] = field(default_factory=list)  # left-aligned text
    qr: str | None = None  # a QR code's text, printed centred under the lines
    footer: list[str] = field(default_factory=list)  # centred, under the QR


@dataclass(frozen=True)
class PrinterStatus:
    online: bool = True
    paper_out: bool = False
    paper_near_end: bool = False
    cover_open: bool = False
    error: bool = False  # an unrecoverable or auto-recoverable error (cutter jam, head heat)
    answered: bool = True  # False: the printer did not answer (one-way transport or gone)

    @property
    def ready(self) -> bool:
        return (
            self.answered and self.online and not (self.paper_out or self.cover_open or self.error)
        )

    def describe(self) -> str:
        if not self.answered:
            return "offline (no answer)"
        problems = [
            text
            for flag, text in (
                (self.paper_out, "paper out"),
                (self.cover_open, "cover open"),
                (self.error, "error"),
                (not self.online, "offline"),
            )
            if flag
        ]
        if problems:
            return ", ".join(problems)
        return "ready (paper near end)" if self.paper_near_end else "ready"


@runtime_checkable
class Printer(Protocol):
    name: str

    def print(self, receipt: Receipt) -> None:
        """Print ``receipt``; returns when the printer printed all of it.
        :class:`PrinterNotReady` (paper, cover, offline) or :class:`DeviceUnavailable` (gone)
        otherwise: then the receipt may be printed in part and must be printed again."""
        ...

    def status(self) -> PrinterStatus:
        """Ask the printer now (:class:`DeviceUnavailable` when it is gone)."""
        ...

    def close(self) -> None: ...
