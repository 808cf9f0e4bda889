"""Card-present operations of a self-service kiosk (R20), each with the card's proof
(:mod:`sync.server.cardproof`) inside the kiosk's signed request:

- read the card's account: balance, transition balance, limit, status (R20, R9 balance);
- change the query password (R4), given the old one;
- change the consumption password (R5) and the daily limit (R6), given the query password:
  the server records the change and answers what the kiosk writes onto the card;
- card correction (R20): the card's basic data and validity as the server has them;
- register a found card (R17) by putting it on the reader.

Reissue (R11) is in :mod:`sync.server.reissue`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync import rules
from sync.db import Tx
from sync.errors import RuleError
from sync.money import MAX_AMOUNT_FEN, format_fen
from sync.passwords import hash_password, verify_password
from sync.rules import AccountStatus
from sync.server import accounts, cardproof, found_cards, holder_ops, holders, ledger, queries
from sync.server.accounts import event, set_card_password
from sync.server.context import Context, next_version
from sync.server.errors import Conflict, Forbidden, Invalid


def _usable_card(ctx: Context, proof: dict[str, Any]) -> dict[str, Any]:
    """The account of the card on the kiosk's reader (its proof checked), if not cancelled."""
    row = cardproof.verify(ctx, proof)
    if row["status"] == AccountStatus.CANCELLED:
        raise Conflict("the account is cancelled (R14)", "bad_status")
    return row


#: the transaction flow lines a kiosk shows with the balance (R9, R20)
RECENT = 5


def read(ctx: Context, terminal: dict[str, Any], proof: dict[str, Any]) -> dict[str, Any]:
    row = cardproof.verify(ctx, proof)
    bal, trans = ledger.balances(ctx.db, row["id"])
    recent = queries.page(ctx, row["id"], "flow", limit=RECENT)["items"]
    return {
        "recent": recent,
        "card_no": row["card_no"],
        "number": row["number"],
        "name": row["name"],
        "type": row["type"],
        "status": row["status"],
        "balance_fen": bal,
        "transition_fen": trans,
        "limit_fen": row["limit_fen"],
        "expires": row["expires"],
    }


def change_query_password(
    ctx: Context, terminal: dict[str, Any], proof: dict[str, Any], old: str, new: str
) -> dict[str, Any]:
    row = _usable_card(ctx, proof)
    return holder_ops.change_query_password(
        ctx, row, old, new, actor=terminal["id"], client=f"kiosk:{terminal['id']}"
    )


def _confirm(
    ctx: Context,
    terminal: dict[str, Any],
    row: dict[str, Any],
    query_password: str | None,
    consume_password: str | None,
) -> Callable[[Tx], None]:
    """The holder confirms a card-present change with the query password (R4, with its
    lockout) or with the current consumption password (R5: the try is counted before the slow
    hash, atomically; a locked password is refused).  Returns the check the change runs in its
    write transaction: the password checked is still the current one (and a correct
    consumption password clears the count)."""
    if (query_password is None) == (consume_password is None):
        raise Invalid("give query_password or consume_password (one of them)", "bad_password")
    if query_password is not None:
        checked = holders.verify_query_password(ctx, row, query_password, f"kiosk:{terminal['id']}")
        return lambda tx: holders.still_current(tx, row["id"], checked)
    assert consume_password is not None
    max_tries = int(ctx.policy()["pin_max_tries"])
    with ctx.db.tx() as tx:
        now = tx.one("SELECT pin_tries, consume_pw FROM accounts WHERE id = ?", (row["id"],))
        assert now is not None
        tries = int(now["pin_tries"])
        if tries < max_tries:
            tx.execute(
                "UPDATE accounts SET pin_tries = ?, version = ? WHERE id = ?",
                (tries + 1, next_version(tx), row["id"]),
            )
    if tries >= max_tries:
        raise Conflict("consumption password locked (R5): see the service desk", "pin_locked")
    stored = str(now["consume_pw"])
    if not verify_password(consume_password, stored):
        with ctx.db.tx() as tx:
            event(
                tx,
                ctx,
                row["id"],
                "pin_fail",
                f"wrong consumption password at kiosk {terminal['id']}",
                terminal["id"],
            )
        ctx.notifier.notify()
        left = max(max_tries - tries - 1, 0)
        raise Forbidden(f"wrong consumption password (R5), {left} tries left", "wrong_pin")

    def still_current(tx: Tx) -> None:
        if tx.scalar("SELECT consume_pw FROM accounts WHERE id = ?", (row["id"],)) != stored:
            raise Conflict(
                "the consumption password changed meanwhile: try again with the current one",
                "password_changed",
            )
        tx.execute("UPDATE accounts SET pin_tries = 0 WHERE id = ?", (row["id"],))

    return still_current


def change_consume_password(
    ctx: Context,
    terminal: dict[str, Any],
    proof: dict[str, Any],
    query_password: str | None,
    new: str,
    consume_password: str | None = None,
) -> dict[str, Any]:
    """R5: the consumption password is written on the card; it changes only with the card."""
    row = _usable_card(ctx, proof)
    try:
        rules.check_password_format(new)
    except RuleError as exc:
        raise Invalid(str(exc), "bad_password") from exc
    still_current = _confirm(ctx, terminal, row, query_password, consume_password)
    verifier = hash_password(new, log2_n=ctx.config.password_log2_n)
    with ctx.db.tx() as tx:
        still_current(tx)
        # the wrong tries start again in a new epoch, as the desk's reset does (R5): a count
        # written after it is never one the card showed before (sync.server.cardrisk)
        tx.execute(
            "UPDATE accounts SET consume_pw = ?, pin_tries = 0, pin_epoch = pin_epoch + 1, "
            "version = ? WHERE id = ?",
            (verifier, next_version(tx), row["id"]),
        )
        epoch = int(tx.scalar("SELECT pin_epoch FROM accounts WHERE id = ?", (row["id"],)))
        # the card's own verifier (docs/card-format.md) lives in its signed identity
        identity = set_card_password(ctx, tx, row["id"], new)
        event(
            tx,
            ctx,
            row["id"],
            "consume_password",
            f"consumption password changed with card {row['card_no']} (R5)",
            terminal["id"],
        )
    ctx.notifier.notify()
    return {
        "card_no": row["card_no"],
        "changed": "consume_password",
        "write": {
            "pin_verifier": verifier,
            "pin_tries": 0,
            "pin_epoch": epoch & 0xFF,
            "identity": identity,
        },
    }


def change_limit(
    ctx: Context,
    terminal: dict[str, Any],
    proof: dict[str, Any],
    query_password: str | None,
    limit_fen: int,
    consume_password: str | None = None,
) -> dict[str, Any]:
    """R6: the daily limit changes only with the card at a kiosk (or by desk staff)."""
    row = _usable_card(ctx, proof)
    if isinstance(limit_fen, bool) or not 0 < limit_fen <= MAX_AMOUNT_FEN:
        raise Invalid(f"limit_fen: 1 to {MAX_AMOUNT_FEN}", "bad_amount")
    still_current = _confirm(ctx, terminal, row, query_password, consume_password)
    with ctx.db.tx() as tx:
        still_current(tx)
        before = int(tx.scalar("SELECT limit_fen FROM accounts WHERE id = ?", (row["id"],)))
        tx.execute(
            "UPDATE accounts SET limit_fen = ?, version = ? WHERE id = ?",
            (limit_fen, next_version(tx), row["id"]),
        )
        event(
            tx,
            ctx,
            row["id"],
            "limit",
            f"daily limit {format_fen(before)} -> {format_fen(limit_fen)} (R6)",
            terminal["id"],
        )
    ctx.notifier.notify()
    return {"card_no": row["card_no"], "changed": "limit", "write": {"limit_fen": limit_fen}}


def pull_transition(
    ctx: Context, terminal: dict[str, Any], proof: dict[str, Any]
) -> dict[str, Any]:
    """R7 at the kiosk: the transition balance (过渡余额) moves onto the account now, as it
    would at the next card transaction.  Safe to repeat: a second pull moves nothing."""
    row = _usable_card(ctx, proof)
    aid = int(row["id"])
    with ctx.db.tx() as tx:
        _wallet, trans = ledger.balances(tx, aid)
        if trans > 0:
            ledger.transfer(
                tx,
                ledger.Transfer(
                    id=f"trans:kiosk:{terminal['id']}:{ctx.rng.getrandbits(64):016x}",
                    ts_ms=ctx.now_ms(),
                    debit=ledger.transition(aid),
                    credit=ledger.wallet(aid),
                    amount=trans,
                    kind="transition",
                    account_id=aid,
                    memo=f"transition balance moved in at kiosk {terminal['id']} (R7)",
                ),
            )
            tx.execute("UPDATE accounts SET version = ? WHERE id = ?", (next_version(tx), aid))
        wallet, left = ledger.balances(tx, aid)
    if trans > 0:
        ctx.notifier.notify()
    return {
        "card_no": row["card_no"],
        "moved_fen": max(trans, 0),
        "balance_fen": wallet,
        "transition_fen": left,
    }


def correction(ctx: Context, terminal: dict[str, Any], proof: dict[str, Any]) -> dict[str, Any]:
    """R20 card correction (卡片校正): what the server has for the card, to rewrite onto it."""
    row = _usable_card(ctx, proof)
    with ctx.db.tx() as tx:
        data = accounts.card_data(ctx, tx, row["id"])
        event(
            tx,
            ctx,
            row["id"],
            "correction",
            f"card {row['card_no']} corrected (R20)",
            terminal["id"],
        )
    return {"card_no": row["card_no"], "changed": "correction", "write": data}


def register_found(
    ctx: Context, terminal: dict[str, Any], proof: dict[str, Any], place: str
) -> dict[str, Any]:
    """R17 at a kiosk: the finder puts the found card on the reader."""
    row = cardproof.verify(ctx, proof)
    return found_cards.register(ctx, row["card_no"], place, "", f"kiosk {terminal['id']}")
