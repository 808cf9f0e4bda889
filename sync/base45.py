"""Base45 (RFC 9285): bytes as text in the 45-character QR alphanumeric alphabet, so a QR code
can carry them in alphanumeric mode (5.5 bits a character: 1.5 characters a byte).

Two bytes become three characters (``c + 45·d + 45²·e``), a trailing byte two characters.
:func:`b45decode` refuses anything that is not canonical Base45 with :class:`ProtocolError`.
"""

from __future__ import annotations

from sync.errors import ProtocolError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def b45encode(data: bytes) -> str:
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        e, rest = divmod(n, 45 * 45)
        d, c = divmod(rest, 45)
        out += (ALPHABET[c], ALPHABET[d], ALPHABET[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (ALPHABET[c], ALPHABET[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    if len(text) % 3 == 1:
        raise ProtocolError("not Base45: the length leaves one character over")
    try:
        vals = [_INDEX[c] for c in text]
    except KeyError as exc:
        raise ProtocolError(f"not Base45: character {exc.args[0]!r}") from None
    out = bytearray()
    for i in range(0, len(vals), 3):
        chunk = vals[i : i + 3]
        if len(chunk) == 3:
            n = chunk[0] + 45 * chunk[1] + 45 * 45 * chunk[2]
            if n > 0xFFFF:
                raise ProtocolError("not Base45: a triplet is out of range")
            out += n.to_bytes(2, "big")
        else:
            n = chunk[0] + 45 * chunk[1]
            if n > 0xFF:
                raise ProtocolError("not Base45: the last pair is out of range")
            out.append(n)
    return bytes(out)
