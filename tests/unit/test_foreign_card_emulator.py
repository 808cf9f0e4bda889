"""The foreign card of :mod:`tests.foreign_vicc` (an independent MIFARE Classic 1K behind
ACR122U-style pseudo-APDUs) against the documents it follows (NXP MF1S50yyX, ACS ACR122U API),
in-process, so that a ykt test passing on it (``tests/test_foreign_card.py``) means something."""

from __future__ import annotations

from tests.foreign_vicc import (
    ATR_CLASSIC_1K,
    TRANSPORT_ACCESS,
    TRANSPORT_KEY,
    Acr122u,
    Classic1K,
)

BLANK_TRAILER = TRANSPORT_KEY + TRANSPORT_ACCESS + TRANSPORT_KEY


def _apdu(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr.replace(" ", ""))


def test_foreign_card_atr_is_the_pc_sc_part3_storage_card_atr() -> None:
    tck = 0
    for b in ATR_CLASSIC_1K[1:-1]:
        tck ^= b
    assert tck == ATR_CLASSIC_1K[-1]
    assert ATR_CLASSIC_1K[7:12] == bytes.fromhex("A000000306")  # PC/SC RID
    assert ATR_CLASSIC_1K[12:15] == bytes.fromhex("030001")  # ISO 14443 A-3, Classic 1K


def test_foreign_card_keys_authentication_and_access_bits() -> None:
    r = Acr122u(Classic1K(bytes.fromhex("11223344")))
    x = r.transmit
    assert x(_apdu("FFCA000000")) == _apdu("11223344 9000")
    assert x(_apdu("FFB0000410")) == _apdu("6982")  # not authenticated …
    assert x(_apdu("FFCA000000")) == _apdu("11223344 9000")  # (the reader knows the UID)
    r.card.select()  # … and the card fell back to IDLE: the reader selects it again
    assert x(_apdu("FF82000006 FFFFFFFFFFFF")) == _apdu("9000")
    assert x(_apdu("FF860000050100046000")) == _apdu("9000")
    # key A reads as zeros; under the transport configuration key B is readable with key A
    assert x(_apdu("FFB0000710")) == _apdu("000000000000 FF078069 FFFFFFFFFFFF 9000")
    assert x(_apdu("FFB0000810")) == _apdu("6982")  # sector 2 is not the authenticated one
    # the card NAKed and is halted: nothing works until it is selected again
    assert x(_apdu("FF860000050100046000")) == _apdu("6300")
    r.card.select()
    # key B is readable in transport configuration, so it cannot serve: authentication
    # passes, every access after it is refused
    assert x(_apdu("FF860000050100046100")) == _apdu("9000")
    assert x(_apdu("FFB0000410")) == _apdu("6300")
    r.card.select()
    # ykt-like trailer: data read A|B write B; trailer written with B only, key B unreadable
    key_a, key_b = bytes.fromhex("A0A1A2A3A4A5"), bytes.fromhex("B0B1B2B3B4B5")
    assert x(_apdu("FF860000050100046000")) == _apdu("9000")
    trailer = key_a + bytes.fromhex("78778869") + key_b
    assert x(_apdu("FFD6000710") + trailer) == _apdu("9000")
    assert x(_apdu("FFD6000410") + bytes(range(16))) == _apdu("6300")  # key A may not write
    r.card.select()
    assert x(_apdu("FF860000050100046000")) == _apdu("6300")  # the transport key is gone
    r.card.select()
    assert x(_apdu("FF82000006") + key_a) == x(_apdu("FF82000106") + key_b) == _apdu("9000")
    assert x(_apdu("FF860000050100046000")) == _apdu("9000")
    assert x(_apdu("FFB0000710")) == bytes(6) + _apdu("78778869") + bytes(6) + _apdu("9000")
    assert x(_apdu("FFD6000710") + BLANK_TRAILER) == _apdu("6300")  # trailer: B only
    r.card.select()
    assert x(_apdu("FF860000050100046101")) == _apdu("9000")
    assert x(_apdu("FFD6000410") + bytes(range(16))) == _apdu("9000")
    assert x(_apdu("FFB0000410")) == bytes(range(16)) + _apdu("9000")
    x(_apdu("FF82000006 FFFFFFFFFFFF"))
    assert x(_apdu("FF860000050100006000")) == _apdu("9000")  # nested: sector 0, transport
    assert x(_apdu("FFB0000010")) == r.card.blocks[0] + _apdu("9000")
    assert x(_apdu("FFD6000010") + bytes(16)) == _apdu("6300")  # manufacturer block: read-only
    r.card.select()
    assert x(_apdu("FFB0000410")) == _apdu("6982")  # a new selection: nothing authenticated
    assert x(_apdu("FF860000050100046002")) == _apdu("6300")  # the ACR122U has slots 00, 01
