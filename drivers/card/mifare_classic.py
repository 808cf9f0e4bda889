"""MIFARE Classic through the PC/SC Part 3 pseudo-APDUs of contactless readers (ACR122U family).

=====================  =============================================  ==================
command                APDU                                           answer
=====================  =============================================  ==================
get UID                ``FF CA 00 00 00``                             UID ‖ 90 00
load key               ``FF 82 00 kk 06 key(6)``  (kk: volatile slot)  90 00
general authenticate   ``FF 86 00 00 05 01 00 bb tt kk``              90 00
                       (bb block, tt 60 key A / 61 key B, kk slot)
read binary            ``FF B0 00 bb 10``                             16 bytes ‖ 90 00
update binary          ``FF D6 00 bb 10 data(16)``                    90 00
=====================  =============================================  ==================

Any other status word is an error (:mod:`drivers.errors`): ACR122U-style readers answer
``63 00`` for every failure, PC/SC Part 3 readers may answer ``69 82`` / ``69 83`` (security
status, i.e. keys), ``6A 81`` / ``6D 00`` (not supported), ``65 81`` (memory failure).  The
driver is composed with its transport, never derived from it, and logs every
frame at DEBUG as ``>>>``/``<<<`` hex, with key bytes masked: no key is ever logged.
"""

from __future__ import annotations

import logging

from drivers.errors import CardAuthError, CardIOError, CardNotSupported, CardStatusError
from drivers.reader.base import PresentCard

log = logging.getLogger(__name__)

KEY_A = 0x60
KEY_B = 0x61
BLOCK_SIZE = 16
SW_OK = 0x9000

#: Status words that mean "the keys/authentication do not allow this".
AUTH_SWS = frozenset({0x6982, 0x6983, 0x6988})
#: Status words that mean "this reader/card does not know the command".
UNSUPPORTED_SWS = frozenset({0x6A81, 0x6D00, 0x6E00})


def hexs(data: bytes) -> str:
    return data.hex(" ").upper()


def _masked(apdu: bytes) -> str:
    """The APDU for the log, key bytes masked: LOAD KEY's key, and the keys A and B of a
    sector-trailer write."""
    if apdu[:2] == b"\xff\x82" and len(apdu) > 5:
        return hexs(apdu[:5]) + " " + " ".join("**" for _ in apdu[5:])
    if apdu[:2] == b"\xff\xd6" and len(apdu) == 21 and apdu[3] % 4 == 3:
        stars = " ".join("**" for _ in range(6))
        return f"{hexs(apdu[:5])} {stars} {hexs(apdu[11:15])} {stars}"
    return hexs(apdu)


def block_of(sector: int, index: int) -> int:
    """The absolute block number of block ``index`` (0-3) in ``sector`` (1K: sectors 0-15)."""
    return sector * 4 + index


def trailer_of(sector: int) -> int:
    return sector * 4 + 3


class MifareClassic:
    """MIFARE Classic commands over a present card (``transport``)."""

    def __init__(self, transport: PresentCard) -> None:
        self.card = transport

    # -- the exchange ---------------------------------------------------------------------
    def _exchange(self, apdu: bytes, what: str) -> bytes:
        log.debug(">>> %s", _masked(apdu))
        resp = self.card.transmit(apdu)
        log.debug("<<< %s", hexs(resp))
        if len(resp) < 2:
            raise CardIOError(f"{what}: the reader answered {len(resp)} bytes, not a response")
        sw = int.from_bytes(resp[-2:], "big")
        if sw == SW_OK:
            return resp[:-2]
        if sw in AUTH_SWS:
            raise CardAuthError(f"{what}: refused by the card's keys/access conditions", sw)
        if sw in UNSUPPORTED_SWS:
            raise CardNotSupported(f"{what}: not supported by this reader or card", sw)
        if sw == 0x6300:
            # ACR122U-style: one status word for every failure; authentication and access
            # failures are by far the most common cause, so callers see them as such
            raise CardAuthError(f"{what}: the operation failed", sw)
        raise CardStatusError(f"{what}: failed", sw)

    # -- commands -------------------------------------------------------------------------
    def get_uid(self) -> bytes:
        uid = self._exchange(bytes.fromhex("FFCA000000"), "get UID")
        if len(uid) not in (4, 7, 10):
            raise CardIOError(f"get UID: a UID is 4, 7 or 10 bytes, got {len(uid)}")
        return uid

    def load_key(self, slot: int, key: bytes) -> None:
        if len(key) != 6 or not 0 <= slot <= 0x1F:
            raise ValueError("a MIFARE key is 6 bytes, loaded into a slot 0-31")
        self._exchange(bytes([0xFF, 0x82, 0x00, slot, 0x06]) + key, f"load key {slot}")

    def authenticate(self, block: int, key_type: int, slot: int) -> None:
        if key_type not in (KEY_A, KEY_B):
            raise ValueError("key type is KEY_A (0x60) or KEY_B (0x61)")
        apdu = bytes([0xFF, 0x86, 0x00, 0x00, 0x05, 0x01, 0x00, block, key_type, slot])
        self._exchange(apdu, f"authenticate block {block} with key {'AB'[key_type - KEY_A]}")

    def read_block(self, block: int) -> bytes:
        data = self._exchange(bytes([0xFF, 0xB0, 0x00, block, BLOCK_SIZE]), f"read block {block}")
        if len(data) != BLOCK_SIZE:
            raise CardIOError(f"read block {block}: expected 16 bytes, got {len(data)}")
        return data

    def write_block(self, block: int, data: bytes) -> None:
        if len(data) != BLOCK_SIZE:
            raise ValueError("a MIFARE Classic block is 16 bytes")
        self._exchange(bytes([0xFF, 0xD6, 0x00, block, BLOCK_SIZE]) + data, f"write block {block}")


# -- sector trailers: keys and access bits (MIFARE Classic EV1 datasheet, §8.6-8.7) ----------
TRANSPORT_KEY = bytes.fromhex("FFFFFFFFFFFF")
#: Access conditions (C1, C2, C3) per block 0-3 of a sector; block 3 is the trailer.
Conditions = tuple[tuple[int, int, int], ...]
#: Transport configuration: data blocks r/w with A or B; trailer 001 (key A writes everything).
TRANSPORT_CONDITIONS: Conditions = ((0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 1))


def encode_access(conds: Conditions) -> bytes:
    """The three access-bit bytes (6-8 of a trailer) for the conditions of blocks 0-3."""
    c1 = sum(c[0] << i for i, c in enumerate(conds))
    c2 = sum(c[1] << i for i, c in enumerate(conds))
    c3 = sum(c[2] << i for i, c in enumerate(conds))
    return bytes([((~c2 & 0xF) << 4) | (~c1 & 0xF), (c1 << 4) | (~c3 & 0xF), (c3 << 4) | c2])


def decode_access(b: bytes) -> Conditions | None:
    """The conditions encoded in access-bit bytes, or None when their inverted copies do not
    match (a real card then blocks the sector for good)."""
    b6, b7, b8 = b[0], b[1], b[2]
    c1, c2, c3 = b7 >> 4, b8 & 0xF, b8 >> 4
    if (~c1 & 0xF) != (b6 & 0xF) or (~c2 & 0xF) != (b6 >> 4) or (~c3 & 0xF) != (b7 & 0xF):
        return None
    return tuple(((c1 >> i) & 1, (c2 >> i) & 1, (c3 >> i) & 1) for i in range(4))


def trailer(key_a: bytes, conds: Conditions, key_b: bytes, gpb: int = 0x69) -> bytes:
    """A sector trailer: key A ‖ access bits ‖ general-purpose byte ‖ key B."""
    if len(key_a) != 6 or len(key_b) != 6:
        raise ValueError("MIFARE keys are 6 bytes")
    return key_a + encode_access(conds) + bytes([gpb]) + key_b
