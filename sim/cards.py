"""Simulated campus cards for the in-process ``sim://`` reader.

``ykt sim sale --card CARD_NO`` names a card by number; the agent makes the card from the
server's record of it (which carries the issuer-signed identity) and its own keystore, as a
desk would have written it.  Keys the terminal does not hold (a POS has no identity write
key) are random on such a card: nobody can rewrite its identity, as on a real one.  A UID other
than the issued one makes a clone (same data, keys diversified for the other UID); an
unknown number makes a blank card, which no campus key opens.  Only a terminal enrolled as
simulated (``ykt admin terminal enroll --simulated``) receives the cards' identities: a real one
is refused here (docs/security.md).

The agent keeps each card as an image file (``DATA/sim-cards/``, or the folder its reader's URL
names: ``sim://NAME?cards=DIR``), so its counters survive between taps and restarts like a real
card's.  Agents that keep their cards apart each tap a copy of the card: to the server, whose
card counters must only move forward, a copy used at two tills is a cloned card
(docs/security.md); agents sharing the folder tap the one card.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from edge.devices import TerminalHost
from sim import cardimage
from sim.errors import SimError
from sim.mifare import MifareClassic1K, blank_blocks
from sync.card import layout
from sync.card.keys import Keystore
from sync.errors import CardRefused
from sync.records import CardRow


def encoded_card(
    uid: bytes,
    identity_b64: str,
    keys: Keystore,
    tag: bytes | None = None,
    counters: layout.Counters | None = None,
) -> MifareClassic1K:
    """A card as the desk writes it; ``counters`` (their own record version: tests make cards
    of the earlier format so) as the issuer carries them, else none."""
    blob = base64.b64decode(identity_b64)
    blocks = blank_blocks(uid)
    made = layout.card_blocks(
        uid, blob, keys, missing_key=os.urandom(6), tag=tag, counters=counters
    )
    for n, data in made.items():
        blocks[n] = bytearray(data)
    return MifareClassic1K(uid, blocks)


def card_for(
    folder: Path,
    card_no: str,
    record: CardRow | None,
    keys: Keystore,
    uid_hex: str | None,
) -> MifareClassic1K:
    """The simulated card to tap for ``card_no`` (made once, then kept in ``folder``)."""
    issued_uid = record.uid if record else None
    uid_hex = (uid_hex or issued_uid or f"{int.from_bytes(os.urandom(4), 'big'):08X}").upper()
    uid = bytes.fromhex(uid_hex)
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in card_no)[:32]
    path = folder / f"{safe}-{uid_hex}.img"
    if path.exists():
        card = cardimage.load(path)
    elif record is not None and record.identity:
        card = encoded_card(uid, record.identity, keys)
    elif record is not None:  # issued, but the feed sent this terminal no identity
        raise SimError(
            f"cannot make simulated card {card_no}: the feed sends card identities only to a "
            "terminal enrolled as simulated (ykt admin terminal enroll --simulated)"
        )
    else:
        card = MifareClassic1K(uid, blank_blocks(uid))
    card.on_write = lambda c: cardimage.save(c, path)
    if not path.exists():
        cardimage.save(card, path)
    return card


def card_at(
    host: TerminalHost, card_no: str, uid_hex: str | None, folder: Path | None = None
) -> MifareClassic1K:
    """The simulated card ``card_no`` as a terminal would see it tapped: made from the server's
    record of the card (the terminal's cache) with the terminal's keys, kept in ``folder`` (one
    card for every agent that shares it: its counters go from till to till, as a real card's
    do), else in the terminal's data directory (``DATA/sim-cards``: a copy of its own)."""
    record = host.card_record(card_no)
    try:
        keys = host.card_keys()
    except CardRefused as exc:
        raise SimError(f"cannot make a simulated card: {exc.reason}") from exc
    return card_for(folder or host.data_dir / "sim-cards", card_no, record, keys, uid_hex)
