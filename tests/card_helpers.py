"""Helpers for the card-path tests: a private pcscd with vpcd slots, issued card images, and a
scripted card that records the APDUs it receives."""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim import cardimage
from sim.cards import encoded_card
from sim.harness import pcscd
from sim.mifare import ATR_1K, MifareClassic1K
from sync.card import layout
from sync.card.keys import Keystore
from tests.helpers import ServerProc


def server_keys(server: ServerProc) -> Keystore:
    """The issuer's full keystore (the test can read the server's data directory)."""
    return Keystore.load(server.data / "card-keys.json")


def issue_image(
    server: ServerProc, number: str, uid: str, path: Path, keys: Keystore | None = None
) -> dict[str, Any]:
    """Issue a card with this UID on the server and write the card image a desk would write."""
    rec = server.admin().call("POST", f"/v1/admin/accounts/{number}/cards", {"uid": uid})
    card = encoded_card(
        bytes.fromhex(uid), rec["identity"], keys or server_keys(server), bytes.fromhex(rec["tag"])
    )
    cardimage.save(card, path)
    return dict(rec)


def edit_image(path: Path, fn: Callable[[MifareClassic1K], None]) -> None:
    card = cardimage.load(path)
    fn(card)
    cardimage.save(card, path)


def reencode(
    src: Path, dst: Path, uid: str, keys: Keystore, mutate: Callable[[bytes], bytes] | None = None
) -> None:
    """The identity of ``src`` written onto a card with ``uid`` with proper keys for that UID
    (what a cloner holding the keys would make); ``mutate`` may alter the issued data."""
    card = cardimage.load(src)
    blob = b"".join(bytes(card.blocks[b]) for b in (4, 5, 6, 8, 9, 10, 12))
    if mutate is not None:
        blob = mutate(blob)
    cardimage.save(encoded_card(bytes.fromhex(uid), base64.b64encode(blob).decode(), keys), dst)


def foreign_keys() -> Keystore:
    return Keystore.generate("other-campus")


class Scripted:
    """A card for vpcd that answers from a script and records every APDU (exact-frame tests).

    ``script`` maps command bytes to response bytes; a command not in it is answered from
    ``default``.  GET DATA (UID) is answered with ``uid``."""

    def __init__(self, uid: bytes, script: dict[bytes, bytes] | None = None) -> None:
        self.atr = ATR_1K
        self.uid = uid
        self.script = dict(script or {})
        self.queue: deque[bytes] = deque()
        self.got: list[bytes] = []
        self.default = b"\x90\x00"
        self.resets = 0

    def power_on(self) -> None:
        self.resets += 1

    def apdu(self, cmd: bytes) -> bytes:
        self.got.append(bytes(cmd))
        if self.queue:
            return self.queue.popleft()
        if cmd == bytes.fromhex("FFCA000000"):
            return self.uid + b"\x90\x00"
        return self.script.get(bytes(cmd), self.default)


def vreaders(path: Path, slots: int = 2) -> pcscd.VirtualReaders:
    vr = pcscd.VirtualReaders(path)
    vr.start(slots)
    return vr


def counters(path: Path, keys: Keystore) -> layout.Counters:
    """The trusted counters of a card image."""
    card = cardimage.load(path)
    a = layout.Counters.decode(bytes(card.blocks[16]), keys, card.uid)
    b = layout.Counters.decode(bytes(card.blocks[17]), keys, card.uid)
    return layout.choose_slot(a, b)[1]
