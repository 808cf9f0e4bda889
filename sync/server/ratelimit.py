"""Rate limits kept in the database (so several server processes share them): a fixed window
per key.  Card-less operations (R10 loss/unlock by number + query password) and the wrong
query passwords of one client (:mod:`sync.server.holders`) go through here.

A hit is counted and checked in one write transaction (writers take turns, docs/database.md),
so requests sent at once are each counted: none slips through between a read and a write."""

from __future__ import annotations

from sync.db import Tx
from sync.server.context import Context
from sync.server.errors import TooManyRequests


def hit(ctx: Context, key: str, limit: int, window_s: int, what: str) -> None:
    """Count one request under ``key``; raise :class:`TooManyRequests` past ``limit`` in the
    current window."""
    with ctx.db.tx() as tx:
        hit_tx(tx, ctx.now_ms(), key, limit, window_s, what)


def hit_tx(tx: Tx, now: int, key: str, limit: int, window_s: int, what: str) -> int:
    """:func:`hit` inside the caller's write transaction; returns the window's start (for
    :func:`refund`)."""
    window_ms = window_s * 1000
    row = tx.one("SELECT window_start_ms, hits FROM rate_limits WHERE key = ?", (key,))
    if row is None or row["window_start_ms"] + window_ms <= now:
        tx.execute(
            "INSERT INTO rate_limits (key, window_start_ms, hits) VALUES (?, ?, 1) "
            "ON CONFLICT (key) DO UPDATE SET window_start_ms = excluded.window_start_ms, "
            "hits = 1",
            (key, now),
        )
        return now
    if row["hits"] >= limit:
        retry = (row["window_start_ms"] + window_ms - now) // 1000 + 1
        raise TooManyRequests(
            f"too many {what}: try again in {retry} s", int(retry), "rate_limited"
        )
    tx.execute("UPDATE rate_limits SET hits = hits + 1 WHERE key = ?", (key,))
    return int(row["window_start_ms"])


def refund(tx: Tx, key: str, window_start_ms: int) -> None:
    """Give back one hit counted by :func:`hit_tx` in the window that started at
    ``window_start_ms`` (a request that turned out not to count, e.g. a right password)."""
    tx.execute(
        "UPDATE rate_limits SET hits = hits - 1 WHERE key = ? AND window_start_ms = ? AND hits > 0",
        (key, window_start_ms),
    )
