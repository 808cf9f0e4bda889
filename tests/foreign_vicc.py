"""A second, independent simulated MIFARE Classic 1K for vpcd, written from the public documents
only (no code of ykt's own card simulator in ``sim/`` was read or imported), so that ykt can be
checked against a card it did not write itself (issue 3: "the check brings its own").

Three small layers:

- :class:`Classic1K`: the card (NXP MF1S50yyX): 64 blocks, the sector trailers' keys and access
  bits (datasheet §8.6-8.7), the authentication state, and the card's reaction to a failed
  authentication or a refused access (it NAKs and falls back to IDLE/HALT: nothing works until
  the reader selects it again, which is what a power cycle or reset does here).  Key A always
  reads as zeros, key B only where the trailer's access bits let it be read (and there it
  cannot serve for authentication: every access after such an authentication is refused);
  a trailer write changes only the parts the key may write; malformed access bits block the
  sector; the access bits are checked at every access.
- :class:`Acr122u`: what an ACS ACR122U does with the PC/SC Part 3 pseudo-APDUs (API v2.04
  §4-5): GET DATA ``FF CA``, LOAD KEYS ``FF 82`` (volatile slots 00/01), GENERAL AUTHENTICATE
  ``FF 86`` (and the obsolete ``FF 88``), READ BINARY ``FF B0``, UPDATE BINARY ``FF D6``.  Every
  failure the ACR122U reports is ``63 00``; an access to a sector that is not the authenticated
  one is ``69 82`` (PC/SC Part 3 "security status not satisfied"; ACS documents ``63 00`` for
  that too, a caller must accept both).
- :class:`ForeignVicc`: the vsmartcard vicc side of a vpcd slot: a TCP *client* of the slot's
  port; every message is a 2-byte big-endian length and then either one control byte (00 power
  off, 01 power on, 02 reset, 04 get ATR: answered with the ATR) or an APDU (answered with the
  response APDU).  Closing the connection takes the card away (:meth:`ForeignVicc.tear_after`
  does so in the middle of an exchange).  ``TCP_NODELAY`` is set, and ``TCP_QUICKACK`` before
  every receive (vpcd otherwise stalls on delayed ACKs).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# -- the card ----------------------------------------------------------------------------------

#: PC/SC Part 3 ATR of a storage card: RID A0 00 00 03 06, standard 03 (ISO 14443 A part 3),
#: card name 00 01 (MIFARE Classic 1K), then TCK.
ATR_CLASSIC_1K = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")

TRANSPORT_KEY = b"\xff" * 6
#: Default access bits on delivery: data blocks 000, trailer 001 (transport configuration).
TRANSPORT_ACCESS = bytes.fromhex("FF078069")

A, B = "A", "B"

# Data blocks (datasheet table 8): (C1, C2, C3) -> (who may read, who may write).
DATA_RIGHTS: dict[tuple[int, int, int], tuple[str, str]] = {
    (0, 0, 0): ("AB", "AB"),
    (0, 1, 0): ("AB", ""),
    (1, 0, 0): ("AB", "B"),
    (1, 1, 0): ("AB", "B"),
    (0, 0, 1): ("AB", ""),
    (0, 1, 1): ("B", "B"),
    (1, 0, 1): ("B", ""),
    (1, 1, 1): ("", ""),
}


@dataclass(frozen=True)
class TrailerRights:
    """Sector trailer (datasheet table 7): who may write key A, read / write the access bits
    (and byte 9), read / write key B.  Key A is never readable."""

    key_a_write: str
    access_read: str
    access_write: str
    key_b_read: str
    key_b_write: str


TRAILER_RIGHTS: dict[tuple[int, int, int], TrailerRights] = {
    (0, 0, 0): TrailerRights("A", "A", "", "A", "A"),
    (0, 1, 0): TrailerRights("", "A", "", "A", ""),
    (1, 0, 0): TrailerRights("B", "AB", "", "", "B"),
    (1, 1, 0): TrailerRights("", "AB", "", "", ""),
    (0, 0, 1): TrailerRights("A", "A", "A", "A", "A"),
    (0, 1, 1): TrailerRights("B", "AB", "B", "", "B"),
    (1, 0, 1): TrailerRights("", "AB", "B", "", ""),
    (1, 1, 1): TrailerRights("", "AB", "", "", ""),
}


def access_conditions(access: bytes) -> list[tuple[int, int, int]] | None:
    """(C1, C2, C3) for blocks 0-3 from trailer bytes 6-8, or None when the inverted copies do
    not match (a format violation: the card then blocks the whole sector)."""
    b6, b7, b8 = access[0], access[1], access[2]
    c1, c2, c3 = b7 >> 4, b8 & 0x0F, b8 >> 4
    if (b6 & 0x0F) != (c1 ^ 0x0F) or (b6 >> 4) != (c2 ^ 0x0F) or (b7 & 0x0F) != (c3 ^ 0x0F):
        return None
    return [((c1 >> i) & 1, (c2 >> i) & 1, (c3 >> i) & 1) for i in range(4)]


class CardRefusal(Exception):
    """The card NAKed (or stayed mute): it is back in IDLE/HALT until selected again."""


class NotAuthenticated(CardRefusal):
    """An access to a block outside the authenticated sector (or with no authentication)."""


class Classic1K:
    """A blank MIFARE Classic 1K (transport keys and access bits) with a 4- or 7-byte UID."""

    def __init__(self, uid: bytes) -> None:
        if len(uid) == 4:  # single size: UID, BCC, SAK 08, ATQA 00 04 (LSB first)
            head = uid + bytes([uid[0] ^ uid[1] ^ uid[2] ^ uid[3], 0x08, 0x04, 0x00])
        elif len(uid) == 7:  # double size (MIFARE Classic EV1 7-byte UID): SAK 08, ATQA 00 44
            head = uid + bytes([0x08, 0x44, 0x00])
        else:
            raise ValueError("a MIFARE Classic UID is 4 or 7 bytes")
        self.uid = uid
        trailer = TRANSPORT_KEY + TRANSPORT_ACCESS + TRANSPORT_KEY
        self.blocks = [bytes(16) for _ in range(64)]
        self.blocks[0] = head + bytes.fromhex("62636465666768696A6B6C")[: 16 - len(head)]
        for s in range(16):
            self.blocks[s * 4 + 3] = trailer
        self.auth: tuple[int, str] | None = None  # (sector, "A" | "B")
        self.halted = False

    # -- selection ---------------------------------------------------------------------------
    def select(self) -> None:
        """The reader (re)activates the card: REQA/WUPA, anticollision, SELECT."""
        self.auth = None
        self.halted = False

    def _refuse(self, exc: type[CardRefusal] = CardRefusal) -> CardRefusal:
        self.auth = None
        self.halted = True
        return exc()

    # -- helpers -----------------------------------------------------------------------------
    def _conditions(self, sector: int) -> list[tuple[int, int, int]] | None:
        return access_conditions(self.blocks[sector * 4 + 3][6:9])

    def _usable_key(self, sector: int) -> str:
        """The key the current session may use: key B is worthless where it is readable."""
        assert self.auth is not None
        key = self.auth[1]
        conds = self._conditions(sector)
        assert conds is not None  # a blocked sector never authenticates
        if key == B and TRAILER_RIGHTS[conds[3]].key_b_read:
            return ""
        return key

    def _session(self, block: int) -> tuple[int, int, str]:
        """(sector, index in the sector, key) for an access to ``block``, or a refusal."""
        if self.halted:
            raise CardRefusal()
        if not 0 <= block < 64:
            raise self._refuse()
        sector, index = divmod(block, 4)
        if self.auth is None or self.auth[0] != sector:
            raise self._refuse(NotAuthenticated)
        return sector, index, self._usable_key(sector)

    # -- commands ----------------------------------------------------------------------------
    def authenticate(self, block: int, key_type: str, key: bytes) -> None:
        """Three-pass authentication for the sector of ``block`` (nested: a new one replaces
        the current one)."""
        if self.halted or not 0 <= block < 64:
            raise self._refuse()
        sector = block // 4
        trailer = self.blocks[sector * 4 + 3]
        if self._conditions(sector) is None:
            raise self._refuse()  # the sector is blocked for good
        stored = trailer[0:6] if key_type == A else trailer[10:16]
        if stored != key:
            raise self._refuse()
        self.auth = (sector, key_type)

    def read(self, block: int) -> bytes:
        sector, index, key = self._session(block)
        conds = self._conditions(sector)
        assert conds is not None
        data = self.blocks[block]
        if index == 3:
            rights = TRAILER_RIGHTS[conds[3]]
            if not key or key not in rights.access_read:
                raise self._refuse()
            key_b = data[10:16] if key in rights.key_b_read else bytes(6)
            return bytes(6) + data[6:10] + key_b  # key A reads as zeros, always
        if not key or key not in DATA_RIGHTS[conds[index]][0]:
            raise self._refuse()
        return data

    def write(self, block: int, data: bytes) -> None:
        if len(data) != 16:
            raise self._refuse()
        sector, index, key = self._session(block)
        conds = self._conditions(sector)
        assert conds is not None
        if block == 0:
            raise self._refuse()  # the manufacturer block is read-only whatever the bits say
        if index < 3:
            if not key or key not in DATA_RIGHTS[conds[index]][1]:
                raise self._refuse()
            self.blocks[block] = bytes(data)
            return
        rights = TRAILER_RIGHTS[conds[3]]
        may_a = bool(key) and key in rights.key_a_write
        may_bits = bool(key) and key in rights.access_write
        may_b = bool(key) and key in rights.key_b_write
        if not (may_a or may_bits or may_b):
            raise self._refuse()
        old = self.blocks[block]
        self.blocks[block] = (
            (data[0:6] if may_a else old[0:6])
            + (data[6:10] if may_bits else old[6:10])
            + (data[10:16] if may_b else old[10:16])
        )


# -- the reader in front of it -----------------------------------------------------------------

SW_OK = b"\x90\x00"
SW_FAILED = b"\x63\x00"  # ACR122U: "the operation failed", for every failure
SW_SECURITY = b"\x69\x82"  # PC/SC Part 3: security status not satisfied
SW_NOT_SUPPORTED = b"\x6a\x81"
SW_WRONG_LENGTH = b"\x67\x00"
SW_INS = b"\x6d\x00"
SW_CLA = b"\x6e\x00"


@dataclass
class Acr122u:
    """The ACR122U's handling of PC/SC Part 3 pseudo-APDUs for a MIFARE Classic card."""

    card: Classic1K
    key_slots: dict[int, bytes] = field(default_factory=dict)  # volatile, 00 and 01
    log: list[tuple[bytes, bytes]] = field(default_factory=list)

    def transmit(self, apdu: bytes) -> bytes:
        resp = self._dispatch(apdu)
        self.log.append((bytes(apdu), resp))
        return resp

    def _dispatch(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            return SW_WRONG_LENGTH
        cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
        body = apdu[4:]
        if cla != 0xFF:
            return SW_CLA
        if ins == 0xCA:
            return self._get_data(p1, p2, body)
        if ins == 0x82:
            return self._load_key(p1, p2, body)
        if ins == 0x86:
            if p1 != 0 or p2 != 0 or len(body) != 6 or body[0] != 5 or body[1] != 0x01:
                return SW_FAILED
            msb, block, key_type, slot = body[2], body[3], body[4], body[5]
            if msb != 0:
                return SW_FAILED
            return self._authenticate(block, key_type, slot)
        if ins == 0x88:  # obsolete PC/SC 2.01 form: FF 88 00 block type slot
            if p1 != 0 or len(body) != 2:
                return SW_FAILED
            return self._authenticate(p2, body[0], body[1])
        if ins == 0xB0:
            if len(body) != 1 or p1 != 0:
                return SW_FAILED
            if body[0] != 0x10:  # MIFARE Classic: 16 bytes per read on this reader
                return SW_FAILED
            return self._card_call(lambda: self.card.read(p2))
        if ins == 0xD6:
            if p1 != 0 or len(body) != 17 or body[0] != 0x10:
                return SW_FAILED
            data = body[1:]
            return self._card_call(lambda: self.card.write(p2, data))
        return SW_INS

    def _get_data(self, p1: int, p2: int, body: bytes) -> bytes:
        if p2 != 0 or len(body) > 1:
            return SW_FAILED
        if p1 == 0x01:
            return SW_NOT_SUPPORTED  # ATS: ISO 14443-4 cards only
        if p1 != 0x00:
            return SW_FAILED
        le = body[0] if body else 0
        uid = self.card.uid
        if le not in (0, len(uid)):
            return bytes([0x6C, len(uid)])
        return uid + SW_OK

    def _load_key(self, p1: int, p2: int, body: bytes) -> bytes:
        # P1 key structure 00: reader volatile memory (the only one the ACR122U has);
        # P2 key number 00 or 01
        if p1 != 0x00 or p2 not in (0x00, 0x01) or len(body) != 7 or body[0] != 6:
            return SW_FAILED
        self.key_slots[p2] = bytes(body[1:7])
        return SW_OK

    def _authenticate(self, block: int, key_type: int, slot: int) -> bytes:
        if key_type not in (0x60, 0x61) or slot not in self.key_slots:
            return SW_FAILED
        key = self.key_slots[slot]
        return self._card_call(lambda: self.card.authenticate(block, "AB"[key_type - 0x60], key))

    def _card_call(self, fn: Callable[[], bytes | None]) -> bytes:
        try:
            out = fn()
        except NotAuthenticated:
            return SW_SECURITY
        except CardRefusal:
            return SW_FAILED
        return (out or b"") + SW_OK


# -- the vicc link to vpcd ---------------------------------------------------------------------

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04


class ForeignVicc:
    """One card on one vpcd slot: :meth:`attach` connects (the card is put on the reader),
    :meth:`detach` closes the connection (the card is taken away)."""

    def __init__(self, reader: Acr122u, port: int, host: str = "127.0.0.1") -> None:
        self.reader = reader
        self.host, self.port = host, port
        self.atr = ATR_CLASSIC_1K
        self.noticed = threading.Event()  # vpcd polled the card after attach: pcscd has it
        self.controls: list[int] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the card state against the test thread
        self._tear: tuple[int, bool, int | None] | None = None
        self.torn = threading.Event()

    def attach(self, port: int | None = None, timeout: float = 5.0) -> ForeignVicc:
        """Connect to the slot (``port``: another slot than before, i.e. another reader) and
        wait until vpcd has taken the card in (its first control message: pcscd's presence
        poll asks for the ATR, a fresh insertion is powered on).  A card put back before pcscd
        saw it leave (it polls every 400 ms) is not powered on again: pcscd never knew."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("already on a reader")
        self.detach()  # what is left of a torn connection
        if port is not None:
            self.port = port
        self.noticed.clear()
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()
        if not self.noticed.wait(timeout):
            self.detach()
            raise TimeoutError(f"vpcd did not take the card in on port {self.port}")
        return self

    def tear_after(self, n: int, applied: bool, ins: int | None = None) -> None:
        """Pull the card away at its ``n``-th APDU from now (1: the next one; with ``ins``:
        the n-th with that instruction byte), mid-exchange: ``applied``: the card carried the
        command out (a write is on the card) but its answer never reached the reader; else the
        card never got it.  :meth:`attach` puts it back."""
        if n < 1:
            raise ValueError("n counts APDUs from 1")
        self.torn.clear()
        self._tear = (n, applied, ins)

    def detach(self) -> None:
        """Take the card away: close the connection."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- the protocol --------------------------------------------------------------------------
    def _recv_exact(self, sock: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:  # the socket may be closed under us (the card taken away): that is the end
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                chunk = sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _send(self, sock: socket.socket, payload: bytes) -> bool:
        if not payload:
            raise ValueError("an empty answer means 'card gone' to vpcd")
        try:
            sock.sendall(len(payload).to_bytes(2, "big") + payload)
        except OSError:
            return False
        return True

    def _serve(self, sock: socket.socket) -> None:
        while True:
            head = self._recv_exact(sock, 2)
            if head is None:
                return
            msg = self._recv_exact(sock, int.from_bytes(head, "big"))
            if msg is None:
                return
            if len(msg) == 1:
                ctrl = msg[0]
                self.controls.append(ctrl)
                self.noticed.set()
                if ctrl == CTRL_ATR:
                    if not self._send(sock, self.atr):
                        return
                elif ctrl in (CTRL_ON, CTRL_RESET, CTRL_OFF):
                    # power on and reset re-activate the card; power off drops every state
                    with self._lock:
                        self.reader.card.select()
                continue
            tear = self._tear
            if tear is not None and tear[2] in (None, msg[1] if len(msg) > 1 else None):
                n, applied, ins = tear
                self._tear = (n - 1, applied, ins) if n > 1 else None
                if n == 1:
                    if applied:
                        with self._lock:
                            self.reader.transmit(msg)
                    sock.shutdown(socket.SHUT_RDWR)  # vpcd reads end-of-stream: card gone
                    self.torn.set()
                    return
            with self._lock:
                resp = self.reader.transmit(msg)
            if not self._send(sock, resp):
                return

    # -- for tests -------------------------------------------------------------------------
    def snapshot(self) -> list[bytes]:
        with self._lock:
            return list(self.reader.card.blocks)
