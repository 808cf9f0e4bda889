"""What anyone needs to check a paper receipt (``ykt verify-receipt``, :mod:`sync.receipt`):
the terminal's public key, and the hash of the record the receipt names once it has synced.
Public: a receipt is checked by whoever holds it; nothing here names an account."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from sync.server.context import Context
from sync.server.errors import NotFound


class ReceiptKeyOut(BaseModel):
    terminal_id: str
    public_key: str = Field(description="the terminal's Ed25519 public key, base64")
    terminal_status: str = Field(description="active or revoked")
    record_hash: str | None = Field(
        description="the SHA-256 of the record's signed body (hex) once it synced, else null"
    )


def receipt_key(ctx: Context, terminal_id: str, seq: int) -> dict[str, Any]:
    row = ctx.db.one("SELECT id, pubkey, status FROM terminals WHERE id = ?", (terminal_id,))
    if row is None:
        raise NotFound(f"unknown terminal {terminal_id}", "unknown_terminal")
    h = ctx.db.scalar(
        "SELECT hash FROM records WHERE terminal_id = ? AND seq = ?", (terminal_id, seq)
    )
    return {
        "terminal_id": row["id"],
        "public_key": row["pubkey"],
        "terminal_status": row["status"],
        "record_hash": None if h is None else str(h),
    }
