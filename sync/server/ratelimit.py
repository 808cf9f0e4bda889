"""Rate limits kept in the database (so several server processes share them): a fixed window
per key.  Card-less operations (R10 loss/unlock by number + query password) go through here."""

from __future__ import annotations

from sync.server.context import Context
from sync.server.errors import TooManyRequests


def hit(ctx: Context, key: str, limit: int, window_s: int, what: str) -> None:
    """Count one request under ``key``; raise :class:`TooManyRequests` past ``limit`` in the
    current window."""
    now = ctx.now_ms()
    window_ms = window_s * 1000
    with ctx.db.tx() as tx:
        row = tx.one("SELECT window_start_ms, hits FROM rate_limits WHERE key = ?", (key,))
        if row is None or row["window_start_ms"] + window_ms <= now:
            tx.execute(
                "INSERT INTO rate_limits (key, window_start_ms, hits) VALUES (?, ?, 1) "
                "ON CONFLICT (key) DO UPDATE SET window_start_ms = excluded.window_start_ms, "
                "hits = 1",
                (key, now),
            )
            return
        if row["hits"] >= limit:
            retry = (row["window_start_ms"] + window_ms - now) // 1000 + 1
            raise TooManyRequests(
                f"too many {what}: try again in {retry} s", int(retry), "rate_limited"
            )
        tx.execute("UPDATE rate_limits SET hits = hits + 1 WHERE key = ?", (key,))
