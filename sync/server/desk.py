"""Service-desk operations beyond the account basics of :mod:`sync.server.accounts`:
extension (R13), cancellation (R14), refunds (correcting transfers).  Reissue of any card type
goes through :mod:`sync.server.reissue` with ``at_kiosk=False``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sync import rules
from sync.db import Tx
from sync.money import check_fen, format_fen
from sync.rules import AccountStatus
from sync.server import ledger, recovery
from sync.server.accounts import account_row, event, get_account, set_status, show_account
from sync.server.context import Context, next_version
from sync.server.errors import Conflict, Invalid, NotFound

_RID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
REFUNDABLE = ("sale", "topup", "electricity", "fee")


def extend(ctx: Context, number: str, expires: str, actor: str) -> dict[str, Any]:
    """R13: desk staff extend a card's validity; the phone's virtual card follows (it is valid
    as long as the account: the feed and the app carry the new date)."""
    try:
        new = dt.date.fromisoformat(expires)
    except (TypeError, ValueError):
        raise Invalid("expires is a date YYYY-MM-DD", "bad_date") from None
    if new.isoformat() < ctx.today():
        raise Invalid("an extension ends today or later", "bad_date")
    with ctx.db.tx() as tx:
        a = account_row(tx, number, cancelled="the account is cancelled (R14)")
        tx.execute(
            "UPDATE accounts SET expires = ?, version = ? WHERE id = ?",
            (new.isoformat(), next_version(tx), a["id"]),
        )
        target = rules.extension_status(a["status"])
        if target.value != a["status"]:
            set_status(ctx, tx, a["id"], target, "expired account extended (R13)", actor)
        event(
            tx,
            ctx,
            a["id"],
            "extend",
            f"validity {a['expires'] or '(none)'} -> {new.isoformat()} (R13)",
            actor,
        )
    ctx.notifier.notify()
    return show_account(ctx, number, history=False)


def in_flight(tx: Tx, aid: int, doing: str) -> None:
    """Refuse (Conflict ``held``) while money of the account is in flight: held for sales
    approved online whose records have not synced, or paid by phone for a reverse-scan sale
    whose terminal has not yet reported it (sold, or cancelled and refunded).  That money is
    not the holder's to take (docs/security.md)."""
    held = tx.all(
        "SELECT terminal_id, COUNT(*) AS n, SUM(amount) AS fen FROM holds WHERE account_id = ? "
        "GROUP BY terminal_id ORDER BY terminal_id",
        (aid,),
    )
    if held:
        total = sum(int(h["fen"]) for h in held)
        where = ", ".join(f"{h['terminal_id']} ({h['n']})" for h in held)
        raise Conflict(
            f"{format_fen(total)} is held for sales approved online that have not synced yet "
            f"(terminals {where}): finish {doing} once they have synced, or once the operator "
            "has revoked a terminal that will never sync",
            "held",
        )
    paid = tx.all(
        "SELECT terminal_id, amount FROM reverse_payments WHERE account_id = ? "
        "AND journal_seq IS NULL AND refund_id IS NULL ORDER BY terminal_id",
        (aid,),
    )
    if paid:
        total = sum(int(p["amount"]) for p in paid)
        where = ", ".join(sorted({str(p["terminal_id"]) for p in paid}))
        raise Conflict(
            f"{format_fen(total)} paid by phone (reverse scan) waits for the record of terminal "
            f"{where}: finish {doing} once it has synced (or the payment was refunded by "
            "itself)",
            "held",
        )


def cancel(ctx: Context, number: str, actor: str) -> dict[str, Any]:
    """R14: on the day of the leaving procedure the account's functions are cancelled.  The
    transition balance moves into the balance, and the balance is paid out in cash at the desk
    (a ``payout`` transfer to the cash channel).  A negative balance is settled first.  Money
    in flight (held for sales approved online, or paid by phone for a reverse-scan sale not yet
    reconciled) is not the holder's: the cancellation waits for it (:func:`in_flight`)."""
    with ctx.db.tx() as tx:
        a = account_row(tx, number, cancelled="the account is already cancelled (R14)")
        aid = a["id"]
        recovery.refuse(tx, "cancellation pay-out")
        in_flight(tx, aid, "cancelling (R14)")
        wallet, trans = ledger.balances(tx, aid)
        if wallet + trans < 0:
            raise Conflict(
                f"the balance is {format_fen(wallet + trans)}: settle it (cash top-up) before "
                "cancelling (R14)",
                "negative_balance",
            )
        now = ctx.now_ms()
        if trans > 0:
            ledger.transfer(
                tx,
                ledger.Transfer(
                    f"cancel-trans:{aid}",
                    now,
                    ledger.transition(aid),
                    ledger.wallet(aid),
                    trans,
                    "transition",
                    aid,
                    "transition balance moved in at cancellation (R14)",
                ),
            )
        paid = wallet + trans
        if paid > 0:
            cash = ledger.channel(rules.CANCEL_PAYOUT_CHANNEL.value)
            ledger.ensure(tx, cash, "channel")
            ledger.transfer(
                tx,
                ledger.Transfer(
                    f"payout:{aid}",
                    now,
                    ledger.wallet(aid),
                    cash,
                    paid,
                    "payout",
                    aid,
                    f"remaining balance paid out in cash by {actor} (R14)",
                ),
            )
        set_status(ctx, tx, aid, AccountStatus.CANCELLED, "account cancelled (R14)", actor)
        tx.execute("UPDATE sessions SET revoked = 1 WHERE account_id = ?", (aid,))
    ctx.notifier.notify()
    out = show_account(ctx, number, history=False)
    out["paid_out_fen"] = paid
    return out


def refund(
    ctx: Context,
    transfer_id: str,
    amount_fen: int | None,
    reason: str,
    request_id: str | None,
    actor: str,
) -> dict[str, Any]:
    """A refund is a correcting transfer: the original (a sale, top-up, electricity transfer
    or fee) is never edited; a new transfer moves (part of) its amount back.  The refunds of
    one original never add up to more than it."""
    reason = (reason or "").strip()
    if not 1 <= len(reason) <= 200:
        raise Invalid("reason: 1-200 characters", "bad_reason")
    if request_id is not None and not _RID.match(request_id):
        raise Invalid("request_id: 8-64 letters, digits, '_' or '-'", "bad_request_id")
    if amount_fen is not None:
        try:
            check_fen(amount_fen)
        except ValueError as exc:
            raise Invalid(str(exc), "bad_amount") from exc
    with ctx.db.tx() as tx:
        if request_id is not None:
            done = tx.one(
                "SELECT transfer_id, original, amount, reason FROM refunds WHERE request_id = ?",
                (request_id,),
            )
            if done is not None:
                # a retry is harmless; the key reused for another refund (another original,
                # reason or amount) is refused, never answered as if that one were made
                if (done["original"], done["reason"]) != (transfer_id, reason) or (
                    amount_fen is not None and int(done["amount"]) != amount_fen
                ):
                    raise Conflict(
                        f"request_id {request_id!r} was used for another refund",
                        "request_id_reused",
                    )
                return _refund_answer(ctx, tx, str(done["transfer_id"]), applied=False)
        orig = tx.one("SELECT * FROM transfers WHERE id = ?", (transfer_id,))
        if orig is None:
            raise NotFound(f"no transfer {transfer_id!r}", "no_transfer")
        if orig["kind"] not in REFUNDABLE or orig["account_id"] is None:
            raise Conflict(f"a {orig['kind']} transfer cannot be refunded", "not_refundable")
        if tx.one(
            "SELECT 1 FROM reverse_payments WHERE transfer_id = ? AND journal_seq IS NULL "
            "AND refund_id IS NULL",
            (transfer_id,),
        ):
            raise Conflict(
                "this reverse-scan payment waits for its terminal's record: it is refunded by "
                "itself when the terminal reports the request cancelled, or after "
                "reverse_refund_s (docs/security.md)",
                "in_flight",
            )
        left = int(orig["amount"]) - ledger.corrected(tx, transfer_id)
        amount = left if amount_fen is None else amount_fen
        if amount <= 0 or amount > left:
            raise Conflict(
                f"at most {format_fen(max(left, 0))} of this transfer is left to refund",
                "over_refund",
            )
        aid = int(orig["account_id"])
        debit, credit = orig["credit"], orig["debit"]
        status = tx.scalar("SELECT status FROM accounts WHERE id = ?", (aid,))
        if status == AccountStatus.CANCELLED and credit in (
            ledger.wallet(aid),
            ledger.transition(aid),
        ):
            # R14: a cancelled account holds no money; the desk pays such a refund in cash
            raise Conflict(
                "the account is cancelled (R14): a refund cannot go back into it", "bad_status"
            )
        if orig["kind"] == "topup" and debit == ledger.transition(aid):
            # the Alipay money may have moved into the balance already (R7)
            _w, t = ledger.balances(tx, aid)
            if t < amount:
                debit = ledger.wallet(aid)
        if debit in (ledger.wallet(aid), ledger.transition(aid)):
            recovery.refuse(tx, "refund out of a balance")
            # money held for sales approved online is not the holder's: never take it back
            # (held money may be served from the transition balance by a card sale, R7, but
            # from the wallet alone by a phone payment: count it against the wallet)
            w, t = ledger.balances(tx, aid)
            held = ledger.held(tx, aid)
            have = w - held if debit == ledger.wallet(aid) else min(t, w + t - held)
            if have < amount:
                raise Conflict(
                    f"the account holds {format_fen(max(have, 0))} that is not held for sales "
                    f"in flight: cannot take back {format_fen(amount)}",
                    "insufficient",
                )
        n = int(tx.scalar("SELECT COUNT(*) FROM refunds WHERE original = ?", (transfer_id,)))
        rid = f"refund:{transfer_id}:{n + 1}"
        ledger.transfer(
            tx,
            ledger.Transfer(
                rid, ctx.now_ms(), debit, credit, amount, "refund", aid, f"refund: {reason}"
            ),
        )
        tx.execute(
            "INSERT INTO refunds (transfer_id, original, amount, reason, request_id, actor, "
            "ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, transfer_id, amount, reason, request_id, actor, ctx.now_ms()),
        )
        tx.execute("UPDATE accounts SET version = ? WHERE id = ?", (next_version(tx), aid))
        out = _refund_answer(ctx, tx, rid, applied=True)
    ctx.notifier.notify()
    return out


def _refund_answer(ctx: Context, tx: Any, rid: str, applied: bool) -> dict[str, Any]:
    r = tx.one(
        "SELECT r.transfer_id, r.original, r.amount, r.reason, t.account_id FROM refunds r "
        "JOIN transfers t ON t.id = r.transfer_id WHERE r.transfer_id = ?",
        (rid,),
    )
    assert r is not None
    wallet, trans = ledger.balances(tx, int(r["account_id"]))
    number = tx.scalar("SELECT number FROM accounts WHERE id = ?", (r["account_id"],))
    return {
        "transfer_id": r["transfer_id"],
        "original": r["original"],
        "amount_fen": int(r["amount"]),
        "reason": r["reason"],
        "applied": applied,
        "number": str(number),
        "balance_fen": wallet,
        "transition_fen": trans,
    }


def account_id_of(ctx: Context, number: str) -> int:
    return int(get_account(ctx, number)["id"])
