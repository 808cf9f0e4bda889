"""R17 found cards (捡获卡): a finder registers a card they found (in the app, on the website, or
by putting it on a kiosk's reader); the owner, after reporting the loss (R10), looks it up.

The finder learns nothing about the owner; the owner sees where the card was left and the
finder's note.  Registering the same card twice while it is open updates the place.
"""

from __future__ import annotations

from typing import Any

from sync import rules
from sync.clock import iso
from sync.server import ratelimit
from sync.server.accounts import event
from sync.server.context import Context
from sync.server.errors import Conflict, Invalid, NotFound

#: registrations per finder and day (keeps the register from being used to probe numbers)
PER_FINDER_DAY = 20


def register(ctx: Context, card_no: str, place: str, note: str, finder: str) -> dict[str, Any]:
    place, note = (place or "").strip(), (note or "").strip()
    if not 1 <= len(place) <= 200 or len(note) > 500:
        raise Invalid("place: 1-200 characters; note: at most 500", "bad_found_card")
    row = ctx.db.one("SELECT card_no, account_id FROM cards WHERE card_no = ?", (card_no,))
    if row is None:
        raise NotFound(f"no campus card numbered {card_no!r}", "no_card")
    ratelimit.hit(ctx, f"r17:{finder}", PER_FINDER_DAY, 86_400, "found-card registrations")
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        open_row = tx.one(
            "SELECT id FROM found_cards WHERE card_no = ? AND status = 'open'", (card_no,)
        )
        if open_row is not None:
            tx.execute(
                "UPDATE found_cards SET place = ?, note = ?, finder = ?, ts_ms = ? WHERE id = ?",
                (place, note, finder, now, open_row["id"]),
            )
        else:
            tx.execute(
                "INSERT INTO found_cards (card_no, account_id, place, note, finder, ts_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (card_no, row["account_id"], place, note, finder, now),
            )
        event(tx, ctx, row["account_id"], "found_card", f"card {card_no} found: {place}", finder)
    return {"card_no": card_no, "registered": True, "time": iso(now, ctx.config.tz)}


def _rows(ctx: Context, account_id: int) -> list[dict[str, Any]]:
    return [
        {
            "id": r["id"],
            "card_no": r["card_no"],
            "place": r["place"],
            "note": r["note"],
            "time": iso(r["ts_ms"], ctx.config.tz),
            "status": r["status"],
        }
        for r in ctx.db.all(
            "SELECT id, card_no, place, note, ts_ms, status FROM found_cards "
            "WHERE account_id = ? ORDER BY ts_ms DESC, id DESC",
            (account_id,),
        )
    ]


def lookup(ctx: Context, acct: dict[str, Any]) -> dict[str, Any]:
    """R17: the owner's found cards; only after the loss was reported."""
    status = ctx.db.scalar("SELECT status FROM accounts WHERE id = ?", (acct["id"],))
    if not rules.found_card_lookup_allowed(str(status)):
        raise Conflict("report the card lost first, then look it up (R17)", "not_reported_lost")
    return {"found": _rows(ctx, acct["id"])}


def desk_list(ctx: Context, account_id: int) -> dict[str, Any]:
    return {"found": _rows(ctx, account_id)}


def close(ctx: Context, found_id: int, actor: str) -> dict[str, Any]:
    """The desk hands a found card back (or destroys it): the registration closes."""
    with ctx.db.tx() as tx:
        row = tx.one("SELECT account_id, card_no FROM found_cards WHERE id = ?", (found_id,))
        if row is None:
            raise NotFound(f"no found-card registration {found_id}", "no_found_card")
        tx.execute("UPDATE found_cards SET status = 'closed' WHERE id = ?", (found_id,))
        event(tx, ctx, row["account_id"], "found_card_closed", f"card {row['card_no']}", actor)
    return {"id": found_id, "status": "closed"}
