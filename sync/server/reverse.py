"""Reverse scan (反扫, R8), the server's part: an online phone pays an offline terminal's
signed payment request, and gets a proof the terminal verifies with no network.

The money moves here, once: transfer ``rsale:<terminal>:<order>`` from the holder's wallet to
the terminal's merchant account, under the unique (terminal, order) of the request.  Paying the
same request again returns the same proof and charges nothing.  When the terminal's journal
record of that sale (method ``qr-reverse``) syncs later, ingest links it to this payment and
moves no money; when the terminal closed the request without a sale, or no record comes in
time, the payment is refunded (:mod:`sync.server.reconcile`).  A request the terminal has
closed already cannot be paid.
"""

from __future__ import annotations

import base64
from typing import Any

from sync import codes, rules
from sync.crypto import VerifyKey
from sync.errors import CodeError
from sync.money import format_fen
from sync.server import ledger, recovery
from sync.server.codes import account_refusal, campus, proof_key
from sync.server.context import Context, next_version
from sync.server.errors import Conflict, Invalid
from sync.server.holders import use_grant, verify_query_password


def _refuse(exc: CodeError) -> Invalid:
    return Invalid(exc.message, exc.reason)


def _proof(ctx: Context, req: codes.PaymentRequest, row: dict[str, Any]) -> dict[str, Any]:
    iss = ctx.code_issuer
    proof = codes.make_proof(iss.key, iss.kid, req, row["account_id"], row["id"])
    return {
        "proof_text": codes.to_text(proof, numeric=True),
        "proof_code": codes.proof_code(proof_key(ctx, req.terminal_id), req),
        "terminal_id": req.terminal_id,
        "order": req.order,
        "amount_fen": req.amount_fen,
        "payment_id": row["id"],
    }


def check_request(ctx: Context, text: str) -> codes.PaymentRequest:
    """A payment request of this campus, signed by an active POS terminal, still payable."""
    try:
        req = codes.parse_request(codes.unpack_text(text))
    except CodeError as exc:
        raise _refuse(exc) from exc
    if req.campus != campus(ctx):
        raise Invalid("payment request of another campus", "other_campus")
    term = ctx.db.one(
        "SELECT id, role, pubkey, status FROM terminals WHERE id = ?", (req.terminal_id,)
    )
    if term is None or term["role"] != "pos":
        raise Invalid(f"no POS terminal {req.terminal_id} on this campus", "unknown_terminal")
    if term["status"] != "active":
        raise Invalid(f"terminal {req.terminal_id} is revoked", "terminal_revoked")
    if not VerifyKey.from_b64(term["pubkey"]).ok(req.sig, req.signed):
        raise Invalid("payment request signature does not verify (forged)", "forged")
    pol = ctx.policy()
    now = ctx.now_ms() // 1000
    if req.time > now + int(pol["code_skew_s"]):
        raise Invalid(
            "payment request is from the future (check the terminal's clock)", "not_yet_valid"
        )
    if now > req.time + int(pol["reverse_valid_s"]):
        raise Invalid("payment request expired: ask the cashier for a new one", "expired")
    return req


def describe(ctx: Context, text: str) -> dict[str, Any]:
    """What the phone shows before paying: terminal, amount."""
    req = check_request(ctx, text)
    name = ctx.db.scalar("SELECT name FROM terminals WHERE id = ?", (req.terminal_id,))
    return {
        "terminal_id": req.terminal_id,
        "terminal_name": name,
        "order": req.order,
        "amount_fen": req.amount_fen,
        "amount": format_fen(req.amount_fen),
    }


def pay(
    ctx: Context,
    holder: dict[str, Any],
    text: str,
    password: str | None,
    grant: str | None = None,
    client: str | None = None,
) -> dict[str, Any]:
    req = check_request(ctx, text)
    recovery.refuse(ctx.db, "reverse-scan payment", online=True)  # as an online approval
    tid, aid = req.terminal_id, holder["id"]
    req_b64 = base64.b64encode(req.raw).decode()
    if password is not None:  # R4: counts wrong tries and locks like any sign-in
        verify_query_password(ctx, holder, password, client)
    now, today = ctx.now_ms(), ctx.today()
    with ctx.db.tx() as tx:
        if tx.one(
            "SELECT 1 FROM reverse_voids WHERE terminal_id = ? AND order_no = ?", (tid, req.order)
        ):
            raise Conflict(
                "the cashier cancelled this payment request: ask for a new one", "request_closed"
            )
        paid = tx.one(
            "SELECT id, account_id, request, amount FROM reverse_payments "
            "WHERE terminal_id = ? AND order_no = ?",
            (tid, req.order),
        )
        if paid is not None:
            if paid["account_id"] != aid or paid["request"] != req_b64:
                raise Conflict("this payment request was already paid", "already_paid")
            wallet_bal, _t = ledger.balances(tx, aid)
            return {
                **_proof(ctx, req, {"account_id": aid, "id": paid["id"]}),
                "balance_fen": wallet_bal,
                "already_paid": True,
                "confirmed": False,
            }
        acct = tx.one("SELECT * FROM accounts WHERE id = ?", (aid,))
        assert acct is not None
        refusal = account_refusal(ctx, dict(acct))  # R2
        if refusal:
            raise Conflict(refusal, "account_blocked")
        held = tx.all(
            "SELECT amount, pin_ok FROM holds WHERE account_id = ? "
            "ORDER BY created_ms, terminal_id, seq",
            (aid,),
        )
        holds = sum(int(h["amount"]) for h in held)
        # R6 as online authorization counts it: today's tracked amount, then the holds in order
        tracker = rules.LimitTracker(acct["spent_day"], acct["spent_fen"]).then(
            today, ((int(h["amount"]), bool(h["pin_ok"])) for h in held)
        )
        confirmed = False
        if tracker.needs_password(today, req.amount_fen, acct["limit_fen"]):  # R6
            if password is None and not (grant and use_grant(ctx, tx, aid, grant)):
                raise Conflict(
                    f"over the daily limit {format_fen(acct['limit_fen'])}: confirm with the "
                    "query password (R6)",
                    "needs_confirm",
                )
            confirmed = True
        wallet_bal, _trans = ledger.balances(tx, aid)
        available = wallet_bal - holds
        if req.amount_fen > available:
            raise Conflict(
                f"insufficient balance ({format_fen(max(available, 0))})", "insufficient"
            )
        transfer_id = f"rsale:{tid}:{req.order}"
        ledger.transfer(
            tx,
            ledger.Transfer(
                transfer_id,
                now,
                ledger.wallet(aid),
                ledger.merchant_of(tx, tid),
                req.amount_fen,
                "sale",
                aid,
                f"qr-reverse sale at {tid} (order {req.order}, paid by phone)",
            ),
        )
        pay_id = tx.insert(
            "INSERT INTO reverse_payments (terminal_id, order_no, account_id, amount, request, "
            "transfer_id, paid_ms) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (tid, req.order, aid, req.amount_fen, req_b64, transfer_id, now),
        )
        after = rules.LimitTracker(acct["spent_day"], acct["spent_fen"]).after_purchase(
            today, req.amount_fen, confirmed
        )
        tx.execute(
            "UPDATE accounts SET spent_day = ?, spent_fen = ?, version = ? WHERE id = ?",
            (after.day, after.spent_fen, next_version(tx), aid),
        )
    ctx.notifier.notify()
    return {
        **_proof(ctx, req, {"account_id": aid, "id": pay_id}),
        "balance_fen": wallet_bal - req.amount_fen,
        "already_paid": False,
        "confirmed": confirmed,
    }
