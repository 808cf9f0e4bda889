"""Issue 10 item 9: a terminal keeps no password hash.  The feed once carried each account's
query-password hash (``pin_verifier``); a cache made then is wiped when the terminal updates
(zeroed in the file, not only unlinked from the table), and a cache never stores one, even
from a server that still sends it."""

from __future__ import annotations

from pathlib import Path

import msgspec

from edge import cache as cache_mod
from edge.cache import MIGRATIONS, WIPE_VERIFIERS, Cache
from sync.db import Database, Migrations
from sync.records import FeedPage
from tests.unit.fakes import account

SECRET = "scrypt$15$8$1$U0VDUkVUU0FMVFNFQ1JFVA==$SECRETHASHSECRETHASHSECRETHASH="


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
    db.close()
    assert b"SECRETHASH" in _file_bytes(path)

    cache = Cache(Database(path, synchronous="NORMAL"))
    acct = cache.account(7)
    assert acct is not None and acct.pin_verifier == "" and acct.balance_fen == 100
    cache.db.close()
    assert b"SECRETHASH" not in _file_bytes(path)


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
