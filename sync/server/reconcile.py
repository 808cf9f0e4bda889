"""Reverse-scan payments reconciled with the terminals' journals (R8, docs/security.md).

In a reverse scan the money moves when the phone pays (:mod:`sync.server.reverse`), before the
terminal has journaled anything, so every payment must end in exactly one of two ways:

- **sold**: the terminal's ``qr-reverse`` sale record for that order syncs and is linked to the
  payment (:func:`link`); it moves no money of its own;
- **refunded**: the payment's money goes back to the holder (transfer ``rrefund:<term>:<order>``,
  a correcting transfer from the merchant, written in ``refunds``), either at once when the
  terminal's journal says the request was closed without a sale (a ``void`` record: the
  cashier cancelled, too many wrong proof codes, or the terminal restarted while the request
  was shown: :func:`void`), or by itself when no record came within ``reverse_refund_s``
  (policy, default 24 h) or the terminal was revoked (:func:`settle`).

A terminal keeps every request it shows in its journal database until the request is closed
(edge/journal.py), and closes it in the same transaction as the record that says how, so a
crash at any instant leaves a request that is either open (closed with a ``void`` at the
next start) or closed by a durable record: every payment meets its record unless the terminal
never syncs again.  A sale record that arrives after the automatic refund (a terminal offline
for longer than ``reverse_refund_s``) is a sale the holder had: it is charged again
(``rsale-late:<term>:<order>``) and raised as an alarm.  A payment for a request already
voided is refused.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

from sync import codes
from sync.db import Tx
from sync.errors import CodeError
from sync.records import JournalRecord
from sync.server import codes as server_codes
from sync.server import ledger
from sync.server.accounts import event
from sync.server.context import Context, next_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Late:
    """A sale record that arrived after its payment was refunded by itself (``kind``
    ``reverse_late``), or whose payment the server lost to a restore and whose server-signed
    proof names the payer (``reverse_restored``): charge it."""

    account_id: int
    transfer: ledger.Transfer
    kind: str = "reverse_late"


def _order(rec: JournalRecord) -> int | None:
    order = rec.x_value("order")
    if not isinstance(order, int) or isinstance(order, bool):
        return None
    return order


def link(
    ctx: Context, tx: Tx, tid: str, seq: int, rec: JournalRecord
) -> tuple[str | None, Late | None]:
    """Link a ``qr-reverse`` sale record to the payment the phone made.  Returns (the problem
    to raise as an alarm, or None; the late charge to apply, or None)."""
    order = _order(rec)
    if order is None:
        return "the qr-reverse record names no order", None
    row = tx.one(
        "SELECT id, account_id, amount, journal_seq, refund_id, transfer_id FROM "
        "reverse_payments WHERE terminal_id = ? AND order_no = ?",
        (tid, order),
    )
    if row is None:
        return from_proof(ctx, tx, tid, seq, order, rec)
    if row["amount"] != rec.amt:
        return f"order {order} was paid {row['amount']} fen, the record says {rec.amt}", None
    if row["journal_seq"] is not None:
        if row["journal_seq"] != seq:
            return f"order {order} is already journaled as record {row['journal_seq']}", None
        return None, None
    tx.execute("UPDATE reverse_payments SET journal_seq = ? WHERE id = ?", (seq, row["id"]))
    if row["refund_id"] is None:
        return None, None
    # the payment was refunded by itself before this record came: the holder had the sale
    refunded = int(
        tx.scalar("SELECT amount FROM refunds WHERE transfer_id = ?", (row["refund_id"],)) or 0
    )
    if refunded <= 0:
        return None, None
    aid = int(row["account_id"])
    late = ledger.Transfer(
        f"rsale-late:{tid}:{order}",
        rec.ts,
        ledger.wallet(aid),
        ledger.merchant_of(tx, tid),
        refunded,
        "sale",
        aid,
        f"qr-reverse sale at {tid} (order {order}): its record came after the payment was "
        "refunded, charged again",
    )
    return (
        f"order {order}: the sale record came after the payment was refunded by itself; "
        "charged again",
        Late(aid, late),
    )


def _proof_names(ctx: Context, tid: str, order: int, rec: JournalRecord) -> str | None:
    """Why the record's ``x.proof`` is not a server-signed proof of this very payment (this
    campus, terminal, order, amount and payer), or None when it is."""
    text = rec.x_value("proof")
    if not isinstance(text, str) or text == "code":
        return "the cashier keyed the proof's short code, which names no payer"
    try:
        proof = codes.parse_proof(base64.b64decode(text, validate=True))
        if (proof.campus, proof.terminal, proof.order, proof.amount_fen, proof.account_id) != (
            server_codes.campus(ctx),
            codes.terminal_number(tid),
            order,
            rec.amt,
            rec.acct,
        ):
            return "the proof in the record pays another request or names another payer"
        key = ctx.code_issuer.public_keys().get(proof.kid)
        if key is None or not key.ok(proof.sig, proof.signed):
            return "the proof in the record is not signed by this campus"
    except (ValueError, CodeError) as exc:
        return f"the proof in the record cannot be read: {exc}"
    return None


def from_proof(
    ctx: Context, tx: Tx, tid: str, seq: int, order: int, rec: JournalRecord
) -> tuple[str | None, Late | None]:
    """A ``qr-reverse`` sale whose payment the server does not have: it was lost when the
    server was restored from a backup older than the payment (a payment is made before the
    record, and a record never names an order it was not paid for).  When the record carries
    the server-signed proof the terminal verified, the proof names the payer: charge them now,
    once (transfer ``rsale:<terminal>:<order>``, the payment's own id) and keep the payment as
    linked to this record.  With only the short code keyed nobody can be named: the alarm
    ``reverse_unpaid`` tells the desk (docs/operations.md)."""
    why = _proof_names(ctx, tid, order, rec)
    if why is not None:
        return (
            f"order {order} was never paid by a phone, but the terminal accepted a proof ({why})",
            None,
        )
    if tx.one("SELECT 1 FROM accounts WHERE id = ?", (rec.acct,)) is None:
        return f"order {order}: the proof names account {rec.acct}, which does not exist", None
    transfer_id = f"rsale:{tid}:{order}"
    if tx.one("SELECT 1 FROM transfers WHERE id = ?", (transfer_id,)) is not None:
        return f"order {order} is charged ({transfer_id}) but has no payment row", None
    charge = ledger.Transfer(
        transfer_id,
        rec.ts,
        ledger.wallet(rec.acct),
        ledger.merchant_of(tx, tid),
        rec.amt,
        "sale",
        rec.acct,
        f"qr-reverse sale at {tid} (order {order}): its phone payment was not on the server "
        "(restored from a backup?); charged from the server-signed proof in the record",
    )
    tx.execute(
        "INSERT INTO reverse_payments (terminal_id, order_no, account_id, amount, request, "
        "transfer_id, paid_ms, journal_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (tid, order, rec.acct, rec.amt, "", transfer_id, rec.ts, seq),
    )
    return (
        f"order {order}: its phone payment was not on the server (restored from a backup?); "
        f"charged to account {rec.acct} from the server-signed proof in the record",
        Late(rec.acct, charge, "reverse_restored"),
    )


def void(ctx: Context, tx: Tx, tid: str, seq: int, rec: JournalRecord) -> str | None:
    """A ``void`` record: the terminal closed reverse-scan order ``x.order`` without a sale.
    A payment for it is refunded now; a payment not yet made will be refused.  Returns a
    problem to raise as an alarm, or None."""
    order = _order(rec)
    if order is None:
        return "the void record names no order"
    tx.execute(
        "INSERT INTO reverse_voids (terminal_id, order_no, seq, ts_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (terminal_id, order_no) DO NOTHING",
        (tid, order, seq, ctx.now_ms()),
    )
    row = tx.one(
        "SELECT * FROM reverse_payments WHERE terminal_id = ? AND order_no = ?", (tid, order)
    )
    if row is None:
        return None
    if row["journal_seq"] is not None:
        return (
            f"order {order} is closed without a sale (record {seq}), but its sale is record "
            f"{row['journal_seq']}: the payment stays with the sale"
        )
    _refund(ctx, tx, dict(row), f"the terminal closed the request without a sale (record {seq})")
    return None


def _refund(ctx: Context, tx: Tx, row: dict[str, Any], why: str) -> bool:
    """Give a reverse-scan payment's money back (what is left of it), once."""
    if row["refund_id"] is not None or row["journal_seq"] is not None:
        return False
    tid, order, aid = row["terminal_id"], row["order_no"], int(row["account_id"])
    rid = f"rrefund:{tid}:{order}"
    left = int(row["amount"]) - ledger.corrected(tx, row["transfer_id"])
    now = ctx.now_ms()
    if left > 0:
        ledger.transfer(
            tx,
            ledger.Transfer(
                rid,
                now,
                # back from the account the payment credited (its merchant's, or before
                # merchants existed the terminal's)
                str(
                    tx.scalar("SELECT credit FROM transfers WHERE id = ?", (row["transfer_id"],))
                    or ledger.merchant_of(tx, tid)
                ),
                ledger.wallet(aid),
                left,
                "refund",
                aid,
                f"refund: reverse-scan payment of order {order} at {tid}: {why}",
            ),
        )
        tx.execute(
            "INSERT INTO refunds (transfer_id, original, amount, reason, request_id, actor, "
            "ts_ms) VALUES (?, ?, ?, ?, NULL, 'system', ?)",
            (rid, row["transfer_id"], left, why[:200], now),
        )
        tx.execute("UPDATE accounts SET version = ? WHERE id = ?", (next_version(tx), aid))
        event(
            tx,
            ctx,
            aid,
            "refund",
            f"reverse-scan payment of order {order} at {tid} refunded: {why}",
            "system",
        )
    tx.execute("UPDATE reverse_payments SET refund_id = ? WHERE id = ?", (rid, row["id"]))
    log.info("reverse-scan payment %s:%s refunded (%d fen): %s", tid, order, left, why)
    return True


def settle(ctx: Context, terminal_id: str | None = None, tx: Tx | None = None) -> int:
    """Refund the reverse-scan payments that will not meet a record: their terminal voided the
    request, was revoked, or has not sent the record within ``reverse_refund_s``.  With
    ``terminal_id``, that terminal's only; in ``tx`` when given.  Returns how many."""
    sql = (
        "SELECT p.*, t.status AS terminal_status, v.seq AS void_seq FROM reverse_payments p "
        "JOIN terminals t ON t.id = p.terminal_id LEFT JOIN reverse_voids v "
        "ON v.terminal_id = p.terminal_id AND v.order_no = p.order_no "
        "WHERE p.journal_seq IS NULL AND p.refund_id IS NULL"
    )
    args: tuple[Any, ...] = ()
    if terminal_id is not None:
        sql += " AND p.terminal_id = ?"
        args = (terminal_id,)
    sql += " ORDER BY p.id"
    if tx is None:
        if not ctx.db.all(sql, args):  # the usual case: no writer lock taken for nothing
            return 0
        with ctx.db.tx() as own:
            n = settle(ctx, terminal_id, own)
        if n:
            ctx.notifier.notify()
        return n
    cutoff = ctx.now_ms() - int(ctx.policy()["reverse_refund_s"]) * 1000
    n = 0
    for row in tx.all(sql, args):
        if row["void_seq"] is not None:
            why = f"the terminal closed the request without a sale (record {row['void_seq']})"
        elif row["terminal_status"] != "active":
            why = "the terminal was revoked: its record can never arrive"
        elif row["paid_ms"] <= cutoff:
            why = "no record of the sale came from the terminal in time (reverse_refund_s)"
        else:
            continue
        n += _refund(ctx, tx, dict(row), why)
    return n
