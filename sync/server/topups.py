"""R7 top-ups by the app, WeChat, Alipay and the bank app: **orders paid at a payment
provider**.  Money enters the ledger only from a payer (docs/api.md "Top-ups: orders and
payment providers"; the wire protocol is :mod:`sync.paygate`):

1. the holder asks for a top-up (``POST /v1/app/topups``: amount, channel, query password):
   the server makes an **order** and no money moves;
2. the holder pays the order at the channel's payment provider (registered by an operator:
   ``ykt admin paygate set``, :func:`register`);
3. the provider delivers its **signed payment notification** to the server
   (``POST /v1/paygate/{channel}/notify``, :func:`notify`), again and again until the server
   acknowledges it.  The server verifies the signature with the registered public key, then
   order id, amount, currency (CNY), channel and the account the order belongs to, and credits
   the order **once per provider transaction id**, in one transaction with the order's change
   of state: a redelivery after a crash between crediting and acknowledging is acknowledged
   without crediting again, and two deliveries racing each other credit once (writers take
   turns, sync/db).  A notification that is forged, stale, late (paid after the order
   expired), for an unknown order, for an order already paid by another transaction, that
   does not match its order, or that repeats a transaction with other content is refused,
   logged (``paygate_notices``) and raised as an alarm.
4. :mod:`sync.server.topup_report` reconciles a day: what each provider says it was paid (its
   signed statement, or what it notified when it cannot be reached) against what the ledger
   credited.

Alipay money lands in the transition balance (R7); the channel switches of the policy decide
whether an order can be made.  Cash stays a desk operation (:func:`sync.server.accounts.topup`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sync import paygate, rules
from sync.crypto import VerifyKey
from sync.db import Tx
from sync.errors import ProtocolError, SignatureError
from sync.paygate import CURRENCY, Notification
from sync.rules import AccountStatus
from sync.server import holders, ledger, ratelimit
from sync.server.context import Context, next_version
from sync.server.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    TooManyRequests,
    Unauthorized,
)

log = logging.getLogger(__name__)

#: channels paid at a provider (cash is taken at the desk)
PROVIDER_CHANNELS = tuple(c.value for c in rules.Channel if c is not rules.Channel.CASH)
#: new orders per account and window (a retry with the same request_id is not a new order)
ORDERS_PER_WINDOW = 30
ORDER_WINDOW_S = 600
#: alarms about notifications that fail their signature, per channel and hour (a flood of
#: forgeries is logged, not written as alarms without end)
FORGED_ALARMS_PER_HOUR = 100
_URL = re.compile(r"^https?://[^\s/?#]+(?::[0-9]{1,5})?(?:/[^\s?#]*)?$")


# -- providers ------------------------------------------------------------------------------------
def _check_channel(channel: str) -> str:
    if channel not in PROVIDER_CHANNELS:
        raise Invalid(
            f"channel must be one of {', '.join(PROVIDER_CHANNELS)} (cash is taken at the desk)",
            "bad_channel",
        )
    return channel


def register(
    ctx: Context, channel: str, url: str, public_key: str, notify_url: str, actor: str
) -> dict[str, Any]:
    """Register (or replace) the payment provider of ``channel``: where it is, the public key
    its notifications and statements are signed with, and the server's notify URL it is told
    with each order."""
    _check_channel(channel)
    for what, value in (("url", url), ("notify_url", notify_url)):
        if not _URL.match(value or "") or len(value) > 500:
            raise Invalid(f"{what} must be an http(s) URL", "bad_url")
    try:
        key = VerifyKey.from_b64(public_key.strip()).to_b64()
    except ProtocolError as exc:
        raise Invalid(f"public_key: {exc} (an Ed25519 public key, base64)", "bad_key") from exc
    with ctx.db.tx() as tx:
        tx.execute(
            "INSERT INTO paygates (channel, url, public_key, notify_url, updated_ms, actor) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel) DO UPDATE SET url = excluded.url, "
            "public_key = excluded.public_key, notify_url = excluded.notify_url, "
            "updated_ms = excluded.updated_ms, actor = excluded.actor",
            (channel, url.rstrip("/"), key, notify_url, ctx.now_ms(), actor),
        )
    log.warning("payment provider of %s registered by %s: %s", channel, actor, url)
    return _gate_out(ctx.db.one("SELECT * FROM paygates WHERE channel = ?", (channel,)))


def gates(ctx: Context) -> list[dict[str, Any]]:
    return [_gate_out(r) for r in ctx.db.all("SELECT * FROM paygates ORDER BY channel")]


def _gate_out(row: Any) -> dict[str, Any]:
    assert row is not None
    return {
        "channel": row["channel"],
        "url": row["url"],
        "public_key": row["public_key"],
        "notify_url": row["notify_url"],
        "updated_ms": int(row["updated_ms"]),
        "actor": row["actor"],
    }


# -- orders ---------------------------------------------------------------------------------------
def create_order(
    ctx: Context,
    acct: dict[str, Any],
    amount_fen: int,
    channel: str,
    password: str,
    request_id: str | None,
) -> dict[str, Any]:
    """R7: a top-up order of the signed-in holder (the query password confirms it).  No money
    moves: the order is credited when its provider's signed notification arrives."""
    if channel == rules.Channel.CASH:
        raise Invalid("cash is topped up at the service desk (R7)", "bad_channel")
    _check_channel(channel)
    if not ctx.policy()["channels"].get(channel, False):
        raise Conflict(f"top-up channel {channel} is switched off (R7)", "channel_off")
    gate = ctx.db.one("SELECT * FROM paygates WHERE channel = ?", (channel,))
    if gate is None:
        raise Conflict(
            f"no payment provider is registered for {channel}: top-ups by it cannot be paid",
            "no_paygate",
        )
    holders.verify_query_password(ctx, acct, password)
    aid = int(acct["id"])
    if request_id is not None:
        done = _by_request(ctx, aid, request_id, amount_fen, channel)
        if done is not None:
            return done
    ratelimit.hit(
        ctx, f"topup:acct:{aid}", ORDERS_PER_WINDOW, ORDER_WINDOW_S, "top-up orders for now"
    )
    now = ctx.now_ms()
    ttl_ms = int(ctx.policy()["topup_order_ttl_s"]) * 1000
    with ctx.db.tx() as tx:
        status = tx.scalar("SELECT status FROM accounts WHERE id = ?", (aid,))
        if status == AccountStatus.CANCELLED:
            raise Conflict("the account is cancelled (R14)", "bad_status")
        if request_id is not None:  # a retry racing this one
            row = tx.one(
                "SELECT order_id FROM topup_orders WHERE account_id = ? AND request_id = ?",
                (aid, request_id),
            )
            if row is not None:
                order_id = str(row["order_id"])
                return _checked_retry(ctx, tx, order_id, amount_fen, channel, request_id)
        tx.execute(
            "UPDATE topup_orders SET status = 'expired' WHERE status = 'open' AND expires_ms < ?",
            (now,),
        )
        order_id = f"T{ctx.rng.getrandbits(80):020x}"
        tx.execute(
            "INSERT INTO topup_orders (order_id, account_id, channel, amount, currency, "
            "request_id, status, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?)",
            (order_id, aid, channel, amount_fen, CURRENCY, request_id, now, now + ttl_ms),
        )
        return _order_out(ctx, tx, order_id)


def _by_request(
    ctx: Context, aid: int, request_id: str, amount_fen: int, channel: str
) -> dict[str, Any] | None:
    with ctx.db.read() as tx:
        row = tx.one(
            "SELECT order_id FROM topup_orders WHERE account_id = ? AND request_id = ?",
            (aid, request_id),
        )
        if row is None:
            return None
        return _checked_retry(ctx, tx, str(row["order_id"]), amount_fen, channel, request_id)


def _checked_retry(
    ctx: Context, tx: Tx, order_id: str, amount_fen: int, channel: str, request_id: str
) -> dict[str, Any]:
    """The order a retry names, when it asks for the same; refused when the key was used for
    another order (never answered as if that other one were made)."""
    out = _order_out(ctx, tx, order_id)
    if (out["amount_fen"], out["channel"]) != (amount_fen, channel):
        raise Conflict(
            f"request_id {request_id!r} was used for another top-up order", "request_id_reused"
        )
    return out


def _order_out(ctx: Context, tx: Tx, order_id: str) -> dict[str, Any]:
    o = tx.one(
        "SELECT o.*, a.number FROM topup_orders o JOIN accounts a ON a.id = o.account_id "
        "WHERE o.order_id = ?",
        (order_id,),
    )
    assert o is not None
    status = str(o["status"])
    if status == "open" and o["expires_ms"] < ctx.now_ms():
        status = "expired"
    wallet, trans = ledger.balances(tx, int(o["account_id"]))
    out: dict[str, Any] = {
        "order_id": o["order_id"],
        "status": status,
        "amount_fen": int(o["amount"]),
        "channel": o["channel"],
        "currency": o["currency"],
        "created_ms": int(o["created_ms"]),
        "expires_ms": int(o["expires_ms"]),
        "txn_id": o["txn_id"],
        "paid_ms": o["paid_ms"],
        "credited_ms": o["credited_ms"],
        "problem": o["problem"] or None,
        "balance_fen": wallet,
        "transition_fen": trans,
        "pay": None,
    }
    gate = tx.one("SELECT url, notify_url FROM paygates WHERE channel = ?", (o["channel"],))
    if status == "open" and gate is not None:
        out["pay"] = {
            "provider_url": gate["url"],
            "order": {
                "order_id": o["order_id"],
                "channel": o["channel"],
                "amount_fen": int(o["amount"]),
                "currency": o["currency"],
                "notify_url": gate["notify_url"],
                "attach": o["number"],
                "expires_ms": int(o["expires_ms"]),
            },
        }
    return out


def get_order(ctx: Context, acct: dict[str, Any], order_id: str) -> dict[str, Any]:
    """One of the holder's own orders (another holder's is 404, as if it did not exist)."""
    with ctx.db.read() as tx:
        row = tx.one("SELECT account_id FROM topup_orders WHERE order_id = ?", (order_id,))
        if row is None or int(row["account_id"]) != int(acct["id"]):
            raise NotFound(f"no top-up order {order_id!r}", "no_order")
        return _order_out(ctx, tx, order_id)


# -- notifications --------------------------------------------------------------------------------
class _Refusal(Exception):
    """A verified notification the server refuses: the answer, and the alarm it raises."""

    def __init__(self, error: ServiceError, alarm: str, detail: str) -> None:
        super().__init__(detail)
        self.error, self.alarm, self.detail = error, alarm, detail


def _alarm(tx: Tx, ctx: Context, kind: str, detail: str) -> None:
    """Raise an alarm once: a provider that delivers a refused notification again does not
    raise it again."""
    log.warning("alarm %s: %s", kind, detail)
    if tx.one("SELECT 1 FROM alarms WHERE kind = ? AND detail = ?", (kind, detail)) is None:
        tx.execute(
            "INSERT INTO alarms (ts_ms, terminal_id, kind, detail) VALUES (?, NULL, ?, ?)",
            (ctx.now_ms(), kind, detail),
        )


def _alarm_alone(ctx: Context, kind: str, detail: str, limit_key: str | None = None) -> None:
    if limit_key is not None:
        try:
            ratelimit.hit(ctx, limit_key, FORGED_ALARMS_PER_HOUR, 3600, "alarms")
        except TooManyRequests:
            log.warning("alarm %s (not written: too many this hour): %s", kind, detail)
            return
    with ctx.db.tx() as tx:
        _alarm(tx, ctx, kind, detail)


def notify(ctx: Context, channel: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """A payment notification delivered by the provider of ``channel``: verify, then credit
    the order once.  The answer ``{"code": "SUCCESS"}`` acknowledges it (a duplicate of a
    notification already credited is acknowledged too); an error answer makes the provider
    deliver it again later."""
    gate = ctx.db.one("SELECT * FROM paygates WHERE channel = ?", (channel,))
    if gate is None:
        _alarm_alone(
            ctx,
            "payment_unregistered",
            f"a payment notification for {channel}, which has no registered payment provider: "
            "refused, nothing credited",
            f"alarm:unregistered:{channel}",
        )
        raise Forbidden(f"no payment provider is registered for {channel}", "no_paygate")
    now = ctx.now_ms()
    try:
        paygate.verify(VerifyKey.from_b64(gate["public_key"]), body, headers, now)
    except SignatureError as exc:
        _alarm_alone(
            ctx,
            "payment_forged",
            f"a payment notification for {channel} refused: {exc}; nothing credited "
            f"({_claims(body)})",
            f"alarm:forged:{channel}",
        )
        raise Unauthorized(f"payment notification refused: {exc}", "bad_signature") from exc
    try:
        n = paygate.decode(body, Notification)
    except ProtocolError as exc:
        _alarm_alone(
            ctx,
            "payment_malformed",
            f"a signed payment notification for {channel} that cannot be read: {exc}",
        )
        raise Invalid(f"payment notification refused: {exc}", "bad_notification") from exc
    assert isinstance(n, Notification)
    refusal: _Refusal | None = None
    with ctx.db.tx() as tx:
        try:
            outcome = _credit(ctx, tx, channel, n)
        except _Refusal as r:
            refusal, outcome = r, f"refused: {r.alarm}"
            _alarm(tx, ctx, r.alarm, r.detail)
            tx.execute(
                "UPDATE topup_orders SET problem = ? WHERE order_id = ? AND status != 'credited'",
                (r.error.message[:200], n.order_id),
            )
        tx.execute(
            "INSERT INTO paygate_notices (channel, order_id, txn_id, amount, currency, paid_ms, "
            "received_ms, outcome, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                channel,
                n.order_id,
                n.txn_id,
                n.amount_fen,
                n.currency[:16],
                n.paid_ms,
                now,
                outcome,
                body.decode("utf-8", "replace")[:4000],
            ),
        )
    if refusal is not None:
        raise refusal.error
    if outcome == "credited":
        ctx.notifier.notify()
    return {
        "code": "SUCCESS",
        "message": "credited" if outcome == "credited" else "already credited",
        "order_id": n.order_id,
        "credited": outcome == "credited",
    }


def _claims(body: bytes) -> str:
    """What a notification that failed its signature claims (order and transaction ids), for
    the alarm: nothing of it is trusted."""
    got = re.findall(rb'"(order_id|txn_id)":"([A-Za-z0-9_-]{1,64})"', body[:4000])
    return ", ".join(f"{k.decode()} {v.decode()}" for k, v in got[:2]) or "no ids"


def _credit(ctx: Context, tx: Tx, channel: str, n: Notification) -> str:
    """Inside the transaction: credit the order of a verified notification, or raise
    :class:`_Refusal`.  Returns ``credited`` or ``duplicate``."""
    where = f"{channel} transaction {n.txn_id} for order {n.order_id}"
    prev = tx.one(
        "SELECT o.order_id, o.amount, o.currency, a.number FROM topup_orders o "
        "JOIN accounts a ON a.id = o.account_id WHERE o.channel = ? AND o.txn_id = ?",
        (channel, n.txn_id),
    )
    if prev is not None:
        same = (prev["order_id"], int(prev["amount"]), prev["currency"], prev["number"])
        if same == (n.order_id, n.amount_fen, n.currency, n.attach):
            return "duplicate"  # a redelivery: acknowledged, never credited twice
        raise _Refusal(
            Conflict("this transaction was notified before with other content", "payment_conflict"),
            "payment_conflict",
            f"{where}: the transaction was credited before with other content "
            f"(order {prev['order_id']}, {prev['amount']} fen); refused",
        )
    o = tx.one(
        "SELECT o.*, a.number, a.status AS account_status FROM topup_orders o "
        "JOIN accounts a ON a.id = o.account_id WHERE o.order_id = ?",
        (n.order_id,),
    )
    if o is None:
        raise _Refusal(
            NotFound("no such top-up order", "no_order"),
            "payment_unknown_order",
            f"{where}: no such order; refused, nothing credited",
        )
    mismatch = [
        f"{what} {got!r} (the order's: {want!r})"
        for what, got, want in (
            ("channel", n.channel, channel),
            ("channel", channel, o["channel"]),
            ("currency", n.currency, CURRENCY),
            ("currency", n.currency, o["currency"]),
            ("amount", n.amount_fen, int(o["amount"])),
            ("account", n.attach, o["number"]),
        )
        if got != want
    ]
    if n.paid_ms < int(o["created_ms"]) - paygate.MAX_SKEW_MS:
        mismatch.append("paid before the order was made")
    if mismatch:
        raise _Refusal(
            Conflict(f"the payment does not match its order: {mismatch[0]}", "payment_mismatch"),
            "payment_mismatch",
            f"{where}: {'; '.join(mismatch)}; refused, nothing credited",
        )
    if o["status"] == "credited":
        raise _Refusal(
            Conflict(
                f"the order was paid and credited before (transaction {o['txn_id']})",
                "order_paid",
            ),
            "payment_twice",
            f"{where}: the order was credited before by transaction {o['txn_id']}; this "
            "second payment is refused and must be refunded by the provider",
        )
    if n.paid_ms > int(o["expires_ms"]):
        raise _Refusal(
            Conflict("the order had expired when it was paid", "order_expired"),
            "payment_late",
            f"{where}: paid at {n.paid_ms}, after the order expired at {o['expires_ms']}; "
            "refused, nothing credited",
        )
    aid = int(o["account_id"])
    if o["account_status"] == AccountStatus.CANCELLED:
        raise _Refusal(
            Conflict("the account is cancelled (R14)", "bad_status"),
            "payment_cancelled_account",
            f"{where}: the account is cancelled (R14); refused, to be refunded by the provider",
        )
    target = ledger.transition(aid) if rules.lands_in_transition(channel) else ledger.wallet(aid)
    tid = f"topup:{channel}:{n.txn_id}"
    now = ctx.now_ms()
    ledger.ensure(tx, ledger.channel(channel), "channel")
    ledger.transfer(
        tx,
        ledger.Transfer(
            id=tid,
            ts_ms=now,
            debit=ledger.channel(channel),
            credit=target,
            amount=n.amount_fen,
            kind="topup",
            account_id=aid,
            memo=f"{channel} top-up, order {n.order_id}, paid as {n.txn_id}",
        ),
    )
    tx.execute(
        "UPDATE topup_orders SET status = 'credited', txn_id = ?, paid_ms = ?, credited_ms = ?, "
        "transfer_id = ?, problem = '' WHERE order_id = ?",
        (n.txn_id, n.paid_ms, now, tid, n.order_id),
    )
    tx.execute("UPDATE accounts SET version = ? WHERE id = ?", (next_version(tx), aid))
    return "credited"
