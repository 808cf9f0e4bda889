"""The central server's services called in-process, on a temporary database (SQLite or
PostgreSQL): for tests that need many examples (hypothesis) or a knob the HTTP API does not
expose (feed page size).  Everything else runs against the real server over loopback."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec

from sync import protocol
from sync.clock import ManualClock
from sync.crypto import SigningKey
from sync.db import Database
from sync.records import offline_sale, to_json
from sync.server import ingest, terminals
from sync.server.context import Context, ServerConfig
from sync.server.schema import MIGRATIONS
from tests import dbs

#: A campus noon (Asia/Shanghai), far from midnight.
NOON_MS = 1_780_027_200_000


def make_context(data: Path, seed: int = 1) -> Context:
    """A server context on a fresh database of the current kind (a SQLite file, or a new
    PostgreSQL database: tests/dbs.py).  ``synchronous=OFF``: durability across power loss is
    not what these tests check, and it keeps hypothesis fast."""
    config = ServerConfig(data_dir=data, password_log2_n=10, seed=seed, db_url=dbs.fresh_url())
    data.mkdir(parents=True, exist_ok=True)
    db = dbs.opened(
        config.db_url, Database(config.db_target, synchronous="OFF", migrations=MIGRATIONS)
    )
    ctx = Context(config=config, db=db, clock=ManualClock(NOON_MS), rng=random.Random(seed))
    ctx.shared_keys()
    return ctx


class InProcTerminal:
    """A POS enrolled in-process; seals records into its own chain and ingests them."""

    def __init__(self, ctx: Context, name: str = "pos", seed: int = 7) -> None:
        self.ctx = ctx
        self.key = SigningKey.from_seed(seed.to_bytes(32, "big"))
        token = terminals.create_enroll_token(ctx, "pos", name)["token"]
        self.id: str = terminals.enroll(ctx, token, self.key.public.to_b64())["terminal_id"]
        self.seq = 0
        self.head = protocol.genesis_hash(self.id)

    @property
    def row(self) -> dict[str, Any]:
        r = self.ctx.db.one("SELECT * FROM terminals WHERE id = ?", (self.id,))
        assert r is not None
        return dict(r)

    def record(self, acct: int, amt: int, **kw: Any) -> dict[str, str]:
        self.seq += 1
        rec = offline_sale(
            term=self.id,
            seq=self.seq,
            prev=self.head,
            ts=self.ctx.now_ms(),
            acct=acct,
            amt=amt,
            cred="card:test",
            lim=0,
        )
        body, sig = protocol.seal(self.key, msgspec.structs.replace(rec, **kw))
        self.head = protocol.record_hash(body)
        return protocol.wire_record(body, sig)

    def push(self, records: list[dict[str, str]]) -> dict[str, Any]:
        return to_json(ingest.ingest(self.ctx, self.row, records))
