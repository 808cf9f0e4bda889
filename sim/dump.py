"""A card image decoded for people: sectors, trailers (keys, access conditions) and, where the
campus card layout is recognised, its identity, signature and counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivers.card.mifare_classic import TRANSPORT_CONDITIONS, decode_access
from sim.mifare import MifareClassic1K
from sync.card import layout
from sync.card.keys import Keystore
from sync.errors import CardRefused

MEANING = {
    0: "manufacturer block (UID, BCC, SAK, ATQA)",
    layout.B_HEADER: "ykt identity header",
    layout.B_CARDNO: "ykt card number",
    layout.B_VERIFIER: "ykt consumption-password verifier (R5)",
    8: "ykt issuer signature 0-15",
    9: "ykt issuer signature 16-31",
    10: "ykt issuer signature 32-47",
    12: "ykt issuer signature 48-63",
    layout.B_SLOTS[0]: "ykt counters slot A",
    layout.B_SLOTS[1]: "ykt counters slot B",
    layout.B_TAG: "ykt card proof tag (kiosks)",
}


def _conditions_text(raw: bytes) -> str:
    conds = decode_access(raw)
    if conds is None:
        return "INVALID access bits (sector blocked)"
    if conds == TRANSPORT_CONDITIONS:
        return "transport configuration"
    if conds == layout.ACCESS:
        return "ykt: read A|B, write B"
    return "C1C2C3 " + " ".join("".join(map(str, c)) for c in conds)


def dump(card: MifareClassic1K, keystore: Path | None = None) -> dict[str, Any]:
    keys = Keystore.load(keystore) if keystore else None
    blocks = [bytes(b) for b in card.blocks]
    ykt = blocks[layout.B_HEADER][:3] == layout.MAGIC
    sectors = []
    for s in range(16):
        t = blocks[s * 4 + 3]
        sectors.append(
            {
                "sector": s,
                "trailer": {
                    "key_a": t[0:6].hex().upper(),
                    "access": t[6:10].hex().upper(),
                    "key_b": t[10:16].hex().upper(),
                    "conditions": decode_access(t[6:9]),
                    "conditions_text": _conditions_text(t[6:9]),
                },
                "blocks": [
                    {
                        "block": b,
                        "hex": blocks[b].hex().upper(),
                        **({"meaning": MEANING[b]} if b in MEANING and (ykt or b == 0) else {}),
                    }
                    for b in range(s * 4, s * 4 + 3)
                ],
            }
        )
    out: dict[str, Any] = {"uid": card.uid.hex().upper(), "sectors": sectors}
    if ykt:
        out["campus_card"] = _campus(card.uid, blocks, keys)
    return out


def _campus(uid: bytes, blocks: list[bytes], keys: Keystore | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        ident = layout.Identity.decode(blocks[layout.B_HEADER], blocks[layout.B_CARDNO])
        info["identity"] = {
            **ident.describe(),
            "key_version": ident.key_version,
            "layout_version": ident.version,
        }
    except CardRefused as exc:
        info["identity_error"] = exc.reason
    sig = b"".join(blocks[b] for b in layout.B_SIGNATURE)
    info["signature"] = sig.hex().upper()
    if keys is not None:
        msg = layout.signed_message(
            uid, blocks[layout.B_HEADER], blocks[layout.B_CARDNO], blocks[layout.B_VERIFIER]
        )
        info["signature_valid"] = keys.issuer_public.ok(sig, msg)
    slots = []
    for n, b in enumerate(layout.B_SLOTS):
        slot: dict[str, Any] = {"slot": "AB"[n], "mac": blocks[b][12:16].hex().upper()}
        checked = None
        if keys is not None and keys.has("ctr_mac"):
            checked = layout.Counters.decode(blocks[b], keys, uid)
            slot["mac_valid"] = checked is not None
        if checked is not None:
            slot.update(checked.describe())
        else:  # the counter record's version shows in its MAC only: both readings, unchecked
            slot["unchecked"] = {
                str(v): layout.Counters.parse(blocks[b], v).describe() for v in (1, 2)
            }
        slots.append(slot)
    info["counters"] = slots
    return info
