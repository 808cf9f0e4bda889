"""R11 reissue (补办) as an idempotent *order*: at a self-service kiosk (student and staff cards,
identity by number + ID-card number or a phone authentication code) or at the desk (any card
type, identity checked by staff).

One order, one charge: the order id comes from the kiosk (or desk) and is the key of the fee
transfer, so a kiosk whose encoding failed retries with the same order id and is never charged
twice; a retry may name another blank card (UID) as long as the order is not done.  The new card
exists, and every earlier card of the account is replaced (refused everywhere, R11), the moment
the order is created.  A reported loss (R10) ends with the reissue.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any

from sync import codes, rules
from sync.db import Tx
from sync.errors import CodeError
from sync.money import format_fen
from sync.rules import AccountStatus
from sync.server import accounts, ledger, ratelimit, recovery
from sync.server import codes as server_codes
from sync.server.accounts import check_uid, event, issue_card_tx, set_status
from sync.server.context import Context, next_version
from sync.server.errors import Conflict, Forbidden, Invalid, NotFound

_ORDER = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def auth_code_account(ctx: Context, text: str, use: bool = True) -> int:
    """R11 "or a scan of the app's code": the account of a valid phone authentication code
    (R18, docs/codes.md).  ``use``: the code is used up (admitted once, as at a gate); the
    kiosk's quote only looks (the order that follows uses it)."""
    now = ctx.now_ms()
    try:
        verified = server_codes.verifier(ctx).verify(text, now, (codes.Kind.AUTH,))
    except CodeError as exc:
        raise Forbidden(
            f"the authentication code is not valid: {exc.message}", "bad_auth_code"
        ) from exc
    with ctx.db.tx() as tx:
        used = tx.one(
            "SELECT ts_ms FROM code_uses WHERE serial = ? AND counter = ?",
            (verified.code.serial, verified.code.counter),
        )
        if used is not None:
            raise Forbidden(
                "this code was already used: refresh the code on the phone", "bad_auth_code"
            )
        if use:
            tx.execute(
                "INSERT INTO code_uses (serial, counter, kind, ts_ms) VALUES (?, ?, 'auth', ?)",
                (verified.code.serial, verified.code.counter, now),
            )
    return int(verified.account_id)


#: R11 "or a scan of the app's code": ``verifier(ctx, code, use) -> account id``.
AUTH_CODE_VERIFIER: Callable[[Context, str, bool], int] | None = auth_code_account


def identify_at_kiosk(
    ctx: Context,
    *,
    number: str | None,
    id_card: str | None,
    auth_code: str | None,
    use_code: bool = True,
) -> dict[str, Any]:
    """R11: who asks for a reissue at a kiosk: number + ID-card number, or a phone code."""
    if auth_code:
        if AUTH_CODE_VERIFIER is None:
            raise Conflict(
                "phone authentication codes are not available on this server", "no_auth_codes"
            )
        aid = AUTH_CODE_VERIFIER(ctx, auth_code, use_code)
        row = ctx.db.one("SELECT * FROM accounts WHERE id = ?", (aid,))
        via = "auth_code"
    else:
        if not number or not id_card:
            raise Invalid("give number and id_card, or auth_code (R11)", "bad_identity")
        ratelimit.hit(ctx, f"r11:num:{number[:32]}", 5, rules.CARDLESS_WINDOW_S, "reissue attempts")
        row = ctx.db.one("SELECT * FROM accounts WHERE number = ?", (number,))
        wrong = Forbidden("number and ID-card number do not match (R11)", "identity_mismatch")
        if row is None:
            raise wrong
        given = rules.normalize_id_card(id_card)
        if not hmac.compare_digest(given.encode(), str(row["id_card"]).encode()):
            raise wrong
        via = "number+id_card"
    if row is None:
        raise NotFound("no such account", "no_account")
    acct = dict(row)
    if not rules.kiosk_may_reissue(acct["type"]):
        raise Conflict(
            f"{acct['type']} cards are reissued at the service desk, not at a kiosk (R11)",
            "desk_only",
        )
    if not rules.reissue_identity_ok(acct["type"], via):
        raise Forbidden("this identity does not allow a reissue (R11)", "identity_mismatch")
    acct["via"] = via
    return acct


def kiosk_order(ctx: Context, order_id: str, terminal_id: str) -> dict[str, Any] | None:
    """The account of an order this kiosk opened before (a retry, a restart after a crash):
    the holder was identified when the order was made, and is not asked again (an
    authentication code is used up by then)."""
    row = ctx.db.one(
        "SELECT o.via, a.* FROM reissue_orders o JOIN accounts a ON a.id = o.account_id "
        "WHERE o.order_id = ? AND o.actor = ?",
        (order_id, terminal_id),
    )
    return None if row is None else dict(row)


def quote(ctx: Context, acct: dict[str, Any]) -> dict[str, Any]:
    """What a reissue would cost the identified holder (R11), refusing what the order would
    refuse; nothing changes."""
    status = AccountStatus(acct["status"])
    if status is AccountStatus.CANCELLED:
        raise Conflict("the account is cancelled (R14)", "bad_status")
    if status in (AccountStatus.FROZEN, AccountStatus.EXPIRED):
        raise Conflict(f"the account is {status.value}: see the service desk", "bad_status")
    fee = int(ctx.policy()["reissue_fee_fen"])
    with ctx.db.read() as tx:
        wallet, _trans = ledger.balances(tx, acct["id"])
        spendable = ledger.spendable(tx, acct["id"])
    if spendable < fee:
        raise Conflict(
            f"the reissue fee {format_fen(fee)} is more than the balance "
            f"{format_fen(max(spendable, 0))}: top up first (R11)",
            "insufficient",
        )
    return {
        "number": acct["number"],
        "name": acct["name"],
        "type": acct["type"],
        "via": acct["via"],
        "fee_fen": fee,
        "balance_fen": wallet,
        "balance_after_fen": wallet - fee,
    }


def reissue(
    ctx: Context,
    account_id: int,
    *,
    order_id: str,
    uid: str | None,
    via: str,
    actor: str,
    charge_fee: bool = True,
    at_kiosk: bool = True,
) -> dict[str, Any]:
    if not _ORDER.match(order_id or ""):
        raise Invalid("order_id: 8-64 letters, digits, '_' or '-'", "bad_order")
    new_uid = check_uid(uid, ctx)
    fee = int(ctx.policy()["reissue_fee_fen"]) if charge_fee else 0
    with ctx.db.tx() as tx:
        order = tx.one("SELECT * FROM reissue_orders WHERE order_id = ?", (order_id,))
        if order is not None:
            if order["account_id"] != account_id:
                raise Conflict("this order id belongs to another reissue", "order_conflict")
            if not charge_fee and order["fee_fen"] > 0:  # not a retry of this order
                raise Conflict(
                    f"order {order_id} was a reissue with the fee (R11): a reissue without "
                    "it needs its own order id",
                    "request_id_reused",
                )
            card = tx.one("SELECT uid, status FROM cards WHERE card_no = ?", (order["card_no"],))
            assert card is not None
            if uid is not None and new_uid != card["uid"]:
                if order["status"] == "done":
                    raise Conflict("this reissue order is done: its card exists", "order_done")
                if card["status"] != "active":
                    raise Conflict("a newer card replaced this order's card", "order_stale")
                if tx.one("SELECT 1 FROM cards WHERE uid = ? AND status = 'active'", (new_uid,)):
                    raise Conflict(f"a card with UID {new_uid} is already in use", "duplicate_uid")
                tx.execute(
                    "UPDATE cards SET uid = ?, version = ? WHERE card_no = ?",
                    (new_uid, next_version(tx), order["card_no"]),
                )
                event(tx, ctx, account_id, "reissue_retry", f"order {order_id}: new blank", actor)
            return _answer(ctx, tx, order_id, account_id, order["status"], order["fee_fen"], False)
        a = tx.one("SELECT status FROM accounts WHERE id = ?", (account_id,))
        if a is None:
            raise NotFound("no such account", "no_account")
        status = AccountStatus(a["status"])
        if status is AccountStatus.CANCELLED:
            raise Conflict("the account is cancelled (R14)", "bad_status")
        if at_kiosk and status in (AccountStatus.FROZEN, AccountStatus.EXPIRED):
            raise Conflict(f"the account is {status.value}: see the service desk", "bad_status")
        if fee:
            recovery.refuse(tx, "reissue fee charged to a balance")
            spendable = ledger.spendable(tx, account_id)
            if spendable < fee:
                raise Conflict(
                    f"the reissue fee {format_fen(fee)} is more than the balance "
                    f"{format_fen(max(spendable, 0))}: top up first (R11)",
                    "insufficient",
                )
            ledger.ensure(tx, ledger.FEE, "fee")
            ledger.transfer(
                tx,
                ledger.Transfer(
                    id=f"fee:reissue:{order_id}",
                    ts_ms=ctx.now_ms(),
                    debit=ledger.wallet(account_id),
                    credit=ledger.FEE,
                    amount=fee,
                    kind="fee",
                    account_id=account_id,
                    memo=f"reissue fee (R11), order {order_id}",
                ),
            )
        card = issue_card_tx(ctx, tx, account_id, new_uid, actor)
        if status is AccountStatus.LOST:
            set_status(ctx, tx, account_id, AccountStatus.NORMAL, "loss ended by reissue", actor)
        tx.execute(
            "INSERT INTO reissue_orders (order_id, account_id, via, actor, card_no, fee_fen, "
            "status, created_ms) VALUES (?, ?, ?, ?, ?, ?, 'open', ?)",
            (order_id, account_id, via, actor, card["card_no"], fee, ctx.now_ms()),
        )
        event(
            tx,
            ctx,
            account_id,
            "reissue",
            f"reissued as card {card['card_no']} (order {order_id}, {via}) (R11)",
            actor,
        )
        tx.execute("UPDATE accounts SET version = ? WHERE id = ?", (next_version(tx), account_id))
        out = _answer(ctx, tx, order_id, account_id, "open", fee, True)
    ctx.notifier.notify()
    return out


def _answer(
    ctx: Context, tx: Tx, order_id: str, account_id: int, status: str, fee: int, created: bool
) -> dict[str, Any]:
    wallet, trans = ledger.balances(tx, account_id)
    order = tx.one("SELECT card_no FROM reissue_orders WHERE order_id = ?", (order_id,))
    data = accounts.card_data(ctx, tx, account_id)
    if order is not None and data["card_no"] != order["card_no"]:
        raise Conflict("a newer card replaced this order's card", "order_stale")
    return {
        "order_id": order_id,
        "status": status,
        "created": created,
        "fee_fen": fee,
        "balance_fen": wallet,
        "transition_fen": trans,
        "card": data,
    }


def finish(ctx: Context, order_id: str, account_id: int | None, actor: str) -> dict[str, Any]:
    """The kiosk (or desk) encoded the card: the order is done."""
    with ctx.db.tx() as tx:
        order = tx.one("SELECT * FROM reissue_orders WHERE order_id = ?", (order_id,))
        if order is None or (account_id is not None and order["account_id"] != account_id):
            raise NotFound(f"no reissue order {order_id!r}", "no_order")
        if order["status"] != "done":
            tx.execute(
                "UPDATE reissue_orders SET status = 'done', done_ms = ? WHERE order_id = ?",
                (ctx.now_ms(), order_id),
            )
            event(tx, ctx, order["account_id"], "reissue_done", f"order {order_id} encoded", actor)
        return _answer(ctx, tx, order_id, order["account_id"], "done", order["fee_fen"], False)
