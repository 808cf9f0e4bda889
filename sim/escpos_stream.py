"""Read an ESC/POS byte stream as a printer does: cut it into commands and text, answer the
real-time status requests, and render what was printed (GB18030 text in Chinese mode, QR codes).

Used by the simulated printer (:mod:`sim.periph`) and by ``ykt sim printer show``.  Commands
not known here take the argument count of the ESC/POS reference, so the text after them reads
right; an unknown command is kept as such (``unknown``) rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10

#: (prefix, command byte) -> number of argument bytes
_FIXED: dict[tuple[int, int], int] = {
    **{(ESC, c): 0 for c in b"@2<"},
    **{(ESC, c): 1 for c in b"!-3EGJMRVadet{ c"},
    (ESC, ord("*")): -1,  # bit image: special
    **{(GS, c): 1 for c in b"!BHIbfhrwa"},
    **{(GS, c): 2 for c in b"LWP"},
    **{(FS, c): 0 for c in b"&."},
    **{(FS, c): 1 for c in b"!-W"},
    (DLE, 0x04): 1,
    (DLE, 0x05): 1,
}


@dataclass(frozen=True)
class Token:
    kind: str  # "text", "lf", "cmd", "status" (DLE EOT n), "qr", "cut", "unknown"
    data: bytes = b""
    cmd: bytes = b""
    raw: bytes = b""  # the bytes it was cut from


def _take(buf: bytes, i: int) -> tuple[Token | None, int]:
    """The token at ``buf[i:]`` and the index after it; (None, i) when it is incomplete."""
    b = buf[i]
    if b == 0x0A:
        return Token("lf"), i + 1
    if b in (ESC, GS, FS, DLE):
        if i + 1 >= len(buf):
            return None, i
        c = buf[i + 1]
        if (b == GS and c == ord("(")) or (b == FS and c == ord("(")):  # GS ( X pL pH data
            if i + 5 > len(buf):
                return None, i
            n = buf[i + 3] | buf[i + 4] << 8
            end = i + 5 + n
            if end > len(buf):
                return None, i
            return Token("cmd", buf[i + 5 : end], bytes(buf[i : i + 3])), end
        if b == GS and c == ord("V"):  # GS V m [n]
            if i + 2 >= len(buf):
                return None, i
            m = buf[i + 2]
            end = i + 3 + (1 if m in (65, 66, 97, 98, 103, 104) else 0)
            if end > len(buf):
                return None, i
            return Token("cut", buf[i + 2 : end], bytes(buf[i : i + 2])), end
        if b == GS and c == ord("v"):  # GS v 0 m xL xH yL yH data: raster image
            if i + 8 > len(buf):
                return None, i
            x = buf[i + 4] | buf[i + 5] << 8
            y = buf[i + 6] | buf[i + 7] << 8
            end = i + 8 + x * y
            if end > len(buf):
                return None, i
            return Token("cmd", b"", bytes(buf[i : i + 3])), end
        found = _FIXED.get((b, c))
        if found is None:
            return Token("unknown", b"", bytes(buf[i : i + 2])), i + 2
        n = found
        if n < 0:  # ESC * m nL nH data
            if i + 5 > len(buf):
                return None, i
            k = buf[i + 3] | buf[i + 4] << 8
            end = i + 5 + k * (3 if buf[i + 2] in (32, 33) else 1)
            if end > len(buf):
                return None, i
            return Token("cmd", b"", bytes(buf[i : i + 2])), end
        end = i + 2 + n
        if end > len(buf):
            return None, i
        kind = "status" if (b, c) == (DLE, 0x04) else "cmd"
        return Token(kind, buf[i + 2 : end], bytes(buf[i : i + 2])), end
    j = i
    while j < len(buf) and buf[j] not in (0x0A, ESC, GS, FS, DLE):
        j += 1
    return Token("text", buf[i:j]), j


class Tokenizer:
    """Cuts a stream into tokens as bytes arrive (a command split across reads waits for the
    rest)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Token]:
        buf = self._buf + data
        out: list[Token] = []
        i = 0
        while i < len(buf):
            tok, j = _take(buf, i)
            if tok is None:
                break
            out.append(replace(tok, raw=buf[i:j]))
            i = j
        self._buf = buf[i:]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


@dataclass
class Printed:
    """What came out on paper: one entry per receipt (cut)."""

    receipts: list[list[str]] = field(default_factory=list)
    qrs: list[list[str]] = field(default_factory=list)
    unknown: int = 0


def render(data: bytes) -> Printed:
    """The text lines and QR codes of an ESC/POS stream, receipt by receipt."""
    out = Printed()
    lines: list[str] = []
    qrs: list[str] = []
    line = b""
    chinese = False
    qr_data = b""

    def flush_line() -> None:
        nonlocal line
        lines.append(line.decode("gb18030" if chinese else "cp437", errors="replace"))
        line = b""

    for tok in Tokenizer().feed(data):
        if tok.kind == "text":
            line += tok.data
        elif tok.kind == "lf":
            flush_line()
        elif tok.kind == "cmd" and tok.cmd == b"\x1c&":
            chinese = True
        elif tok.kind == "cmd" and tok.cmd == b"\x1c.":
            chinese = False
        elif tok.kind == "cmd" and tok.cmd == b"\x1d(k" and tok.data[:2] == b"1P":
            qr_data = tok.data[3:]
        elif tok.kind == "cmd" and tok.cmd == b"\x1d(k" and tok.data[:2] == b"1Q":
            text = qr_data.decode("utf-8", errors="replace")
            qrs.append(text)
            lines.append(f"[QR] {text}")
        elif tok.kind == "cut":
            if line:
                flush_line()
            out.receipts.append(lines)
            out.qrs.append(qrs)
            lines, qrs = [], []
        elif tok.kind == "unknown":
            out.unknown += 1
    if line:
        flush_line()
    if lines or qrs:
        out.receipts.append(lines)
        out.qrs.append(qrs)
    return out


class PrinterModel:
    """A thermal receipt printer's behaviour: prints while it has paper (appends what it
    printed, unchanged, to ``sink``), answers ``DLE EOT n`` even while it cannot print.

    ``paper_after``: the paper runs out after that many more bytes (paper out mid-receipt)."""

    def __init__(self) -> None:
        self.tok = Tokenizer()
        self.paper = True
        self.cover_open = False
        self.power = True
        self.paper_after: int | None = None
        self.received = 0
        self.dropped = 0

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """(bytes printed, answers to send back) for ``data`` received."""
        if not self.power:
            self.dropped += len(data)
            return b"", b""
        printed = bytearray()
        answers = bytearray()
        for tok in self.tok.feed(data):
            raw = tok.raw
            self.received += len(raw)
            if tok.kind == "status":
                answers.append(self.answer(tok.data[0]))
                if self.can_print:
                    printed += raw
                continue
            if self.paper_after is not None:
                if self.paper_after <= 0:
                    self.paper, self.paper_after = False, None
                else:
                    self.paper_after -= len(raw)
            if self.can_print:
                printed += raw
            else:
                self.dropped += len(raw)
        return bytes(printed), bytes(answers)

    @property
    def can_print(self) -> bool:
        return self.power and self.paper and not self.cover_open

    def answer(self, n: int) -> int:
        base = 0x12
        if n == 1:
            return base | (0x08 if not self.can_print else 0)
        if n == 2:
            return base | (0x04 if self.cover_open else 0) | (0x20 if not self.paper else 0)
        if n == 4:
            return base | (0x60 | 0x0C if not self.paper else 0)
        return base
