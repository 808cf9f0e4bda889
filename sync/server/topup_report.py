"""R7 daily reconciliation of top-ups by order (``ykt admin report topups``): what each
payment provider says it was paid — its signed statement (sync.paygate.Statement), or, when it
cannot be reached, the notifications it delivered — against what the ledger credited, order by
order, keyed by the provider's time of payment (so an order paid just before midnight and
credited just after belongs to one day).  Top-ups on a provider channel with no order behind
them (money without a payer) are listed too."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import requests

from sync import paygate, rules
from sync.clock import campus_midnight_ms
from sync.crypto import VerifyKey
from sync.errors import ProtocolError, SignatureError
from sync.paygate import CURRENCY, Statement
from sync.server import ledger
from sync.server.context import Context
from sync.server.errors import Invalid


def fetch_statement(
    gate: dict[str, Any], channel: str, from_ms: int, to_ms: int, now_ms: int
) -> Statement:
    """The provider's signed statement of ``channel`` for ``[from_ms, to_ms)``."""
    try:
        resp = requests.get(
            gate["url"] + "/v1/statement",
            params={"channel": channel, "from_ms": str(from_ms), "to_ms": str(to_ms)},
            timeout=10,
        )
    except requests.RequestException as exc:
        raise ProtocolError(f"the payment provider cannot be reached: {exc}") from exc
    if resp.status_code != 200:
        raise ProtocolError(f"the payment provider answered {resp.status_code}")
    paygate.verify(VerifyKey.from_b64(gate["public_key"]), resp.content, resp.headers, now_ms)
    st = paygate.decode(resp.content, Statement)
    assert isinstance(st, Statement)
    if (st.channel, st.from_ms, st.to_ms) != (channel, from_ms, to_ms):
        raise ProtocolError("the provider's statement is not the one asked for")
    return st


def report(ctx: Context, date: str, fetch: Any = fetch_statement) -> dict[str, Any]:
    """R7 reconciliation of ``date`` (a campus day): per order, what the provider says it was
    paid (its signed statement; what it notified when it cannot be reached) against what the
    ledger credited, keyed by the provider's time of payment.  Every difference is listed:
    ``paid_not_credited``, ``credited_not_paid``, ``amounts_differ``, ``paid_twice``, and
    provider-channel top-ups credited without an order."""
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise Invalid("date is YYYY-MM-DD", "bad_date") from None
    from_ms = campus_midnight_ms(day.isoformat(), ctx.config.tz)
    to_ms = campus_midnight_ms((day + dt.timedelta(days=1)).isoformat(), ctx.config.tz)
    now = ctx.now_ms()
    gate_rows = {r["channel"]: dict(r) for r in ctx.db.all("SELECT * FROM paygates")}
    credited = [
        dict(r)
        for r in ctx.db.all(
            "SELECT o.order_id, o.channel, o.amount, o.txn_id, o.paid_ms, o.transfer_id, "
            "a.number FROM topup_orders o JOIN accounts a ON a.id = o.account_id "
            "WHERE o.status = 'credited' AND o.paid_ms >= ? AND o.paid_ms < ?",
            (from_ms, to_ms),
        )
    ]
    channels = sorted(set(gate_rows) | {c["channel"] for c in credited})
    paid: dict[str, list[dict[str, Any]]] = defaultdict(list)  # order id -> payments
    sources: list[dict[str, Any]] = []
    for ch in channels:
        source, error = "provider", None
        lines: list[dict[str, Any]] = []
        gate = gate_rows.get(ch)
        try:
            if gate is None:
                raise ProtocolError("no payment provider is registered")
            st = fetch(gate, ch, from_ms, to_ms, now)
            lines = [
                {
                    "order_id": ln.order_id,
                    "txn_id": ln.txn_id,
                    "amount_fen": ln.amount_fen,
                    "currency": ln.currency,
                    "paid_ms": ln.paid_ms,
                }
                for ln in st.lines
                if ln.channel == ch
            ]
        except (ProtocolError, SignatureError) as exc:
            source, error = "notified", str(exc)
            seen: set[str] = set()
            for r in ctx.db.all(
                "SELECT order_id, txn_id, amount, currency, paid_ms FROM paygate_notices "
                "WHERE channel = ? AND paid_ms >= ? AND paid_ms < ? ORDER BY id",
                (ch, from_ms, to_ms),
            ):
                if r["txn_id"] not in seen:
                    seen.add(r["txn_id"])
                    lines.append(
                        {
                            "order_id": r["order_id"],
                            "txn_id": r["txn_id"],
                            "amount_fen": int(r["amount"]),
                            "currency": r["currency"],
                            "paid_ms": int(r["paid_ms"]),
                        }
                    )
        for ln in lines:
            paid[ln["order_id"]].append({**ln, "channel": ch})
        ch_credited = [c for c in credited if c["channel"] == ch]
        sources.append(
            {
                "channel": ch,
                "provider_url": gate["url"] if gate else None,
                "source": source,
                "error": error,
                "paid_count": len(lines),
                "paid_fen": sum(ln["amount_fen"] for ln in lines),
                "credited_count": len(ch_credited),
                "credited_fen": sum(int(c["amount"]) for c in ch_credited),
            }
        )
    by_order = {c["order_id"]: c for c in credited}
    orders: list[dict[str, Any]] = []
    for order_id in sorted(set(paid) | set(by_order)):
        c = by_order.get(order_id)
        if c is None:  # paid that day: is it credited at all (perhaps under another day)?
            row = ctx.db.one(
                "SELECT o.order_id, o.channel, o.amount, o.txn_id, o.paid_ms, o.transfer_id, "
                "o.status, a.number FROM topup_orders o JOIN accounts a "
                "ON a.id = o.account_id WHERE o.order_id = ?",
                (order_id,),
            )
            c = dict(row) if row is not None and row["status"] == "credited" else None
            number = row["number"] if row is not None else None
        else:
            number = c["number"]
        payments = paid.get(order_id, [])
        problem = None
        if c is None:
            problem = "paid_not_credited"
        elif not any(p["txn_id"] == c["txn_id"] for p in payments):
            problem = "credited_not_paid"
        elif len(payments) > 1:
            problem = "paid_twice"
        else:
            p = payments[0]
            if (p["amount_fen"], p["currency"]) != (int(c["amount"]), CURRENCY):
                problem = "amounts_differ"
        orders.append(
            {
                "order_id": order_id,
                "channel": (c or payments[0])["channel"],
                "number": number,
                "paid": [
                    {k: p[k] for k in ("txn_id", "amount_fen", "currency", "paid_ms")}
                    for p in payments
                ],
                "credited": None
                if c is None
                else {
                    "txn_id": c["txn_id"],
                    "amount_fen": int(c["amount"]),
                    "transfer_id": c["transfer_id"],
                    "paid_ms": int(c["paid_ms"]),
                },
                "problem": problem,
            }
        )
    orderless = [
        {
            "transfer_id": r["id"],
            "channel": str(r["debit"])[2:],
            "amount_fen": int(r["amount"]),
            "ts_ms": int(r["ts_ms"]),
            "account_id": r["account_id"],
        }
        for r in ctx.db.all(
            "SELECT t.id, t.debit, t.amount, t.ts_ms, t.account_id FROM transfers t "
            "LEFT JOIN topup_orders o ON o.transfer_id = t.id WHERE t.kind = 'topup' "
            "AND t.debit != ? AND t.ts_ms >= ? AND t.ts_ms < ? AND o.order_id IS NULL "
            "ORDER BY t.ts_ms, t.id",
            (ledger.channel(rules.Channel.CASH.value), from_ms, to_ms),
        )
    ]
    differences = sum(1 for o in orders if o["problem"]) + len(orderless)
    return {
        "date": day.isoformat(),
        "from_ms": from_ms,
        "to_ms": to_ms,
        "channels": sources,
        "orders": orders,
        "credited_without_order": orderless,
        "differences": differences,
        "ok": differences == 0 and all(s["source"] == "provider" for s in sources),
    }
