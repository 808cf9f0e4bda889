"""The SQLite floor on this machine: what a durable commit and a batched insert cost with no
ykt code in the way (raw ``sqlite3``, WAL, ``synchronous=FULL``).

The table has the journal's shape (same columns, same index, rows of the same size), so the
journal and ingest figures can be read against it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.bench.stats import rate, summary_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, body TEXT NOT NULL, sig TEXT NOT NULL,
    account_id INTEGER NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL, day TEXT NOT NULL,
    offline INTEGER NOT NULL, pin TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_account ON journal (account_id, seq);
"""
BODY = "x" * 300  # a journal record body is about 300 bytes
HASH = "h" * 64
SIG = "s" * 88

if TYPE_CHECKING:
    from sim.bench import Options


def _row(seq: int) -> tuple[Any, ...]:
    return (seq, HASH, BODY, SIG, seq % 1000, "sale", 100, "2026-01-01", 0, "none")


class FloorDb:
    """A raw SQLite file that commits one journal-shaped row per transaction."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)
        self.seq = int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()[0])

    def commit_one(self) -> int:
        """Insert and commit one row; returns the wall time in ns."""
        self.seq += 1
        t0 = time.perf_counter_ns()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            "INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _row(self.seq)
        )
        self.conn.execute("COMMIT")
        return time.perf_counter_ns() - t0

    def close(self) -> None:
        self.conn.close()


def commit_floor(path: Path, n: int, warmup: int = 20) -> dict[str, Any]:
    db = FloorDb(path)
    try:
        for _ in range(warmup):
            db.commit_one()
        return summary_ms(db.commit_one() for _ in range(n))
    finally:
        db.close()


def batched_insert(path: Path, rows: int, small: bool) -> dict[str, Any]:
    """Rows/s of one ``executemany`` in one transaction (then one durable commit)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if small:
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b TEXT)")
            data: list[tuple[Any, ...]] = [(i, i * 7, "row") for i in range(1, rows + 1)]
            sql = "INSERT INTO t VALUES (?, ?, ?)"
        else:
            conn.executescript(SCHEMA)
            data = [_row(i) for i in range(1, rows + 1)]
            sql = "INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, data)
        conn.execute("COMMIT")
        return {"rows": rows, "rows_per_s": rate(rows, time.perf_counter() - t0)}
    finally:
        conn.close()


def run(work: Path, opts: Options) -> dict[str, Any]:
    n, rows = (200, 50_000) if opts.quick else (2000, 300_000)
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "sqlite_version": sqlite3.sqlite_version,
        "where": str(work),
        "commit": commit_floor(work / "floor-commit.db", n),
        "batch_small_rows": batched_insert(work / "floor-batch-small.db", rows, small=True),
        "batch_journal_rows": batched_insert(work / "floor-batch-journal.db", rows, small=False),
    }
    for name in ("floor-commit.db", "floor-batch-small.db", "floor-batch-journal.db"):
        for suffix in ("", "-wal", "-shm"):
            p = work / (name + suffix)
            if p.exists():
                os.unlink(p)
    return out
