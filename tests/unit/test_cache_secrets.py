"""Issue 10 item 9: a terminal keeps no password hash.  The feed once carried each account's
query-password hash (``pin_verifier``); a cache made then is wiped when the terminal updates
(zeroed in the file, not only unlinked from the table), and a cache never stores one, even
from a server that still sends it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from edge import cache as cache_mod
from edge.cache import MIGRATIONS, WIPE_VERIFIERS, Cache
from sim.cards import card_for
from sim.errors import SimError
from sync.card.keys import Keystore
from sync.db import Database, Migrations
from sync.records import CardRow, FeedPage
from tests.unit.fakes import account, card_row

SECRET = "scrypt$15$8$1$U0VDUkVUU0FMVFNFQ1JFVA==$SECRETHASHSECRETHASHSECRETHASH="
#: a card's signed identity as the feed sent it (it holds the consumption-password verifier)
IDENTITY = "SURFTlRJVFlWRVJJRklFUlNJR05BVFVSRQ" * 3


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def test_a_cache_made_before_is_wiped_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    before = Migrations()
    for step_id, fn in MIGRATIONS.steps:
        if step_id == WIPE_VERIFIERS:
            break
        before.add_fn(step_id, fn)
    db = Database(path, synchronous="NORMAL", migrations=before)
    with db.tx() as tx:
        for i in range(1, 300):
            snap = {**account(i, f"S{i:05d}", 100, 5000, pin_verifier=f"{SECRET}{i:04d}")}
            snap["as_of_seq"] = 0
            tx.execute(
                cache_mod.UPSERT_ACCOUNT, tuple(snap[c] for c in cache_mod._STORED_ACCOUNT_COLS)
            )
            card = card_row(card_no=f"1{i:07d}", account_id=i, identity=IDENTITY)
            tx.execute(cache_mod.UPSERT_CARD, tuple(card[c] for c in cache_mod._CARD_COLS))
        tx.execute(cache_mod.UPSERT_META, ("version", "42"))
    db.close()
    assert b"SECRETHASH" in _file_bytes(path) and IDENTITY.encode() in _file_bytes(path)

    cache = Cache(Database(path, synchronous="NORMAL"))
    acct = cache.account(7)
    assert acct is not None and acct.pin_verifier == "" and acct.balance_fen == 100
    card = cache.card("10000007")
    assert card is not None and card.identity == "" and card.uid
    assert cache.version == 0  # pulled again from the start: a simulated terminal gets them back
    cache.db.close()
    assert b"SECRETHASH" not in _file_bytes(path)
    assert IDENTITY.encode() not in _file_bytes(path)


def test_a_cache_does_not_keep_a_hash_an_older_server_sends(tmp_path: Path) -> None:
    cache = Cache(Database(tmp_path / "cache.db", synchronous="NORMAL"))
    page = msgspec.convert(
        {
            "version": 3,
            "more": False,
            "reset": False,
            "ack": 0,
            "accounts": [account(5, "S00005", 100, 5000, pin_verifier=SECRET)],
            "cards": [],
            "certs": [],
        },
        FeedPage,
    )
    cache.apply(page)
    acct = cache.account(5)
    assert acct is not None and acct.pin_verifier == ""
    cache.db.close()
    assert b"SECRETHASH" not in _file_bytes(tmp_path / "cache.db")


def test_a_real_terminal_cannot_make_simulated_cards(tmp_path: Path) -> None:
    """Item 9: a terminal not enrolled as simulated gets no card identity from the feed; a
    simulated card it is asked to make for an issued card is refused with the reason (not a
    blank card that then fails at the till without one)."""
    record = msgspec.convert(card_row(identity=""), CardRow)
    keys = Keystore.generate("campus-test").for_role("pos")
    with pytest.raises(SimError, match="enrolled as simulated"):
        card_for(tmp_path / "sim-cards", record.card_no, record, keys, None)
