"""The service desk's card operations on a reader: encode (issue) a blank card, read a card.

Used by ``ykt admin card issue --reader …`` and ``ykt admin card read --reader …``.  The
server is the issuer: it records the card (R11: the account's earlier cards stop working) and
signs the identity for the card's UID; the desk writes it with its keystore (the ``desk``
role: identity write keys).  Issuing again to the same card returns the same record, so an
interrupted write is finished by running the same command again.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any

from drivers.errors import CardGone, DriverError
from drivers.reader.base import CardReader, PresentCard
from drivers.registry import open_device
from sync.card.app import CampusCard
from sync.card.keys import Keystore
from sync.card.layout import Counters, Identity
from sync.errors import CardRefused, DeskError

log = logging.getLogger(__name__)


def _has_uid(card: PresentCard | None) -> bool:
    try:
        return card is not None and bool(card.uid)
    except DriverError:
        return False


def wait_card(reader: CardReader, timeout: float) -> PresentCard:
    """The card on the reader, or the first one put on it within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        card = reader.current_card()
        if card is not None and _has_uid(card):
            return card
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeskError(f"no card on {reader.name} within {timeout:.0f}s")
        try:
            card = reader.wait_for_card(min(left, 1.0))
        except DriverError as exc:
            log.info("waiting for the reader: %s", exc)
            time.sleep(min(max(left, 0), 0.2))
            continue
        if card is not None and _has_uid(card):
            return card


def _open(url: str) -> CardReader:
    if url.startswith("sim://"):
        raise DeskError("the desk needs a real reader (pcsc://…); sim:// lives inside an agent")
    try:
        reader: CardReader = open_device("reader", url)
    except DriverError as exc:
        raise DeskError(f"cannot open {url}: {exc}") from exc
    return reader


def issue_on_reader(
    url: str, issue: Callable[[str], dict[str, Any]], keys: Keystore, timeout: float = 10.0
) -> dict[str, Any]:
    """Read the UID of the card on the reader, have the server issue it, write it, read it
    back.  ``issue(uid_hex)`` is the server call."""
    reader = _open(url)
    try:
        card = wait_card(reader, timeout)
        uid = card.uid.hex().upper()
        rec = issue(uid)
        blob = base64.b64decode(rec["identity"])
        tag = bytes.fromhex(rec["tag"]) if rec.get("tag") else None
        try:
            counters = Counters.carried(rec.get("counters"))
        except ValueError as exc:
            raise DeskError(f"the server's answer for card {uid}: {exc}") from exc
        try:
            with card.exclusive():
                # issued before (an interrupted write, or the command run twice): counters
                # already on the card stay (never put back: docs/card-format.md)
                keep = bool(rec.get("already_issued"))
                CampusCard(card, keys).encode(blob, tag, counters, keep_counters=keep)
                check = CampusCard(card, keys).read()
        except CardGone as exc:
            raise DeskError(
                f"card {uid} left the reader while being written: the server has issued card "
                f"{rec['card_no']}; put the same card back and run the same command again"
            ) from exc
        except DriverError as exc:
            raise DeskError(f"writing card {uid} failed: {exc}") from exc
        if check.identity.card_no != rec["card_no"]:
            raise DeskError(
                f"card {uid} reads back as {check.identity.card_no}, not {rec['card_no']}"
            )
        card.close()
        return {**rec, "written": True, "reader": card.reader}
    finally:
        reader.close()


def read_on_reader(url: str, keys: Keystore, timeout: float = 10.0) -> dict[str, Any]:
    reader = _open(url)
    try:
        card = wait_card(reader, timeout)
        try:
            with card.exclusive():
                view = CampusCard(card, keys).read()
        except CardRefused as exc:
            return {
                "uid": card.uid.hex().upper(),
                "ok": False,
                "code": exc.code,
                "reason": exc.reason,
            }
        except DriverError as exc:
            raise DeskError(f"reading the card failed: {exc}") from exc
        finally:
            card.close()
        return {"uid": view.uid_hex, "ok": True, **describe(view.identity, view.counters)}
    finally:
        reader.close()


def describe(ident: Identity, counters: Counters) -> dict[str, Any]:
    return {**ident.describe(), "layout_version": ident.version, "counters": counters.describe()}
