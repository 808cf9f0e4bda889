"""One behavioural contract for every card dispenser (CONVENTIONS §2): the CRT-591 driver
over a pseudo-terminal against the simulated unit (in a thread: tests/unit; in its own process
with the encoder in pcscd: tests/test_dispenser_sim.py) and the in-process ``sim://`` one.

A :class:`Rig` is a fresh dispenser with 6 blanks, the hopper "low" at 2 and a reject bin
that holds 2, plus what a person sees of it: the card at the encoder (read through the
encoder's reader: a blank MIFARE Classic 1K with transport keys), the holder taking the card
at the mouth, a jam armed, the unit's physical state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from drivers.card.mifare_classic import KEY_A, MifareClassic
from drivers.dispenser.base import CardDispenser
from drivers.errors import DispenserError, DispenserJammed, HopperEmpty, RejectBinFull
from drivers.reader.base import PresentCard

BLANKS, LOW_AT, REJECT_CAPACITY = 6, 2, 2
TRANSPORT_KEY = bytes.fromhex("FFFFFFFFFFFF")


def read_blank(card: PresentCard) -> str:
    """The UID of a blank card, checked: block 0 starts with it and block 1 is empty, read
    with the transport key."""
    mc = MifareClassic(card)
    with card.exclusive():
        uid = mc.get_uid()
        mc.load_key(0, TRANSPORT_KEY)
        mc.authenticate(0, KEY_A, 0)
        block0, block1 = mc.read_block(0), mc.read_block(1)
    assert block0[:4] == uid, f"block 0 {block0.hex()} does not start with the UID {uid.hex()}"
    assert block1 == bytes(16), "a blank has an empty block 1"
    return uid.hex().upper()


@dataclass
class Rig:
    dispenser: CardDispenser
    encoder_uid: Callable[[], str | None]  # the blank at the encoder, read; None: no card
    jam: Callable[[str | None], None]  # the next move to "encoder"/"mouth" jams; None clears
    take: Callable[[], str]  # the holder takes the card at the mouth: its UID
    summary: Callable[[], dict[str, Any]]  # hopper, issued, rejected, at_mouth, …


def run_contract(rig: Rig) -> None:
    d = rig.dispenser
    d.reset()
    st = d.status()
    assert (st.card_at, st.hopper, st.jammed, st.reject_bin_full) == ("none", "ok", False, False)
    assert rig.encoder_uid() is None

    # a blank to the encoder; asking again feeds no second blank
    d.to_encoder()
    assert d.status().card_at == "encoder"
    uid1 = rig.encoder_uid()
    assert uid1 is not None
    assert rig.summary()["hopper"] == BLANKS - 1
    d.to_encoder()
    assert rig.encoder_uid() == uid1
    assert rig.summary()["hopper"] == BLANKS - 1, "to_encoder twice fed a second blank"

    # to the mouth (twice: once); nothing new is fed while the card waits there
    d.to_mouth()
    d.to_mouth()
    assert d.status().card_at == "mouth"
    assert rig.encoder_uid() is None
    s = rig.summary()
    assert (s["at_mouth"], s["issued"]) == (uid1, [uid1])
    with pytest.raises(DispenserError) as refused:
        d.to_encoder()
    assert type(refused.value) is DispenserError
    assert d.status().card_at == "mouth"
    assert rig.take() == uid1
    assert d.status().card_at == "none"
    with pytest.raises(DispenserError):
        d.to_mouth()  # no card to hand out

    # a card captured (twice: once)
    d.to_encoder()
    uid2 = rig.encoder_uid()
    assert uid2 not in (None, uid1)
    d.capture()
    d.capture()
    assert d.status().card_at == "none"
    assert rig.encoder_uid() is None
    assert rig.summary()["rejected"] == [uid2]

    # a jam on the way to the encoder: reported, then reset() frees the card to the encoder
    rig.jam("encoder")
    with pytest.raises(DispenserJammed):
        d.to_encoder()
    assert d.status().jammed
    with pytest.raises(DispenserJammed):
        d.to_mouth()
    d.reset()
    st = d.status()
    assert (st.jammed, st.card_at) == (False, "encoder")
    uid3 = rig.encoder_uid()
    assert uid3 not in (None, uid1, uid2)
    assert rig.summary()["hopper"] == BLANKS - 3

    # a jam on the way to the mouth: the card is out of the encoder's field until reset()
    rig.jam("mouth")
    with pytest.raises(DispenserJammed):
        d.to_mouth()
    assert d.status().jammed
    assert rig.encoder_uid() is None
    d.reset()
    assert d.status().card_at == "encoder"
    assert rig.encoder_uid() == uid3
    d.to_mouth()
    assert rig.take() == uid3
    assert rig.summary()["issued"] == [uid1, uid3]

    # the reject bin fills up
    d.to_encoder()
    uid4 = rig.encoder_uid()
    d.capture()
    assert rig.summary()["rejected"] == [uid2, uid4]
    assert d.status().reject_bin_full
    d.to_encoder()
    with pytest.raises(RejectBinFull):
        d.capture()
    assert d.status().card_at == "encoder"

    # the hopper runs low, then empty
    assert d.status().hopper == "low"
    d.to_mouth()
    rig.take()
    d.to_encoder()
    assert d.status().hopper == "empty"
    d.to_mouth()
    rig.take()
    with pytest.raises(HopperEmpty):
        d.to_encoder()
    s = rig.summary()
    assert s["hopper"] == 0 and len(s["issued"]) == 4 and s["at_mouth"] is None
    d.close()
