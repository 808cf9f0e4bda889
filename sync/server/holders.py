"""Card holders signing in (R16) and their sessions: the phone app, the WeChat account, the
website and card-less kiosk operations authenticate this way.

Students and staff sign in with their staff/student number; everyone else with their
(temporary) card number; both with the query password (R4).  Wrong passwords are counted; after
``query_max_tries`` in a row the account's sign-in locks for ``query_lock_s`` seconds.
Sessions are random bearer tokens stored only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sync.passwords import verify_password
from sync.rules import AccountStatus, CardType
from sync.server import codes
from sync.server.accounts import set_status
from sync.server.context import Context
from sync.server.errors import Forbidden, Invalid, Unauthorized

SESSION_TTL_MS = 30 * 24 * 3600 * 1000
QUERY_MAX_TRIES = 5
QUERY_LOCK_S = 15 * 60


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find_holder(ctx: Context, number: str) -> dict[str, Any] | None:
    """R16: the account signed in to by ``number``: a staff/student (or any account) number,
    or the card number of a temporary or consumer card."""
    row = ctx.db.one("SELECT * FROM accounts WHERE number = ?", (number,))
    if row is None:
        row = ctx.db.one(
            "SELECT a.* FROM cards c JOIN accounts a ON a.id = c.account_id "
            "WHERE c.card_no = ? AND c.status = 'active' AND a.type IN (?, ?)",
            (number, CardType.TEMPORARY.value, CardType.CONSUMER.value),
        )
    return None if row is None else dict(row)


def check_query_password(ctx: Context, number: str, password: str) -> dict[str, Any]:
    """The account, if ``password`` is its query password (R4); counts wrong tries and locks."""
    if not number or len(number) > 32 or not password or len(password) > 64:
        raise Invalid("number and password are required", "bad_credentials")
    acct = find_holder(ctx, number)
    if acct is None:
        # same answer as a wrong password: do not reveal which numbers exist
        raise Unauthorized("wrong number or query password", "bad_credentials")
    verify_query_password(ctx, acct, password)
    return acct


def verify_query_password(ctx: Context, acct: dict[str, Any], password: str) -> None:
    """R4: check the query password of a known account; wrong tries count toward a lockout
    (and, when the operator switched the rule on, an automatic freeze, R12)."""
    now = ctx.now_ms()
    if acct["query_locked_until_ms"] > now:
        left = (acct["query_locked_until_ms"] - now) // 1000 + 1
        raise Forbidden(f"too many wrong passwords: sign-in locked for {left} s", "locked")
    if not verify_password(password, acct["query_pw"]):
        tries = acct["query_tries"] + 1
        locked = now + QUERY_LOCK_S * 1000 if tries >= QUERY_MAX_TRIES else 0
        with ctx.db.tx() as tx:
            tx.execute(
                "UPDATE accounts SET query_tries = ?, query_locked_until_ms = ? WHERE id = ?",
                (0 if locked else tries, locked, acct["id"]),
            )
            if (
                locked
                and ctx.policy().get("auto_freeze_query_lockout")
                and acct["status"] in (AccountStatus.NORMAL, AccountStatus.LOST)
            ):
                set_status(
                    ctx,
                    tx,
                    acct["id"],
                    AccountStatus.FROZEN,
                    "frozen after repeated wrong query passwords (R12)",
                    "system",
                )
        if locked:
            ctx.notifier.notify()
        raise Unauthorized("wrong number or query password", "bad_credentials")
    if acct["query_tries"]:
        with ctx.db.tx() as tx:
            tx.execute("UPDATE accounts SET query_tries = 0 WHERE id = ?", (acct["id"],))


def login(
    ctx: Context, number: str, password: str, public_key: str | None = None
) -> dict[str, Any]:
    """R16 sign-in.  With ``public_key`` (the phone's own Ed25519 key) the server also
    certifies that key for the account until the session ends (wallet enrollment, R18)."""
    return open_session(ctx, check_query_password(ctx, number, password), public_key)


def open_session(
    ctx: Context, acct: dict[str, Any], public_key: str | None = None
) -> dict[str, Any]:
    """A new session for an account whose holder has proved who they are (R16); with the
    phone's public key, its certificate for phone codes (docs/codes.md)."""
    if acct["status"] == AccountStatus.CANCELLED:
        raise Forbidden("the account is cancelled (R14)", "cancelled")
    token = secrets.token_urlsafe(32)
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        tx.execute(
            "INSERT INTO sessions (token_hash, account_id, created_ms, expires_ms) "
            "VALUES (?, ?, ?, ?)",
            (_digest(token), acct["id"], now, now + SESSION_TTL_MS),
        )
    out: dict[str, Any] = {
        "token": token,
        "expires_ms": now + SESSION_TTL_MS,
        "account": {
            "id": acct["id"],
            "number": acct["number"],
            "name": acct["name"],
            "type": acct["type"],
            "status": acct["status"],
        },
    }
    if public_key is not None:
        out["wallet"] = codes.certify(
            ctx, acct["id"], _digest(token), public_key, now + SESSION_TTL_MS
        )
    return out


def session_account(ctx: Context, token: str) -> dict[str, Any]:
    """The account behind a session token, or 401."""
    row = ctx.db.one(
        "SELECT a.*, s.expires_ms AS session_expires, s.revoked AS session_revoked, "
        "s.token_hash AS session FROM sessions s JOIN accounts a ON a.id = s.account_id "
        "WHERE s.token_hash = ?",
        (_digest(token),),
    )
    if row is None or row["session_revoked"] or row["session_expires"] < ctx.now_ms():
        raise Unauthorized("sign in first (session unknown or expired)", "bad_session")
    return dict(row)


def logout(ctx: Context, token: str) -> dict[str, Any]:
    with ctx.db.tx() as tx:
        tx.execute("UPDATE sessions SET revoked = 1 WHERE token_hash = ?", (_digest(token),))
    revoked = codes.revoke_session(ctx, _digest(token))  # the phone's certificate dies too
    return {"logged_out": True, "certificates_revoked": revoked}


# --- R6 confirmations ------------------------------------------------------------------------
def _grant_hash(grant: str) -> str:
    return hashlib.sha256(b"ykt-grant:" + grant.encode()).hexdigest()


def confirm(
    ctx: Context,
    holder: dict[str, Any],
    password: str,
    serial: int | None = None,
    counter: int | None = None,
) -> dict[str, Any]:
    """R6/R4: check the query password; returns a grant for one over-limit payment.

    With ``serial`` and ``counter`` the grant is bound to that payment code of the phone: the
    code's own "confirmed" flag is only the phone's claim, and online authorization of the
    code over the limit spends this grant (:func:`use_code_grant`).  The grant itself covers a
    reverse-scan payment that presents it (:func:`use_grant`)."""
    check_query_password(ctx, holder["number"], password)
    grant = secrets.token_urlsafe(24)
    now = ctx.now_ms()
    expires = now + int(ctx.policy()["confirm_ttl_s"]) * 1000
    with ctx.db.tx() as tx:
        # kept a while after they lapse: an offline sale of a confirmed code syncs later
        tx.execute("DELETE FROM confirmations WHERE expires_ms < ?", (now - GRANT_KEEP_MS,))
        tx.execute(
            "INSERT INTO confirmations (grant_hash, account_id, expires_ms, serial, counter) "
            "VALUES (?, ?, ?, ?, ?)",
            (_grant_hash(grant), holder["id"], expires, serial, counter),
        )
    return {"confirmed": True, "grant": grant, "expires_ms": expires}


#: how long a lapsed confirmation is kept (an offline sale of its code may sync later)
GRANT_KEEP_MS = 30 * 24 * 3600 * 1000


def use_grant(ctx: Context, tx: Any, account_id: int, grant: str) -> bool:
    """Spend a confirmation grant of this account (in the caller's transaction)."""
    n = tx.execute(
        "UPDATE confirmations SET used = 1 WHERE grant_hash = ? AND account_id = ? "
        "AND used = 0 AND expires_ms >= ?",
        (_grant_hash(grant), account_id, ctx.now_ms()),
    )
    return bool(n)


def code_grant(tx: Any, account_id: int, serial: int, counter: int, now_ms: int | None) -> bool:
    """Whether the server confirmed this payment code (R6): an unspent grant of the account
    bound to (serial, counter), still valid at ``now_ms`` (None: however old; a code decided
    offline was checked for time by the terminal)."""
    row = tx.one(
        "SELECT expires_ms FROM confirmations WHERE account_id = ? AND serial = ? "
        "AND counter = ? AND used = 0",
        (account_id, serial, counter),
    )
    return row is not None and (now_ms is None or int(row["expires_ms"]) >= now_ms)


def code_confirmed(tx: Any, account_id: int, serial: int, counter: int) -> bool:
    """Whether the holder confirmed this payment code with the query password (R6), spent or
    not (a grant bound to a code covers that code, and a code pays once); marks it spent."""
    if not tx.one(
        "SELECT 1 FROM confirmations WHERE account_id = ? AND serial = ? AND counter = ?",
        (account_id, serial, counter),
    ):
        return False
    use_code_grant(tx, account_id, serial, counter)
    return True


def use_code_grant(tx: Any, account_id: int, serial: int, counter: int) -> bool:
    """Spend the grant bound to this payment code (in the caller's transaction)."""
    n = tx.execute(
        "UPDATE confirmations SET used = 1 WHERE account_id = ? AND serial = ? AND counter = ? "
        "AND used = 0",
        (account_id, serial, counter),
    )
    return bool(n)
