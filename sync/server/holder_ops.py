"""What a signed-in card holder does in the app, on WeChat or on the website, and the
card-less kiosk operations: query password (R4), loss and unlock (R10, rate limited).  Top-up
orders (R7) are in :mod:`sync.server.topups`, bills and flow in :mod:`sync.server.queries`,
electricity (R15) in :mod:`sync.server.electricity`, found cards (R17) in
:mod:`sync.server.found_cards`.

Every function here takes the account from the caller's session (or from the number + query
password it was given): no holder operation names another account.
"""

from __future__ import annotations

from typing import Any

from sync import rules
from sync.errors import RuleError
from sync.passwords import hash_password
from sync.server import accounts, holders, ratelimit
from sync.server.context import Context
from sync.server.errors import Conflict, Invalid

#: R10: loss/unlock through a signed-in session, per account and window.
SESSION_STATUS_LIMIT = 10
HOLDER_ACTIONS = ("report-loss", "unlock")


def me(ctx: Context, acct: dict[str, Any]) -> dict[str, Any]:
    """The holder's account: balance, transition balance (R7), limit, status, validity (R13;
    the phone's virtual card is valid as long as the account)."""
    out = accounts.show_account(ctx, acct["number"], history=False)
    out["virtual_card_expires"] = out["expires"]
    return out


def change_query_password(
    ctx: Context,
    acct: dict[str, Any],
    old: str,
    new: str,
    actor: str = "app",
    client: str | None = None,
) -> dict[str, Any]:
    """R4: change the query password, given the current one (a wrong one counts as a wrong
    try, :mod:`sync.server.holders`)."""
    try:
        rules.check_password_format(new)
    except RuleError as exc:
        raise Invalid(str(exc), "bad_password") from exc
    checked = holders.verify_query_password(ctx, acct, old, client)
    if new == old:
        raise Conflict("the new query password is the current one", "same_password")
    h = hash_password(new, log2_n=ctx.config.password_log2_n)
    with ctx.db.tx() as tx:
        holders.still_current(tx, acct["id"], checked)
        tx.execute(
            "UPDATE accounts SET query_pw = ?, query_tries = 0 WHERE id = ?", (h, acct["id"])
        )
        accounts.event(tx, ctx, acct["id"], "query_password", "query password changed (R4)", actor)
    return {"changed": True}


def _status(ctx: Context, acct: dict[str, Any], action: str, actor: str) -> dict[str, Any]:
    if action not in HOLDER_ACTIONS:
        raise Invalid(f"a card holder can only {' or '.join(HOLDER_ACTIONS)}", "bad_action")
    out = accounts.change_status(ctx, acct["number"], action, actor=actor)
    return {"number": out["number"], "status": out["status"]}


def cardless_status(
    ctx: Context, number: str, password: str, action: str, client: str, via: str = "cardless"
) -> dict[str, Any]:
    """R10: loss or unlock with number (card number for temporary cards) + query password,
    no card and no session; limited per number and per client address."""
    ratelimit.hit(
        ctx,
        f"r10:num:{number[:32]}",
        rules.CARDLESS_PER_NUMBER,
        rules.CARDLESS_WINDOW_S,
        "loss/unlock requests for this number",
    )
    ratelimit.hit(
        ctx,
        f"r10:client:{client[:64]}",
        rules.CARDLESS_PER_CLIENT,
        rules.CARDLESS_WINDOW_S,
        "loss/unlock requests from this address",
    )
    acct = holders.check_query_password(ctx, number, password, client)
    return _status(ctx, acct, action, via)


def session_status(ctx: Context, acct: dict[str, Any], action: str) -> dict[str, Any]:
    """R10 from the app: the session already proved number + query password."""
    ratelimit.hit(
        ctx,
        f"r10:acct:{acct['id']}",
        SESSION_STATUS_LIMIT,
        rules.CARDLESS_WINDOW_S,
        "loss/unlock requests for this account",
    )
    return _status(ctx, acct, action, "app")
