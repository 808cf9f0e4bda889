"""Card holders signing in (R16) and their sessions: the phone app, the WeChat account, the
website and card-less kiosk operations authenticate this way.

Students and staff sign in with their staff/student number; everyone else with their
(temporary) card number; both with the query password (R4).  Sessions are random bearer tokens
stored only as SHA-256 digests.

Every check of a query password (sign-in, the R6 confirmation, reverse-scan pay, password
changes in the app and at a kiosk, card-less loss and unlock) goes through
:func:`check_query_password` / :func:`verify_query_password`, which limit guessing
(docs/security.md, "Passwords and identities"):

- **a try is counted before the slow hash is checked**, in one write transaction with the lock
  check (writers take turns), and given back when the password was right, as a card counts a
  PIN try before checking it: requests sent at once are each counted, and a crash between the
  count and the check leaves the try counted;
- after ``QUERY_MAX_TRIES`` wrong tries the account's query password locks for
  ``QUERY_LOCK_S`` seconds (and, when the operator switched the rule on, the account freezes,
  R12); wrong tries are forgotten ``QUERY_FORGET_S`` after the last one;
- each client (an address, or a kiosk) may send ``CLIENT_MAX_FAILS`` wrong passwords in
  ``CLIENT_WINDOW_S``, over all accounts (guessing one password for many numbers);
- **an unknown number is answered as a known one**: the same slow hash work (against a dummy
  hash of the server's cost), the same counted tries and the same lock (kept in
  ``query_guard``), so neither the time nor the answers tell which numbers exist.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from sync.db import Tx
from sync.passwords import hash_password, verify_password
from sync.rules import AccountStatus, CardType
from sync.server import codes, ratelimit
from sync.server.accounts import set_status
from sync.server.context import Context
from sync.server.errors import Conflict, Forbidden, Invalid, Unauthorized

SESSION_TTL_MS = 30 * 24 * 3600 * 1000
QUERY_MAX_TRIES = 5
QUERY_LOCK_S = 15 * 60
#: wrong tries are forgotten this long after the last one
QUERY_FORGET_S = 24 * 3600
#: wrong query passwords one client (address or kiosk) may send per window, over all accounts
CLIENT_MAX_FAILS = 100
CLIENT_WINDOW_S = 15 * 60

_dummy_lock = threading.Lock()
_dummy_hashes: dict[int, str] = {}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _dummy_hash(log2_n: int) -> str:
    """A hash of a random secret at the server's cost: what an unknown number's password is
    checked against, so that it takes as long as a known one's."""
    with _dummy_lock:
        if log2_n not in _dummy_hashes:
            _dummy_hashes[log2_n] = hash_password(secrets.token_hex(16), log2_n=log2_n)
        return _dummy_hashes[log2_n]


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


def check_query_password(
    ctx: Context, number: str, password: str, client: str | None = None
) -> dict[str, Any]:
    """The account, if ``password`` is its query password (R4); counts wrong tries and locks.
    An unknown number gets the same answers, in the same time, as a wrong password."""
    if not number or len(number) > 32 or not password or len(password) > 64:
        raise Invalid("number and password are required", "bad_credentials")
    acct = find_holder(ctx, number)
    if acct is None:
        _check(ctx, None, number, password, client)  # raises, as a wrong password does
        raise AssertionError("an unknown number never signs in")
    _check(ctx, acct, number, password, client)
    return acct


def verify_query_password(
    ctx: Context, acct: dict[str, Any], password: str, client: str | None = None
) -> str:
    """R4: check the query password of a known account; wrong tries count toward a lockout
    (and, when the operator switched the rule on, an automatic freeze, R12).  ``client``: who
    sends it (an address, ``kiosk:<id>``), for the per-client limit.

    Returns the stored hash the password matched: a change it authorizes is written only
    while that is still the query password (:func:`still_current`), so a password changed
    meanwhile elsewhere is never overwritten on the strength of the old one."""
    return _check(ctx, acct, str(acct["number"]), password, client)


def still_current(tx: Tx, account_id: int, stored: str) -> None:
    """In the write transaction of a change a query password authorized: 409 when the query
    password is no longer the one checked (it changed after the check, before this write)."""
    now = tx.scalar("SELECT query_pw FROM accounts WHERE id = ?", (account_id,))
    if now != stored:
        raise Conflict(
            "the query password changed meanwhile: try again with the current one",
            "password_changed",
        )


@dataclass(frozen=True)
class _Claim:
    """One try, counted before the check: the hash to check against, the lock this try set
    (0: none) and the client's window (to give the hit back)."""

    stored: str
    locked: int
    client_key: str | None
    client_window: int


def _locked(until: int, now: int) -> Forbidden:
    left = (until - now) // 1000 + 1
    return Forbidden(f"too many wrong passwords: sign-in locked for {left} s", "locked")


def _claim(ctx: Context, acct_id: int | None, number: str, client: str | None) -> _Claim:
    """Count one try of ``acct_id`` (None: the unknown ``number``) and of ``client``, in one
    write transaction: :class:`Forbidden` while locked, TooManyRequests past the client's
    limit.  The try that reaches ``QUERY_MAX_TRIES`` sets the lock."""
    now = ctx.now_ms()
    forget = now - QUERY_FORGET_S * 1000
    with ctx.db.tx() as tx:
        tx.execute(
            "DELETE FROM query_guard WHERE tried_ms < ? AND locked_until_ms < ?", (forget, now)
        )
        if acct_id is not None:
            row = tx.one(
                "SELECT query_pw, query_tries, query_locked_until_ms, query_tried_ms "
                "FROM accounts WHERE id = ?",
                (acct_id,),
            )
            if row is None:
                raise Unauthorized("wrong number or query password", "bad_credentials")
            stored = str(row["query_pw"])
            tries, until, tried = (
                int(row["query_tries"]),
                int(row["query_locked_until_ms"]),
                int(row["query_tried_ms"]),
            )
        else:
            row = tx.one(
                "SELECT tries, locked_until_ms, tried_ms FROM query_guard WHERE subject = ?",
                (number,),
            )
            stored = _dummy_hash(ctx.config.password_log2_n)
            tries, until, tried = (
                (0, 0, 0)
                if row is None
                else (int(row["tries"]), int(row["locked_until_ms"]), int(row["tried_ms"]))
            )
        if until > now:
            raise _locked(until, now)
        client_key, window = None, 0
        if client is not None:
            client_key = f"qpw:client:{client[:64]}"
            window = ratelimit.hit_tx(
                tx, now, client_key, CLIENT_MAX_FAILS, CLIENT_WINDOW_S, "wrong passwords"
            )
        tries = (0 if tried < forget else tries) + 1
        locked = now + QUERY_LOCK_S * 1000 if tries >= QUERY_MAX_TRIES else 0
        left = 0 if locked else tries  # a lock starts the count again
        if acct_id is not None:
            tx.execute(
                "UPDATE accounts SET query_tries = ?, query_locked_until_ms = ?, "
                "query_tried_ms = ? WHERE id = ?",
                (left, locked, now, acct_id),
            )
        else:
            tx.execute(
                "INSERT INTO query_guard (subject, tries, locked_until_ms, tried_ms) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (subject) DO UPDATE SET "
                "tries = excluded.tries, locked_until_ms = excluded.locked_until_ms, "
                "tried_ms = excluded.tried_ms",
                (number, left, locked, now),
            )
    return _Claim(stored, locked, client_key, window)


def _check(
    ctx: Context, acct: dict[str, Any] | None, number: str, password: str, client: str | None
) -> str:
    """Count the try, check the hash outside any transaction, then give the try back (right
    password) or act on the lock it set (wrong password)."""
    claim = _claim(ctx, None if acct is None else int(acct["id"]), number, client)
    right = verify_password(password, claim.stored) and acct is not None
    if right:
        assert acct is not None
        with ctx.db.tx() as tx:
            # a right password clears the count, and the lock only if this try set it
            tx.execute(
                "UPDATE accounts SET query_tries = 0, query_locked_until_ms = CASE WHEN "
                "query_locked_until_ms = ? THEN 0 ELSE query_locked_until_ms END WHERE id = ?",
                (claim.locked, acct["id"]),
            )
            if claim.client_key is not None:
                ratelimit.refund(tx, claim.client_key, claim.client_window)
        return claim.stored
    if claim.locked and acct is not None and ctx.policy().get("auto_freeze_query_lockout"):
        with ctx.db.tx() as tx:
            row = tx.one(
                "SELECT status, query_locked_until_ms FROM accounts WHERE id = ?", (acct["id"],)
            )
            if (
                row is not None
                and row["query_locked_until_ms"] == claim.locked
                and row["status"] in (AccountStatus.NORMAL, AccountStatus.LOST)
            ):
                set_status(
                    ctx,
                    tx,
                    acct["id"],
                    AccountStatus.FROZEN,
                    "frozen after repeated wrong query passwords (R12)",
                    "system",
                )
        ctx.notifier.notify()
    raise Unauthorized("wrong number or query password", "bad_credentials")


def login(
    ctx: Context,
    number: str,
    password: str,
    public_key: str | None = None,
    client: str | None = None,
) -> dict[str, Any]:
    """R16 sign-in.  With ``public_key`` (the phone's own Ed25519 key) the server also
    certifies that key for the account until the session ends (wallet enrollment, R18)."""
    return open_session(ctx, check_query_password(ctx, number, password, client), public_key)


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
    client: str | None = None,
) -> dict[str, Any]:
    """R6/R4: check the query password (counted against the lockout, and per ``client``);
    returns a grant for one over-limit payment.

    With ``serial`` and ``counter`` the grant is bound to that payment code of the phone: the
    code's own "confirmed" flag is only the phone's claim, and online authorization of the
    code over the limit spends this grant (:func:`use_code_grant`).  The grant itself covers a
    reverse-scan payment that presents it (:func:`use_grant`)."""
    verify_query_password(ctx, holder, password, client)
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
