"""The campus card layout on MIFARE Classic 1K, version 1 (docs/card-format.md has the table).

====== ======= ==================================================================== ===========
sector block   content                                                              keys A / B
====== ======= ==================================================================== ===========
0      0       manufacturer block (UID, BCC, SAK, ATQA), read-only                  untouched
0      1-2     unused (left for a MIFARE application directory)                     transport
1      4       header: "YKT", layout version, card type (R1), key version,          id_read /
               generation (R11), account id, expiry (R13), issue day                id_write
1      5       card number, ASCII, NUL-padded
1      6       consumption-password verifier (R5)
2      8-10    issuer signature, bytes 0-47
3      12      issuer signature, bytes 48-63
3      13-14   reserved (zero)
4      16, 17  offline counters, slot A and slot B (R6)                             ctr_read /
4      18      reserved (zero)                                                      ctr_write
5      20      card proof tag for kiosks (sync.server.cardproof)                    tag_read /
5      21-22   reserved (zero)                                                      id_write
6-15           unused (transport keys, free for other applications)
====== ======= ==================================================================== ===========

Access bits of sectors 1-5: ``78 77 88`` (data: read with A or B, write with B only; trailer:
keys and access bits written with B only; key B never readable).

The issuer signature (Ed25519, the central server's issuer key) covers
``"ykt-card/1" ‖ UID ‖ block 4 ‖ block 5 ‖ block 6``: the identity is bound to the UID, so the
same data on another card is refused, and no terminal can make one.

A counter slot (16 bytes, big-endian) holds a *counter record*; two versions exist, told apart by
the MAC (each version MACs under its own domain), so a terminal reads cards of both and writes
version 2 (cards in the field are rewritten one tap at a time)::

    version 1: seq u16 | day u16 | spent u24 | taps u24 | tries u8 | epoch u8 | mac 4 bytes
    version 2: seq u8 | day u16 | spent u24 | taps u20 ‖ tries u4 | epoch u8 | offline u16 | mac 4

``day`` counts days since 2000-01-01 (0: never used); ``spent`` is the R6 amount spent since
campus midnight or the last correct consumption password (fen); ``taps`` counts sales;
``tries`` counts wrong consumption passwords (R5); ``epoch`` is the desk's password-reset
count (mod 256) the tries belong to; ``offline`` (version 2) is what the card spent offline since
its last online approval (fen; docs/security.md); ``mac`` = AES-CMAC(ctr_mac(UID), domain ‖ UID ‖
bytes 0-11)[:4] with domain "ctr" (version 1) or "ctr2" (version 2).  A write goes into the slot
that is *not* the newest valid one, so a card pulled away mid-write keeps its last good slot
(tearing); the newest valid slot wins (a version 2 slot over a version 1 slot, else serial
arithmetic on ``seq``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, replace
from typing import Any

from drivers.card.mifare_classic import Conditions, trailer
from sync.card.keys import Keystore, aes_cmac
from sync.errors import CardRefused
from sync.rules import CardType

LAYOUT_VERSION = 1
MAGIC = b"YKT"
SIG_DOMAIN = b"ykt-card/1"

IDENTITY_SECTORS = (1, 2, 3)
COUNTER_SECTOR = 4
B_HEADER, B_CARDNO, B_VERIFIER = 4, 5, 6
B_SIGNATURE = (8, 9, 10, 12)
B_RESERVED = (13, 14, 18, 21, 22)
B_SLOTS = (16, 17)
TAG_SECTOR = 5
B_TAG = 20

#: data blocks: read A|B, write B; trailer: keys/access written with B, key B not readable.
ACCESS: Conditions = ((1, 0, 0), (1, 0, 0), (1, 0, 0), (0, 1, 1))

CARD_TYPE_CODES = {
    CardType.TEMPORARY: 1,
    CardType.STUDENT: 2,
    CardType.STAFF: 3,
    CardType.CONSUMER: 4,
}
CODE_CARD_TYPES = {v: k for k, v in CARD_TYPE_CODES.items()}

EPOCH = dt.date(2000, 1, 1)
NO_DATE = 0xFFFF
ISSUED_LEN = 112  # header ‖ card number ‖ verifier ‖ signature


def day_number(date: str | None) -> int:
    """A campus date (YYYY-MM-DD) as days since 2000-01-01; None as 0xFFFF."""
    if not date:
        return NO_DATE
    n = (dt.date.fromisoformat(date) - EPOCH).days
    if not 0 <= n < NO_DATE:
        raise ValueError(f"date {date} is outside 2000-01-01 … 2179")
    return n


def day_text(n: int) -> str | None:
    return None if n == NO_DATE else (EPOCH + dt.timedelta(days=n)).isoformat()


# -- identity -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    card_no: str
    account_id: int
    card_type: str  # R1
    generation: int  # R11
    expires: str | None  # R13, YYYY-MM-DD (the last valid day)
    issued: str
    key_version: int = 1
    version: int = LAYOUT_VERSION

    def header(self) -> bytes:
        return (
            MAGIC
            + bytes([self.version, CARD_TYPE_CODES[CardType(self.card_type)], self.key_version])
            + self.generation.to_bytes(2, "big")
            + self.account_id.to_bytes(4, "big")
            + day_number(self.expires).to_bytes(2, "big")
            + day_number(self.issued).to_bytes(2, "big")
        )

    def describe(self) -> dict[str, Any]:
        """The card's identity as ``ykt admin card read`` and ``ykt sim card dump`` print it
        (each adds the versions it shows)."""
        return {
            "card_no": self.card_no,
            "account_id": self.account_id,
            "type": self.card_type,
            "generation": self.generation,
            "expires": self.expires,
            "issued": self.issued,
        }

    def card_no_block(self) -> bytes:
        raw = self.card_no.encode("ascii")
        if not 1 <= len(raw) <= 16:
            raise ValueError("a card number is 1-16 ASCII characters")
        return raw.ljust(16, b"\x00")

    @classmethod
    def decode(cls, header: bytes, card_no: bytes) -> Identity:
        if header[:3] != MAGIC:
            raise CardRefused("foreign_card", "not a campus card (no ykt identity on it)")
        if header[3] != LAYOUT_VERSION:
            raise CardRefused(
                "bad_layout", f"card layout version {header[3]} is not supported by this terminal"
            )
        if header[4] not in CODE_CARD_TYPES:
            raise CardRefused("bad_layout", f"unknown card type code {header[4]} on the card")
        try:
            number = card_no.rstrip(b"\x00").decode("ascii")
        except UnicodeDecodeError:
            raise CardRefused("bad_layout", "the card number on the card is not text") from None
        if not number or b"\x00" in card_no.rstrip(b"\x00"):
            raise CardRefused("bad_layout", "the card number on the card is empty or damaged")
        return cls(
            card_no=number,
            account_id=int.from_bytes(header[8:12], "big"),
            card_type=CODE_CARD_TYPES[header[4]].value,
            generation=int.from_bytes(header[6:8], "big"),
            expires=day_text(int.from_bytes(header[12:14], "big")),
            issued=day_text(int.from_bytes(header[14:16], "big")) or "",
            key_version=header[5],
            version=header[3],
        )


# -- consumption-password verifier (R5) ------------------------------------------------------
VERIFIER_ALG_SCRYPT = 1
VERIFIER_LOG2N = 12


def verifier_salt(keys: Keystore, account_id: int) -> bytes:
    """Per account (so the server can keep the verifier and write it to every new card of the
    account) and keyed (a card read out without a terminal's pin key cannot be brute-forced)."""
    return aes_cmac(keys.derive("pin", b"acct" + account_id.to_bytes(4, "big")), b"pin-salt")


def make_verifier(
    keys: Keystore, account_id: int, password: str, log2n: int = VERIFIER_LOG2N
) -> bytes:
    """Block 6: alg ‖ log2 N ‖ r ‖ p ‖ scrypt(password, salt)[:12]."""
    r, p = 8, 1
    dk = hashlib.scrypt(
        password.encode(), salt=verifier_salt(keys, account_id), n=1 << log2n, r=r, p=p, dklen=12
    )
    return bytes([VERIFIER_ALG_SCRYPT, log2n, r, p]) + dk


def check_verifier(keys: Keystore, account_id: int, block: bytes, password: str) -> bool:
    alg, log2n, r, p = block[0], block[1], block[2], block[3]
    if alg != VERIFIER_ALG_SCRYPT or not 10 <= log2n <= 16 or not 1 <= r <= 16 or p != 1:
        raise CardRefused("bad_layout", "the consumption-password verifier on the card is damaged")
    dk = hashlib.scrypt(
        password.encode(), salt=verifier_salt(keys, account_id), n=1 << log2n, r=r, p=p, dklen=12
    )
    return hmac.compare_digest(dk, block[4:16])


# -- issuer signature ------------------------------------------------------------------------
def signed_message(uid: bytes, header: bytes, card_no: bytes, verifier: bytes) -> bytes:
    return SIG_DOMAIN + bytes([len(uid)]) + uid + header + card_no + verifier


def issue_blob(keys: Keystore, uid: bytes, ident: Identity, verifier: bytes) -> bytes:
    """What the issuer (the central server) hands the desk to write: blocks 4-6 and the
    signature (112 bytes)."""
    if keys.issuer is None:
        raise CardRefused("no_keys", "only the issuer (the central server) signs cards")
    header, number = ident.header(), ident.card_no_block()
    sig = keys.issuer.sign(signed_message(uid, header, number, verifier))
    return header + number + verifier + sig


def split_blob(blob: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    if len(blob) != ISSUED_LEN:
        raise ValueError(f"issued card data is {ISSUED_LEN} bytes, got {len(blob)}")
    return blob[0:16], blob[16:32], blob[32:48], blob[48:112]


def card_blocks(
    uid: bytes,
    blob: bytes,
    keys: Keystore,
    missing_key: bytes | None = None,
    tag: bytes | None = None,
    counters: Counters | None = None,
) -> dict[int, bytes]:
    """Every block ykt writes on a card: identity, signature, counters, proof tag, trailers.

    ``missing_key`` stands in for keys this keystore does not hold (simulated cards only);
    ``counters`` are what the new card starts with (R5 and R6 carried from the account), else
    none; they are written as their own counter record version (tests make cards of the earlier
    format so)."""
    if tag is not None and len(tag) != 16:
        raise ValueError("a card proof tag is 16 bytes")
    header, number, verifier, sig = split_blob(blob)
    first = counters or Counters()

    def key(name: str) -> bytes:
        if keys.has(name):
            return keys.sector_key(name, uid)
        if missing_key is None:
            raise CardRefused("no_keys", f"the {keys.role} keystore lacks the {name} key")
        return missing_key

    blocks = {
        B_HEADER: header,
        B_CARDNO: number,
        B_VERIFIER: verifier,
        8: sig[0:16],
        9: sig[16:32],
        10: sig[32:48],
        12: sig[48:64],
        13: bytes(16),
        14: bytes(16),
        18: bytes(16),
        B_TAG: tag or bytes(16),
        21: bytes(16),
        22: bytes(16),
        B_SLOTS[0]: replace(first, seq=1).encode(keys, uid),
        B_SLOTS[1]: Counters(seq=0, version=first.version).encode(keys, uid),
    }
    id_trailer = trailer(key("id_read"), ACCESS, key("id_write"))
    for s in IDENTITY_SECTORS:
        blocks[s * 4 + 3] = id_trailer
    blocks[COUNTER_SECTOR * 4 + 3] = trailer(key("ctr_read"), ACCESS, key("ctr_write"))
    blocks[TAG_SECTOR * 4 + 3] = trailer(key("tag_read"), ACCESS, key("id_write"))
    return blocks


# -- counters (R5, R6, offline risk), two slots ----------------------------------------------
#: The counter record a terminal writes (it reads versions 1 and 2).
COUNTER_VERSION = 2
#: What a version 2 record holds at most: wrong tries (a lockout after more is not possible on
#: the card, so the policy's ``pin_max_tries`` is at most this) and the offline amount (fen).
MAX_CARD_TRIES = 0xF
MAX_CARD_OFFLINE_FEN = 0xFFFF
MAX_CARD_TAPS = 0xFFFFF
_SEQ_BITS = {1: 16, 2: 8}
_MAC_DOMAIN = {1: b"ctr", 2: b"ctr2"}


@dataclass(frozen=True)
class Counters:
    seq: int = 0
    day: str | None = None  # the campus day ``spent`` belongs to
    spent_fen: int = 0  # R6: spent since midnight or the last correct consumption password
    taps: int = 0  # sales on this card
    tries: int = 0  # R5: wrong consumption passwords since the last correct one / desk reset
    epoch: int = 0  # the desk reset (mod 256) the tries count from
    offline_fen: int = 0  # spent offline since the card's last online approval (version 2)
    version: int = COUNTER_VERSION  # the counter record it was read from / is written as

    def describe(self) -> dict[str, Any]:
        """The counters as the desk and the dump print them."""
        return {
            "seq": self.seq,
            "day": self.day,
            "spent_fen": self.spent_fen,
            "taps": self.taps,
            "pin_tries": self.tries,
            "pin_epoch": self.epoch,
            "offline_fen": self.offline_fen,
            "version": self.version,
        }

    def body(self) -> bytes:
        day = 0 if self.day is None else day_number(self.day) + 1
        if self.version == 1:
            return (
                (self.seq & 0xFFFF).to_bytes(2, "big")
                + day.to_bytes(2, "big")
                + min(self.spent_fen, 0xFFFFFF).to_bytes(3, "big")
                + min(self.taps, 0xFFFFFF).to_bytes(3, "big")
                + min(self.tries, 0xFF).to_bytes(1, "big")
                + (self.epoch & 0xFF).to_bytes(1, "big")
            )
        if self.version != 2:
            raise ValueError(f"counter record version {self.version} does not exist")
        taps_tries = min(self.taps, MAX_CARD_TAPS) << 4 | min(self.tries, MAX_CARD_TRIES)
        return (
            (self.seq & 0xFF).to_bytes(1, "big")
            + day.to_bytes(2, "big")
            + min(self.spent_fen, 0xFFFFFF).to_bytes(3, "big")
            + taps_tries.to_bytes(3, "big")
            + (self.epoch & 0xFF).to_bytes(1, "big")
            + min(self.offline_fen, MAX_CARD_OFFLINE_FEN).to_bytes(2, "big")
        )

    @classmethod
    def carried(cls, given: object) -> Counters:
        """The counters a new card starts with, from the issuer's ``counters`` object
        (``{"day": "YYYY-MM-DD" | None, "spent_fen": N, "pin_tries": N, "pin_epoch": N}``;
        an issuer of an earlier version sends no tries: 0); ValueError when it is malformed."""
        if given is None:
            return cls()
        if not isinstance(given, dict):
            raise ValueError("card counters must be an object")
        day, spent = given.get("day"), given.get("spent_fen", 0)
        tries, epoch = given.get("pin_tries", 0), given.get("pin_epoch", 0)
        if day is not None and not isinstance(day, str):
            raise ValueError("card counters: day must be a date or null")
        if isinstance(spent, bool) or not isinstance(spent, int) or not 0 <= spent <= 0xFFFFFF:
            raise ValueError("card counters: spent_fen must be 0 … 16777215 fen")
        for name, value in (("pin_tries", tries), ("pin_epoch", epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise ValueError(f"card counters: {name} must be 0 … 255")
        if day:
            day_number(day)  # a date the card can hold, or ValueError
        return cls(
            day=day or None,
            spent_fen=spent if day else 0,
            tries=min(tries, MAX_CARD_TRIES),
            epoch=epoch,
        )

    def encode(self, keys: Keystore, uid: bytes) -> bytes:
        """The slot's 16 bytes, as counter record :attr:`version`."""
        body = self.body()
        return body + _ctr_mac(keys, uid, body, self.version)

    @classmethod
    def decode(cls, block: bytes, keys: Keystore, uid: bytes) -> Counters | None:
        """The slot's counters (either version), or None when its MAC fails (torn, damaged or
        forged)."""
        body, mac = block[:12], block[12:16]
        for version in (2, 1):
            if hmac.compare_digest(_ctr_mac(keys, uid, body, version), mac):
                return cls.parse(block, version)
        return None

    @classmethod
    def parse(cls, block: bytes, version: int) -> Counters:
        """The fields of a slot read as counter record ``version``, unchecked (for dumps: the
        MAC, and so the version, needs the ctr_mac key)."""
        body = block[:12]
        if version == 1:
            day = int.from_bytes(body[2:4], "big")
            return cls(
                seq=int.from_bytes(body[0:2], "big"),
                day=None if day == 0 else day_text(day - 1),
                spent_fen=int.from_bytes(body[4:7], "big"),
                taps=int.from_bytes(body[7:10], "big"),
                tries=body[10],
                epoch=body[11],
                version=1,
            )
        day = int.from_bytes(body[1:3], "big")
        taps_tries = int.from_bytes(body[6:9], "big")
        return cls(
            seq=body[0],
            day=None if day == 0 else day_text(day - 1),
            spent_fen=int.from_bytes(body[3:6], "big"),
            taps=taps_tries >> 4,
            tries=taps_tries & 0xF,
            epoch=body[9],
            offline_fen=int.from_bytes(body[10:12], "big"),
            version=2,
        )

    def newer_than(self, other: Counters) -> bool:
        """A version 2 record is newer than a version 1 record (a terminal never writes version
        1 again); within a version, serial-number arithmetic on ``seq`` (RFC 1982)."""
        if self.version != other.version:
            return self.version > other.version
        mod = 1 << _SEQ_BITS[self.version]
        return 0 < ((self.seq - other.seq) % mod) < mod // 2

    def next(self, **changes: object) -> Counters:
        """The next state, written as the current counter record version."""
        seq = (self.seq + 1) % (1 << _SEQ_BITS[COUNTER_VERSION])
        return replace(self, seq=seq, version=COUNTER_VERSION, **changes)  # type: ignore[arg-type]


def _ctr_mac(keys: Keystore, uid: bytes, body: bytes, version: int) -> bytes:
    return aes_cmac(keys.derive("ctr_mac", uid), _MAC_DOMAIN[version] + uid + body)[:4]


def choose_slot(a: Counters | None, b: Counters | None) -> tuple[int, Counters]:
    """(index of the slot to trust, its counters): the newest valid one."""
    if a is None and b is None:
        raise CardRefused(
            "counters_damaged", "the card's counters are damaged: see the service desk"
        )
    if b is None or (a is not None and not b.newer_than(a)):
        assert a is not None
        return 0, a
    return 1, b
