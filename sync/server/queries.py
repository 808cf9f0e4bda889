"""R9 queries for card holders: bills (账单) and the transaction flow (交易流水), newest first,
with date filters (campus days) and keyset paging (an opaque cursor).

What each holds is decided in :mod:`sync.rules` (``BILL_KINDS``, ``FLOW_MONEY_KINDS``): bills
are top-ups and purchases; the flow adds the account's own money operations and every account
operation (loss, unlock, freeze, passwords, limit, cards, extension, cancellation).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

from sync import rules
from sync.clock import iso
from sync.db import placeholders
from sync.server import ledger
from sync.server.context import Context
from sync.server.errors import BadRequest, Invalid

MAX_PAGE = 200


def _day_start_ms(day: str, tz: str) -> int:
    try:
        d = dt.date.fromisoformat(day)
    except ValueError:
        raise Invalid(f"dates are YYYY-MM-DD, got {day!r}", "bad_date") from None
    return int(dt.datetime.combine(d, dt.time(), ZoneInfo(tz)).timestamp() * 1000)


def _cursor_out(ts_ms: int, key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([ts_ms, key]).encode()).decode()


#: the bounds of a cursor's parts: a time stored in a 64-bit column, a row key (``t:<transfer
#: id>`` or ``e:<event id>``) no longer than any the server makes
_CURSOR_TS = (0, 2**62)
_CURSOR_KEY_LEN = 200
MAX_CURSOR = 400  # characters of the whole (base64) cursor


def _cursor_in(cursor: str) -> tuple[int, str]:
    """A cursor this server handed out, or 400 ``bad_cursor``: a cursor is opaque, so one
    that does not parse, has other types (a boolean is no time) or values out of bounds (a
    huge integer the database cannot hold) is a bad request."""
    bad = BadRequest("cursor is not one this server handed out", "bad_cursor")
    if len(cursor) > MAX_CURSOR:
        raise bad
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
        raise bad from None
    if not (isinstance(parts, list) and len(parts) == 2):
        raise bad
    ts_ms, key = parts
    if type(ts_ms) is not int or not _CURSOR_TS[0] <= ts_ms <= _CURSOR_TS[1]:
        raise bad
    if (
        not isinstance(key, str)
        or not 2 < len(key) <= _CURSOR_KEY_LEN
        or key[:2]
        not in (
            "t:",
            "e:",
        )
    ):
        raise bad
    return ts_ms, key


def _sign(account_id: int, debit: str, credit: str, amount: int) -> int:
    """The amount as the holder sees it: + into their money, - out of it; a move between
    their own balances (R7 transition) shows the amount moved."""
    own = {ledger.wallet(account_id), ledger.transition(account_id)}
    if credit in own and debit in own:
        return amount
    return amount if credit in own else -amount


def page(
    ctx: Context,
    account_id: int,
    which: str,
    *,
    from_date: str | None = None,
    to_date: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """One page of bills (``which="bills"``) or flow (``"flow"``), newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit is 1 to {MAX_PAGE}", "bad_limit")
    tz = ctx.config.tz
    lo = _day_start_ms(from_date, tz) if from_date else None
    hi = _day_start_ms(to_date, tz) + 86_400_000 if to_date else None  # to_date inclusive
    kinds = rules.BILL_KINDS if which == "bills" else rules.FLOW_MONEY_KINDS
    parts = [
        "SELECT ts_ms, 't:' || id AS k, id AS ref, kind, debit, credit, amount, memo, '' AS actor "
        f"FROM transfers WHERE account_id = ? AND kind IN ({placeholders(len(kinds))})"
    ]
    params: list[Any] = [account_id, *kinds]
    if which == "flow":
        parts.append(
            "SELECT ts_ms, 'e:' || CAST(id AS TEXT) AS k, CAST(id AS TEXT) AS ref, kind, "
            "'' AS debit, '' AS credit, 0 AS amount, detail AS memo, actor "
            "FROM account_events WHERE account_id = ?"
        )
        params.append(account_id)
    where: list[str] = []
    wparams: list[Any] = []
    if lo is not None:
        where.append("ts_ms >= ?")
        wparams.append(lo)
    if hi is not None:
        where.append("ts_ms < ?")
        wparams.append(hi)
    if cursor:
        c_ts, c_key = _cursor_in(cursor)
        where.append("(ts_ms < ? OR (ts_ms = ? AND k < ?))")
        wparams += [c_ts, c_ts, c_key]
    sql = "SELECT * FROM (" + " UNION ALL ".join(parts) + ") u"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ts_ms DESC, k DESC LIMIT ?"
    with ctx.db.read() as rd:
        rows = rd.all(sql, (*params, *wparams, limit + 1))
    return _page_out(ctx, account_id, rows, limit)


def _page_out(ctx: Context, account_id: int, rows: list[Any], limit: int) -> dict[str, Any]:
    items = []
    for r in rows[:limit]:
        is_event = str(r["k"]).startswith("e:")
        items.append(
            {
                "id": f"e{r['ref']}" if is_event else r["ref"],
                "time": iso(r["ts_ms"], ctx.config.tz),
                "ts_ms": r["ts_ms"],
                "kind": r["kind"],
                "amount_fen": None
                if is_event
                else _sign(account_id, r["debit"], r["credit"], r["amount"]),
                "memo": r["memo"],
                "actor": r["actor"],
            }
        )
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return {
        "items": items,
        "next_cursor": _cursor_out(last["ts_ms"], last["k"]) if last is not None else None,
    }
