"""Phone codes on the server (R18, docs/codes.md): the code-issuer key, wallet certificates,
and the server's run of the one verification path (:class:`sync.codes.CodeVerifier`).

- The code-issuer key (Ed25519) is made on first use and kept in the database (so every server
  process sharing it signs and checks with the same key), with copies in
  ``DATA/code-issuer.key`` (0600).  Its public half reaches terminals through the delta feed and
  anyone through ``GET /v1/codes/keys``.  The proof secret (database, and
  ``DATA/code-proof.secret``) derives each terminal's key for short reverse-scan proof codes.
- A wallet certificate binds a phone's public key to an account until the session ends.  It
  dies with the session (logout revokes it) and follows the account's state (R2: a blocked
  account blocks its codes wherever the account's status is checked).
- ``code_uses`` is the server's seen-set: every payment code authorized online or synced from
  a journal, every authentication code verified here, under (certificate serial, counter).
"""

from __future__ import annotations

import base64
from typing import Any

from sync import codes, rules
from sync.crypto import VerifyKey
from sync.errors import CodeError
from sync.server.context import Context, next_version
from sync.server.errors import Invalid


def campus(ctx: Context) -> int:
    return codes.campus_tag(ctx.config.campus_id)


def proof_key(ctx: Context, terminal_id: str) -> bytes:
    return codes.derive_proof_key(ctx.code_issuer.proof_secret, terminal_id)


def public_info(ctx: Context, policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a verifier needs besides certificates: campus, issuer keys, window (``policy``:
    the policy, when the caller has read it)."""
    pol = ctx.policy() if policy is None else policy
    iss = ctx.code_issuer
    return {
        "campus_id": ctx.config.campus_id,
        "campus_tag": campus(ctx),
        "keys": [{"kid": iss.kid, "public_key": iss.key.public.to_b64()}],
        "code_valid_s": pol["code_valid_s"],
        "code_skew_s": pol["code_skew_s"],
    }


# --- wallet certificates --------------------------------------------------------------------
def certify(
    ctx: Context, account_id: int, session_hash: str, public_key: str, not_after_ms: int
) -> dict[str, Any]:
    """Certify a phone's key for an account until ``not_after_ms`` (wallet enrollment)."""
    try:
        phone = VerifyKey.from_b64(public_key)
    except Exception as exc:  # ProtocolError, or a key cryptography refuses
        raise Invalid(f"public_key: {exc}", "bad_key") from exc
    iss = ctx.code_issuer
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        serial = int(tx.scalar("SELECT COALESCE(MAX(serial), 0) FROM wallet_certs")) + 1
        if serial >= 2**32:
            raise Invalid("wallet certificate serials are exhausted", "cert_serials")
        raw = codes.make_cert(
            iss.key,
            iss.kid,
            campus(ctx),
            serial,
            account_id,
            now // 1000,
            not_after_ms // 1000,
            phone.to_bytes(),
        )
        tx.execute(
            "INSERT INTO wallet_certs (serial, account_id, session_hash, pubkey, raw, "
            "not_after_ms, created_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                serial,
                account_id,
                session_hash,
                public_key,
                base64.b64encode(raw).decode(),
                not_after_ms,
                now,
                next_version(tx),
            ),
        )
    ctx.notifier.notify()
    return {
        "cert": base64.b64encode(raw).decode(),
        "serial": serial,
        "not_after_ms": not_after_ms,
        **public_info(ctx),
    }


def revoke_session(ctx: Context, session_hash: str) -> int:
    """Logout: the wallet certificates made under this session stop working."""
    with ctx.db.tx() as tx:
        n = tx.execute(
            "UPDATE wallet_certs SET revoked = 1, version = ? "
            "WHERE session_hash = ? AND revoked = 0",
            (next_version(tx), session_hash),
        )
    if n:
        ctx.notifier.notify()
    return n


def _known(ctx: Context, serial: int) -> codes.KnownCert | None:
    row = ctx.db.one("SELECT raw, revoked FROM wallet_certs WHERE serial = ?", (serial,))
    if row is None:
        return None
    return codes.KnownCert(base64.b64decode(row["raw"]), bool(row["revoked"]))


def verifier(ctx: Context) -> codes.CodeVerifier:
    pol = ctx.policy()
    return codes.CodeVerifier(
        campus=campus(ctx),
        issuer_keys=ctx.code_issuer.public_keys(),
        lookup_cert=lambda serial: _known(ctx, serial),
        valid_s=int(pol["code_valid_s"]),
        skew_s=int(pol["code_skew_s"]),
    )


def account_refusal(ctx: Context, acct: dict[str, Any]) -> str | None:
    """Why the account may not pay, by its state (R2) or its expiry (R13), or None: the one
    check of both for its cards (:func:`sync.server.authorize.credential_refusal`) and its
    phone codes."""
    reason = rules.blocking_reason(acct["status"])
    if reason is None and acct["expires"] and ctx.today() > acct["expires"]:
        reason = "card expired (R13): see the service desk"
    return reason


def check_payment_code(ctx: Context, text: str) -> tuple[codes.Verified, dict[str, Any]]:
    """Verify a payment code (format, campus, window, chain, signature) and find its account.
    Raises :class:`CodeError`.  The seen-set is checked by the caller, in its transaction."""
    verified = verifier(ctx).verify(text, ctx.now_ms(), (codes.Kind.PAY,))
    row = ctx.db.one("SELECT * FROM accounts WHERE id = ?", (verified.account_id,))
    if row is None:
        raise CodeError("unknown_account", "the code's account does not exist")
    return verified, dict(row)


def verify_auth_code(ctx: Context, text: str) -> dict[str, Any]:
    """R18: who an authentication code belongs to and whether access is allowed.  A code is
    admitted once (a screenshot cannot be replayed).  The account's state is read in the
    transaction that uses the code up: a loss report committed meanwhile refuses it."""
    now = ctx.now_ms()
    try:
        verified = verifier(ctx).verify(text, now, (codes.Kind.AUTH,))
    except CodeError as exc:
        return {"valid": False, "allowed": False, "code": exc.reason, "reason": exc.message}
    with ctx.db.tx() as tx:
        acct = tx.one(
            "SELECT id, number, name, type, status, expires FROM accounts WHERE id = ?",
            (verified.account_id,),
        )
        if acct is None:
            return {
                "valid": False,
                "allowed": False,
                "code": "unknown_account",
                "reason": "the code's account does not exist",
            }
        who = {k: acct[k] for k in ("number", "name", "type", "status")}
        out: dict[str, Any] = {
            "valid": True,
            "kind": "authentication",
            "account": who,
            "cert": verified.code.serial,
            "counter": verified.code.counter,
            "code_time_ms": verified.code.time * 1000,
        }
        refusal = account_refusal(ctx, dict(acct))
        if refusal:
            return {**out, "allowed": False, "code": "account_blocked", "reason": refusal}
        used = tx.one(
            "SELECT ts_ms FROM code_uses WHERE serial = ? AND counter = ?",
            (verified.code.serial, verified.code.counter),
        )
        if used is not None:
            return {
                **out,
                "allowed": False,
                "code": "replayed",
                "reason": "this code was already used: refresh the code on the phone",
            }
        tx.execute(
            "INSERT INTO code_uses (serial, counter, kind, ts_ms) VALUES (?, ?, 'auth', ?)",
            (verified.code.serial, verified.code.counter, now),
        )
    return {**out, "allowed": True, "code": "ok", "reason": "access allowed"}
