"""Card proofs: how a kiosk vouches that a card is on its reader (R5, R6, R11, R17, R20).

Every card the server issues gets a **proof tag**: 16 bytes (one MIFARE block),
``HMAC-SHA256(server key, "ykt-card-v1" | campus | card number | UID | generation)`` truncated,
returned with the card (``tag``) for the encoder to write into a sector that only kiosk and desk
keys can read.  A card-present request from a kiosk carries the card's number, UID, generation
and tag as read from the card (:class:`CardProof`), inside the kiosk's signed request (terminal
key, time, nonce: see :mod:`sync.server.terminals`).  The server recomputes the tag and checks
that the card is the account's current card.

What this proves, and what it does not (docs/card-present.md has the full threat model):

- an enrolled, unrevoked *kiosk* made the request, recently, once (signature, time, nonce);
- the kiosk had the data of a genuine card of this generation: the tag is never stored on the
  server and cannot be computed without the server's key, and a POS terminal does not hold
  the sector key that protects it;
- it does not prove that the card is on the reader *now* against a kiosk whose keys were
  stolen: such a kiosk could replay a tag it read earlier.  That is why the kiosk's key is
  revocable, card-present changes still need the holder's query password (R5, R6), and a
  reissue (new generation) changes the tag.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from sync.db import Database, Tx
from sync.server.context import Context
from sync.server.errors import Conflict, Forbidden

TAG_BYTES = 16


def tag_key(reader: Tx | Database) -> bytes:
    raw = reader.scalar("SELECT value FROM settings WHERE key = 'card_tag_key'")
    return base64.b64decode(json.loads(raw))


def card_tag(key: bytes, campus: str, card_no: str, uid: str, generation: int) -> str:
    msg = "|".join(("ykt-card-v1", campus, card_no, uid.upper(), str(generation))).encode()
    return hmac.new(key, msg, hashlib.sha256).digest()[:TAG_BYTES].hex().upper()


def verify(ctx: Context, proof: dict[str, Any]) -> dict[str, Any]:
    """The card and its account behind a card proof, or 403 ``bad_card_proof`` (409 for a
    replaced card: R11, the old card is refused everywhere)."""
    row = ctx.db.one(
        "SELECT c.card_no, c.uid, c.generation, c.status AS card_status, a.* "
        "FROM cards c JOIN accounts a ON a.id = c.account_id WHERE c.card_no = ?",
        (proof["card_no"],),
    )
    bad = Forbidden("the card on the reader does not prove this card (R20)", "bad_card_proof")
    if row is None:
        raise bad
    want = card_tag(
        tag_key(ctx.db), ctx.config.campus_id, row["card_no"], row["uid"], row["generation"]
    )
    if (
        proof["uid"].upper() != row["uid"]
        or proof["generation"] != row["generation"]
        or not hmac.compare_digest(proof["tag"].upper(), want)
    ):
        raise bad
    if row["card_status"] == "blocked":  # sync.server.cardrisk
        raise Conflict(
            "this card is blocked: its counters went back (a copied or restored card); "
            "see the service desk",
            "card_blocked",
        )
    if row["card_status"] != "active":
        raise Conflict("this card was replaced by a newer card (R11)", "card_replaced")
    return dict(row)
