"""The campus card application over a MIFARE Classic driver: read and check a card, verify the
consumption password, write the counters tear-safely, and encode a blank card at the desk.

Card I/O goes through :class:`drivers.card.mifare_classic.MifareClassic` on any
:class:`drivers.reader.base.PresentCard` (pcscd or the in-process simulator alike).  What
this module refuses it raises as :class:`sync.errors.CardRefused` with a code:

==================== =======================================================================
``foreign_card``     the card's keys are not this campus's (blank, foreign or a clone made
                     with other keys), or there is no ykt identity on it
``bad_signature``    the identity does not carry a valid issuer signature (altered data)
``clone``            the identity was signed for another UID (data copied to another card)
``bad_layout``       an unknown layout version or damaged fields
``counters_damaged`` neither counter slot is valid
``no_keys``          this terminal's keystore lacks a key the operation needs
==================== =======================================================================

Driver errors (:class:`drivers.errors.CardGone`, …) pass through unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from drivers.card.mifare_classic import KEY_A, KEY_B, TRANSPORT_KEY, MifareClassic
from drivers.errors import CardAuthError
from drivers.reader.base import PresentCard
from sync.card import layout
from sync.card.keys import Keystore
from sync.card.layout import Counters, Identity
from sync.errors import CardRefused

log = logging.getLogger(__name__)
T = TypeVar("T")

SLOT_ID, SLOT_CTR = 0, 1  # the reader's volatile key slots we use


class BadSignature(CardRefused):
    """The identity fails its signature; ``identity`` is what the card claims (the caller may
    know the card number's real UID and call it a clone)."""

    def __init__(self, identity: Identity) -> None:
        super().__init__(
            "bad_signature",
            "the card's identity fails its issuer signature (altered, or copied from another card)",
        )
        self.identity = identity


@dataclass
class CardView:
    """What a terminal learned from a card."""

    uid: bytes
    identity: Identity
    verifier: bytes
    counters: Counters
    slot: int  # the counter slot the counters came from (0: block 16, 1: block 17)
    slots_valid: tuple[bool, bool]

    @property
    def uid_hex(self) -> str:
        return self.uid.hex().upper()


class CampusCard:
    def __init__(self, card: PresentCard, keys: Keystore) -> None:
        self.card = card
        self.keys = keys
        self.mf = MifareClassic(card)
        self.uid = card.uid
        self.io_ns = 0  # time spent waiting for the card (benchmarks)

    # -- I/O helpers ------------------------------------------------------------------------
    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        t0 = time.perf_counter_ns()
        try:
            return fn(*args)
        finally:
            self.io_ns += time.perf_counter_ns() - t0

    def _auth(self, sector: int, key_type: int, slot: int) -> None:
        self._timed(self.mf.authenticate, sector * 4, key_type, slot)

    def _read(self, block: int) -> bytes:
        return self._timed(self.mf.read_block, block)

    # -- reading ----------------------------------------------------------------------------
    def read(self) -> CardView:
        """Read identity and counters; check the signature and the UID binding."""
        if not self.uid:
            raise CardRefused("foreign_card", "the reader could not tell the card's UID")
        uid = self.uid
        self._timed(self.mf.load_key, SLOT_ID, self.keys.sector_key("id_read", uid))
        self._timed(self.mf.load_key, SLOT_CTR, self.keys.sector_key("ctr_write", uid))
        try:
            self._auth(1, KEY_A, SLOT_ID)
        except CardAuthError:
            raise CardRefused(
                "foreign_card",
                "unknown card: not a card of this campus, its keys do not match "
                "(blank, foreign or cloned card)",
            ) from None
        header, number, verifier = (self._read(b) for b in (4, 5, 6))
        self._auth(2, KEY_A, SLOT_ID)
        sig = b"".join(self._read(b) for b in (8, 9, 10))
        self._auth(3, KEY_A, SLOT_ID)
        sig += self._read(12)
        ident = Identity.decode(header, number)
        self._check_signature(ident, uid, header, number, verifier, sig)
        try:
            self._auth(layout.COUNTER_SECTOR, KEY_B, SLOT_CTR)
        except CardAuthError:
            raise CardRefused(
                "foreign_card", "the card's counter sector does not open with this campus's keys"
            ) from None
        a = Counters.decode(self._read(layout.B_SLOTS[0]), self.keys, uid)
        b = Counters.decode(self._read(layout.B_SLOTS[1]), self.keys, uid)
        slot, counters = layout.choose_slot(a, b)
        if a is None or b is None:
            log.info(
                "card %s: counter slot %s invalid (torn write?)", uid.hex(), "AB"[a is not None]
            )
        return CardView(uid, ident, verifier, counters, slot, (a is not None, b is not None))

    def _check_signature(
        self, ident: Identity, uid: bytes, header: bytes, number: bytes, verifier: bytes, sig: bytes
    ) -> None:
        pub = self.keys.issuer_public
        if pub.ok_remembered(sig, layout.signed_message(uid, header, number, verifier)):
            return
        raise BadSignature(ident)

    def read_proof(self) -> dict[str, object]:
        """What a kiosk sends as the card proof (sync.server.cardproof): number, UID,
        generation from the checked identity, and the proof tag (sector 5; a POS keystore
        cannot open it)."""
        view = self.read()
        self._timed(self.mf.load_key, 0, self.keys.sector_key("tag_read", self.uid))
        self._auth(layout.TAG_SECTOR, KEY_A, 0)
        tag = self._read(layout.B_TAG)
        return {
            "card_no": view.identity.card_no,
            "uid": view.uid_hex,
            "generation": view.identity.generation,
            "tag": tag.hex().upper(),
        }

    # -- the consumption password (R5) ------------------------------------------------------
    def check_pin(self, view: CardView, pin: str) -> bool:
        return layout.check_verifier(self.keys, view.identity.account_id, view.verifier, pin)

    # -- counters ---------------------------------------------------------------------------
    def write_counters(self, view: CardView, new: Counters) -> None:
        """Write ``new`` into the slot that is not the trusted one; the trusted slot stays
        intact, so a card pulled away mid-write falls back to it (sector 4 is still
        authenticated with key B from :meth:`read`)."""
        target = layout.B_SLOTS[1 - view.slot]
        self._timed(self.mf.write_block, target, new.encode(self.keys, view.uid))
        view.counters, view.slot = new, 1 - view.slot

    # -- the desk: encode a blank card ------------------------------------------------------
    def encode(
        self,
        blob: bytes,
        tag: bytes | None = None,
        counters: layout.Counters | None = None,
        *,
        keep_counters: bool = False,
    ) -> None:
        """Write an issued identity (``blob`` from the issuer) and its first counters (R5, R6:
        the account's tries and amount of the day, from the issuer; none when not given), with
        this campus's diversified keys in every trailer.  Sector by sector: data blocks first,
        the trailer last, so a card pulled away mid-way can be encoded again (each sector opens
        either with the transport key or already with ours).  ``keep_counters``: the card was
        issued before (the same card again): counters already on it, under our keys and with a
        valid slot, are kept, so encoding it again never puts them back."""
        uid = self.uid
        blocks = layout.card_blocks(uid, blob, self.keys, tag=tag, counters=counters)
        plan = {
            1: ("id_write", (4, 5, 6)),
            2: ("id_write", (8, 9, 10)),
            3: ("id_write", (12, 13, 14)),
            4: ("ctr_write", (16, 17, 18)),
            5: ("id_write", (20, 21, 22)),
        }
        for sector, (key_name, data_blocks) in plan.items():
            ours = self._open_for_writing(sector, self.keys.sector_key(key_name, uid))
            if sector == layout.COUNTER_SECTOR and ours and keep_counters and self._has_counters():
                log.info("card %s: counters kept (issued before)", uid.hex())
                continue
            for b in data_blocks:
                self._timed(self.mf.write_block, b, blocks[b])
            self._timed(self.mf.write_block, sector * 4 + 3, blocks[sector * 4 + 3])

    def _has_counters(self) -> bool:
        """Whether the counter sector (open) holds a valid slot."""
        slots = (layout.Counters.decode(self._read(b), self.keys, self.uid) for b in layout.B_SLOTS)
        return any(c is not None for c in slots)

    def write_identity(self, blob: bytes) -> None:
        """Rewrite the identity of a card of this campus (a kiosk's R5 password change or R20
        correction), leaving its counters alone.  Header and verifier (sector 1) go last, so a
        card pulled away mid-way keeps a consistent older identity or fails its signature
        check (the kiosk writes it again); it never gets a valid mix."""
        header, number, verifier, sig = layout.split_blob(blob)
        uid = self.uid
        self._timed(self.mf.load_key, 1, self.keys.sector_key("id_write", uid))
        for sector, blocks in (
            (2, {8: sig[0:16], 9: sig[16:32], 10: sig[32:48]}),
            (3, {12: sig[48:64]}),
            (1, {4: header, 5: number, 6: verifier}),
        ):
            self._auth(sector, KEY_B, 1)
            for b, data in blocks.items():
                self._timed(self.mf.write_block, b, data)

    def _open_for_writing(self, sector: int, campus_key_b: bytes) -> bool:
        """Authenticate ``sector`` for writing: with the transport key (a blank sector: False)
        or with this campus's key B (written before: True)."""
        self._timed(self.mf.load_key, 0, TRANSPORT_KEY)
        try:
            self._auth(sector, KEY_A, 0)
            return False
        except CardAuthError:
            self._timed(self.card.reset)
        self._timed(self.mf.load_key, 1, campus_key_b)
        try:
            self._auth(sector, KEY_B, 1)
            return True
        except CardAuthError:
            raise CardRefused(
                "foreign_card",
                f"sector {sector} opens neither with the transport key nor with this campus's "
                "keys: not a blank card",
            ) from None
