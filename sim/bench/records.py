"""Properly chained and signed journal records, made fast for the benchmarks.

A :class:`Chain` continues a terminal's hash chain: each record is built by
:func:`sync.records.offline_sale`, validated and encoded canonically as
:func:`sync.protocol.seal` does, and names the SHA-256 of the previous
body, exactly as :meth:`edge.journal.Journal.append` does.  Bodies are built in order (the chain
needs that); with a process pool the Ed25519 signatures are made on every core.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from sync import protocol, records
from sync.crypto import SigningKey
from sync.records import JournalRecord


@dataclass(frozen=True)
class Sealed:
    rec: JournalRecord
    body: bytes
    sig: bytes
    hash: str


def key_from_seed(seed: int) -> SigningKey:
    return SigningKey.from_seed(seed.to_bytes(32, "big"))


#: the record the server benchmarks and the tests' hand-built terminals send
#: (:func:`sync.records.offline_sale`)
offline_sale = records.offline_sale


def _sign_chunk(seed: int, bodies: list[bytes]) -> list[bytes]:
    key = key_from_seed(seed)
    return [key.sign(b) for b in bodies]


class Chain:
    """The next records of one terminal, continuing after ``(head_seq, head_hash)``."""

    def __init__(
        self,
        terminal_id: str,
        seed: int,
        accounts: list[int],
        *,
        head_seq: int = 0,
        head_hash: str | None = None,
        start_ms: int = 1_780_000_000_000,
        offline_every: int = 5,
        rng_seed: int = 1,
    ) -> None:
        self.terminal_id = terminal_id
        self.seed = seed
        self.key = key_from_seed(seed)
        self.accounts = accounts
        self.seq = head_seq
        self.head_hash = head_hash or protocol.genesis_hash(terminal_id)
        self.ts = start_ms
        self.offline_every = offline_every
        self.rng = random.Random(rng_seed)

    def _next(self) -> JournalRecord:
        self.seq += 1
        self.ts += 1500  # a sale every 1.5 s
        acct = self.accounts[self.rng.randrange(len(self.accounts))]
        offline = self.offline_every > 0 and self.seq % self.offline_every == 0
        return records.offline_sale(
            term=self.terminal_id,
            seq=self.seq,
            prev=self.head_hash,
            ts=self.ts,
            acct=acct,
            cred=f"card:C{acct:08d}:{acct:08X}",
            amt=self.rng.randrange(100, 2100),
            off=offline,
            lim=5000,
            bal=None if offline else 500_000,
            op="bench",
            auth=None if offline else f"{self.terminal_id}:{self.seq}",
        )

    def _bodies(self, n: int) -> tuple[list[JournalRecord], list[bytes], list[str]]:
        recs, bodies, hashes = [], [], []
        for _ in range(n):
            rec = self._next()
            body = rec.checked_body()
            self.head_hash = protocol.record_hash(body)
            recs.append(rec)
            bodies.append(body)
            hashes.append(self.head_hash)
        return recs, bodies, hashes

    def take(self, n: int) -> list[Sealed]:
        """The next ``n`` records, signed in this process."""
        recs, bodies, hashes = self._bodies(n)
        sigs = [self.key.sign(b) for b in bodies]
        return [Sealed(*t) for t in zip(recs, bodies, sigs, hashes, strict=True)]

    def stream(self, total: int, chunk: int, pool: Executor | None) -> Iterator[list[Sealed]]:
        """``total`` records in chunks; with ``pool`` the signing runs on its workers while the
        next chunk's bodies are built here."""
        if pool is None:
            left = total
            while left > 0:
                yield self.take(min(chunk, left))
                left -= chunk
            return
        pending: list[Any] = []
        left = total
        while left > 0 or pending:
            while left > 0 and len(pending) < 4:
                recs, bodies, hashes = self._bodies(min(chunk, left))
                left -= len(bodies)
                pending.append((recs, bodies, hashes, pool.submit(_sign_chunk, self.seed, bodies)))
            recs, bodies, hashes, fut = pending.pop(0)
            yield [Sealed(*t) for t in zip(recs, bodies, fut.result(), hashes, strict=True)]


def wire(records: list[Sealed]) -> list[dict[str, str]]:
    return [protocol.wire_record(r.body, r.sig) for r in records]
