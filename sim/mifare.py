"""A simulated MIFARE Classic 1K behind an ACR122U-style PC/SC Part 3 reader.

It answers the pseudo-APDUs a contactless reader exposes (get UID, load key, general
authenticate, read binary, update binary, LED/buzzer) with the status words such a reader
returns (``90 00``, ``63 00`` for every failure, ``6A 81`` for an unknown command), and keeps
what a real card keeps: 64 blocks, sector trailers with keys A/B and access bits (enforced as
the datasheet says, including "key B readable ⇒ key B cannot be used"), the authenticated
sector, a read-only manufacturer block.

One emulator serves both paths: the in-process ``sim://`` reader calls :meth:`apdu`
directly; :mod:`sim.vicc` serves it to pcscd through the vpcd virtual reader.

Tearing: with :meth:`tear_after` the card answers N more APDUs and then leaves; the APDU it
leaves during is dropped (``before``), half-written (``partial``: a write lands 8 of its 16
bytes) or carried out without an answer (``after``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from drivers.card.mifare_classic import (
    KEY_A,
    KEY_B,
    TRANSPORT_CONDITIONS,
    TRANSPORT_KEY,
    decode_access,
    trailer,
)
from sim.errors import SimError

log = logging.getLogger(__name__)

BLOCKS = 64
#: PC/SC Part 3 ATR of a contactless MIFARE Classic 1K (storage card, standard 03, card 00 01).
ATR_1K = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
OK = b"\x90\x00"
FAIL = b"\x63\x00"
NOT_SUPPORTED = b"\x6a\x81"
CLASS_NOT_SUPPORTED = b"\x6e\x00"
TEAR_MODES = ("before", "partial", "after")


class Torn(SimError):
    """The card left the field (a tear): the APDU in flight gets no answer."""


def manufacturer_block(uid: bytes) -> bytes:
    """Block 0: UID, BCC (4-byte UIDs), SAK 08, ATQA 04 00, then manufacturer data."""
    if len(uid) == 4:
        bcc = uid[0] ^ uid[1] ^ uid[2] ^ uid[3]
        head = uid + bytes([bcc, 0x08, 0x04, 0x00])
    elif len(uid) == 7:
        head = uid + bytes([0x08, 0x44, 0x00])
    else:
        raise SimError("a MIFARE Classic UID is 4 or 7 bytes")
    return (head + b"ykt-sim-card-1K!")[:16]


def blank_blocks(uid: bytes) -> list[bytearray]:
    """A factory-fresh 1K card: zero data, transport keys and access bits everywhere."""
    blocks = [bytearray(16) for _ in range(BLOCKS)]
    blocks[0] = bytearray(manufacturer_block(uid))
    for sector in range(16):
        blocks[sector * 4 + 3] = bytearray(
            trailer(TRANSPORT_KEY, TRANSPORT_CONDITIONS, TRANSPORT_KEY)
        )
    return blocks


def _data_rights(c: tuple[int, int, int]) -> tuple[str, str]:
    """(who may read, who may write) a data block: "" never, "A", "B" or "AB"."""
    return {
        (0, 0, 0): ("AB", "AB"),
        (0, 1, 0): ("AB", ""),
        (1, 0, 0): ("AB", "B"),
        (1, 1, 0): ("AB", "B"),
        (0, 0, 1): ("AB", ""),
        (0, 1, 1): ("B", "B"),
        (1, 0, 1): ("B", ""),
        (1, 1, 1): ("", ""),
    }[c]


#: trailer condition -> (key A write, access read, access write, key B read, key B write)
_TRAILER_RIGHTS = {
    (0, 0, 0): ("A", "A", "", "A", "A"),
    (0, 1, 0): ("", "A", "", "A", ""),
    (1, 0, 0): ("B", "AB", "", "", "B"),
    (1, 1, 0): ("", "AB", "", "", ""),
    (0, 0, 1): ("A", "A", "A", "A", "A"),
    (0, 1, 1): ("B", "AB", "B", "", "B"),
    (1, 0, 1): ("", "AB", "B", "", ""),
    (1, 1, 1): ("", "AB", "", "", ""),
}


class MifareClassic1K:
    """The card and the reader's key memory, answering PC/SC Part 3 pseudo-APDUs."""

    def __init__(
        self,
        uid: bytes,
        blocks: list[bytearray] | None = None,
        on_write: Callable[[MifareClassic1K], None] | None = None,
    ) -> None:
        self.uid = bytes(uid)
        self.blocks = blocks if blocks is not None else blank_blocks(self.uid)
        if len(self.blocks) != BLOCKS or any(len(b) != 16 for b in self.blocks):
            raise SimError("a MIFARE Classic 1K image has 64 blocks of 16 bytes")
        self.atr = ATR_1K
        self.on_write = on_write
        self.keys: dict[int, bytes] = {}
        self.auth: tuple[int, str] | None = None  # (sector, "A" | "B")
        self.apdus = 0  # APDUs answered since the last tear_after()
        self.log: list[tuple[bytes, bytes]] = []  # (command, response), newest last
        self._tear_at: int | None = None
        self._tear_mode = "partial"

    # -- the field ------------------------------------------------------------------------
    def power_on(self) -> None:
        """Card selected again (power-up, reset, re-presentation): authentication is gone."""
        self.auth = None

    def tear_after(self, n: int | None, mode: str = "partial") -> None:
        if mode not in TEAR_MODES:
            raise SimError(f"tear mode is one of {', '.join(TEAR_MODES)}")
        self._tear_at = None if n is None else self.apdus + n
        self._tear_mode = mode

    @property
    def torn(self) -> bool:
        return self._tear_at is not None and self.apdus >= self._tear_at

    # -- APDUs ----------------------------------------------------------------------------
    def apdu(self, cmd: bytes) -> bytes:
        if self._tear_at is not None and self.apdus >= self._tear_at:
            if self._tear_mode != "before":
                self._execute(cmd, partial=self._tear_mode == "partial")
            raise Torn(f"card torn away after {self._tear_at} APDUs")
        resp = self._execute(cmd)
        self.apdus += 1
        self.log.append((bytes(cmd), resp))
        del self.log[:-200]
        return resp

    def _execute(self, cmd: bytes, partial: bool = False) -> bytes:
        if len(cmd) < 4:
            return b"\x67\x00"
        if cmd[0] != 0xFF:
            return CLASS_NOT_SUPPORTED
        ins, p1, p2 = cmd[1], cmd[2], cmd[3]
        body = cmd[5 : 5 + cmd[4]] if len(cmd) > 5 else b""
        if ins == 0xCA:  # GET DATA
            if p1 != 0x00:
                return NOT_SUPPORTED
            return self.uid + OK
        if ins == 0x82:  # LOAD KEY
            if p1 != 0x00 or p2 > 0x01 or len(body) != 6 or cmd[4] != 6:
                return FAIL
            self.keys[p2] = bytes(body)
            return OK
        if ins == 0x86:  # GENERAL AUTHENTICATE
            if cmd[4] != 5 or len(body) != 5 or body[0] != 0x01:
                return FAIL
            return self._authenticate(body[2], body[3], body[4])
        if ins == 0x88:  # AUTHENTICATE (obsolete PC/SC 2.01 form)
            return self._authenticate(
                p2, cmd[4] if len(cmd) > 4 else 0, cmd[5] if len(cmd) > 5 else 0
            )
        if ins == 0xB0:  # READ BINARY
            le = cmd[4] if len(cmd) > 4 else 0
            if p1 != 0x00 or le not in (0x00, 0x10):
                return FAIL
            data = self._read(p2)
            return FAIL if data is None else data + OK
        if ins == 0xD6:  # UPDATE BINARY
            if p1 != 0x00 or cmd[4] != 0x10 or len(body) != 16:
                return FAIL
            return OK if self._write(p2, bytes(body), partial) else FAIL
        if ins == 0x00 and p1 == 0x40:  # ACR122U LED and buzzer control
            return b"\x90" + bytes([p2 & 0x0F])
        return NOT_SUPPORTED

    def _authenticate(self, block: int, key_type: int, slot: int) -> bytes:
        self.auth = None
        if block >= BLOCKS or key_type not in (KEY_A, KEY_B) or slot not in self.keys:
            return FAIL
        t = self.blocks[(block // 4) * 4 + 3]
        stored = bytes(t[0:6]) if key_type == KEY_A else bytes(t[10:16])
        if stored != self.keys[slot]:
            return FAIL
        self.auth = (block // 4, "A" if key_type == KEY_A else "B")
        return OK

    def _rights(self, block: int) -> tuple[str, tuple[str, ...]] | None:
        """(key in use, rights) for a block of the authenticated sector, None if not allowed."""
        if self.auth is None or self.auth[0] != block // 4:
            return None
        conds = decode_access(bytes(self.blocks[(block // 4) * 4 + 3][6:9]))
        if conds is None:
            return None  # corrupt access bits: the sector is blocked
        key = self.auth[1]
        t_rights = _TRAILER_RIGHTS[conds[3]]
        if key == "B" and "A" in t_rights[3] and block % 4 != 3:
            return None  # key B readable: it cannot be used for data blocks
        if block % 4 == 3:
            return key, t_rights
        return key, _data_rights(conds[block % 4])

    def _read(self, block: int) -> bytes | None:
        if block >= BLOCKS:
            return None
        r = self._rights(block)
        if r is None:
            return None
        key, rights = r
        raw = bytes(self.blocks[block])
        if block % 4 != 3:
            return raw if key in rights[0] else None
        acc = raw[6:10] if key in rights[1] else b"\x00" * 4
        kb = raw[10:16] if key in rights[3] else b"\x00" * 6
        return b"\x00" * 6 + acc + kb

    def _write(self, block: int, data: bytes, partial: bool) -> bool:
        if block == 0 or block >= BLOCKS:
            return False
        r = self._rights(block)
        if r is None:
            return False
        key, rights = r
        old = bytearray(self.blocks[block])
        if block % 4 != 3:
            if key not in rights[1]:
                return False
            new = bytearray(data)
        else:
            new = bytearray(old)
            if key in rights[0]:
                new[0:6] = data[0:6]
            if key in rights[2]:
                new[6:10] = data[6:10]
            if key in rights[4]:
                new[10:16] = data[10:16]
        if partial:
            new[8:16] = old[8:16]
        self.blocks[block] = new
        if self.on_write is not None:
            self.on_write(self)
        return True
