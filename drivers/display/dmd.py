"""Pole displays with the Epson DM-D (ESC/POS customer display) command set on a serial port:
``serial:///dev/ttyUSB0?baud=9600``.

Commands used (all in the DM-D110/DM-D210 command set, which most 2x20 VFD pole displays
accept): ``ESC @`` initialize, ``US MD1`` (1F 01) overwrite mode, ``CLR`` (0C) clear the
screen, ``US $ x y`` (1F 24 x y) move the cursor to column x, line y (from 1), then the text.
Text is ASCII (a display's own character set beyond ASCII varies); other characters show as
``?``.  A display only listens: a write that fails (the port gone) is the only sign of trouble.
"""

from __future__ import annotations

from drivers.transport import SerialTransport, Transport, serial_url

ESC_INIT = b"\x1b\x40"
OVERWRITE = b"\x1f\x01"
CLR = b"\x0c"


def cursor(x: int, y: int) -> bytes:
    return b"\x1f\x24" + bytes([x, y])


def encode_screen(lines: list[str], columns: int = 20, rows: int = 2) -> bytes:
    out = bytearray(CLR)
    for y, line in enumerate(lines[:rows], start=1):
        text = line[:columns].encode("ascii", errors="replace")
        out += cursor(1, y) + text
    return bytes(out)


class DmdDisplay:
    columns = 20
    rows = 2

    def __init__(self, name: str, transport: Transport) -> None:
        self.name = name
        self.transport = transport
        self.transport.write(ESC_INIT + OVERWRITE + CLR)

    def show(self, lines: list[str]) -> None:
        self.transport.write(encode_screen(lines, self.columns, self.rows))

    def close(self) -> None:
        self.transport.close()


def open_url(url: str) -> DmdDisplay:
    path, baud = serial_url(url)
    return DmdDisplay(url, SerialTransport(path, baud))
