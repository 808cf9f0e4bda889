"""Service-desk staff: accounts with roles, bearer tokens, permissions, and the audit log.

The admin token the server writes on its first start (``DATA/admin.token``) is the bootstrap
superuser ``admin``; it creates staff with their own tokens and roles (``ykt admin staff add``).
Tokens are stored only as SHA-256 digests.  Every request a staff member makes to the desk API
is written to the audit log with its outcome (:func:`audit`), whether it succeeded or not.

Roles and what they may do (:data:`ROLE_PERMISSIONS`):

=========== ==================================================================================
superuser   everything, including staff accounts
operator    terminals, policy (R7 channels, R12 freeze rules), the payment providers (R7),
            alarms, electricity registry
desk        card holders' business at the counter: accounts, roster, loss/unlock, freeze,
            extension, cancellation, card issue and reissue, found cards
finance     cash top-ups at the desk (R7), refunds, the ledger check, the top-up reconciliation
auditor     read only: accounts, audit log, alarms, ledger check, top-up reconciliation
=========== ==================================================================================

Money enters only from a payer (issue 10 item 1): cash is taken by the finance role at the
desk; app, WeChat, Alipay and bank money only through an order paid at the channel's payment
provider, whose public key an operator registers (``paygate``) — so no one role both decides
whose signature credits money and reconciles it, and no staff role credits a provider channel
by hand.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sync.server.context import Context
from sync.server.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized

SUPERUSER = "admin"

#: permission -> what it covers
PERMISSIONS = {
    "accounts.read": "show accounts, bills and flow",
    "accounts.write": "add accounts, import rosters, reset consumption-password tries",
    "status": "report loss / unlock (R10), freeze / unfreeze (R12)",
    "cards": "issue and reissue cards (R11), extension (R13), cancellation (R14)",
    "topup.cash": "cash top-up at the desk (R7)",
    "paygate": "register the payment provider of a top-up channel (R7)",
    "refund": "refunds (correcting transfers)",
    "found_cards": "found cards (R17)",
    "electricity": "the building/room registry (R15)",
    "terminals": "enroll, list and revoke terminals",
    "policy.read": "read the terminal policy",
    "policy.write": "change the policy: channels (R7), fee (R11), freeze rules (R12)",
    "ledger": "ledger check, alarms, the top-up reconciliation (R7)",
    "audit": "read the audit log",
    "staff": "staff accounts",
}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "superuser": frozenset(PERMISSIONS),
    "operator": frozenset(
        {
            "accounts.read",
            "terminals",
            "policy.read",
            "policy.write",
            "paygate",
            "ledger",
            "electricity",
        }
    ),
    "desk": frozenset(
        {"accounts.read", "accounts.write", "status", "cards", "found_cards", "policy.read"}
    ),
    "finance": frozenset({"accounts.read", "topup.cash", "refund", "ledger", "policy.read"}),
    "auditor": frozenset({"accounts.read", "audit", "ledger", "policy.read"}),
}
ROLES = tuple(ROLE_PERMISSIONS)
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
_SECRET_FIELDS = frozenset(
    {"password", "old_password", "new_password", "query_password", "pin", "token", "tag"}
    | {"auth_code", "client_secret", "code_text"}
)


@dataclass(frozen=True)
class Actor:
    name: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())

    def require(self, permission: str) -> None:
        if not self.may(permission):
            raise Forbidden(
                f"staff {self.name} ({self.role}) may not do this: needs {permission!r}",
                "not_permitted",
            )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(ctx: Context, token: str) -> Actor:
    """The staff member behind a bearer token (the bootstrap token is the superuser)."""
    if not token or len(token) > 256:
        raise Unauthorized("staff token required (Authorization: Bearer …)", "bad_admin_token")
    digest = _digest(token)
    admin_hash = ctx.setting("admin_token_sha256")
    if admin_hash and hmac.compare_digest(digest, admin_hash):
        return Actor(SUPERUSER, "superuser")
    row = ctx.db.one("SELECT name, role, status FROM staff WHERE token_hash = ?", (digest,))
    if row is None:
        raise Unauthorized("staff token required (Authorization: Bearer …)", "bad_admin_token")
    if row["status"] != "active":
        raise Forbidden(f"staff account {row['name']} is disabled", "staff_disabled")
    return Actor(str(row["name"]), str(row["role"]))


def add_staff(ctx: Context, name: str, role: str, by: Actor) -> dict[str, Any]:
    if not _NAME.match(name or "") or name == SUPERUSER:
        raise Invalid(
            "staff name: 2-32 lower-case letters, digits, '.', '_' or '-' (not 'admin')",
            "bad_name",
        )
    if role not in ROLE_PERMISSIONS:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", "bad_role")
    token = secrets.token_urlsafe(32)
    with ctx.db.tx() as tx:
        if tx.one("SELECT 1 FROM staff WHERE name = ?", (name,)):
            raise Conflict(f"staff {name} exists", "duplicate")
        tx.execute(
            "INSERT INTO staff (name, role, token_hash, created_ms, created_by) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, role, _digest(token), ctx.now_ms(), by.name),
        )
    return {"name": name, "role": role, "token": token, "status": "active"}


def list_staff(ctx: Context) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in ctx.db.all(
            "SELECT name, role, status, created_ms, created_by FROM staff ORDER BY name"
        )
    ]


def set_staff_status(ctx: Context, name: str, status: str) -> dict[str, Any]:
    with ctx.db.tx() as tx:
        if tx.execute("UPDATE staff SET status = ? WHERE name = ?", (status, name)) == 0:
            raise NotFound(f"no staff {name!r}", "no_staff")
        row = tx.one(
            "SELECT name, role, status, created_ms, created_by FROM staff WHERE name = ?", (name,)
        )
    assert row is not None
    return dict(row)


def redact(value: Any) -> Any:
    """A request body as the audit log keeps it: secrets replaced, ID-card numbers masked."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in _SECRET_FIELDS:
                out[k] = "***"
            elif k == "id_card" and isinstance(v, str):
                out[k] = v[:3] + "*" * max(len(v) - 7, 0) + v[-4:]
            elif k == "csv" and isinstance(v, str):
                out[k] = f"<{len(v.splitlines())} lines>"
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value[:50]]
    return value


def audit(
    ctx: Context,
    actor: Actor,
    action: str,
    target: str,
    outcome: str,
    detail: Any = None,
) -> None:
    """Write one line of the audit log."""
    text = "" if detail is None else json.dumps(redact(detail), ensure_ascii=False)[:4000]

    def clean(s: str) -> str:  # lone surrogates (from JSON escapes) cannot be stored as UTF-8
        return s.encode("utf-8", "backslashreplace").decode("utf-8")

    with ctx.db.tx() as tx:
        tx.execute(
            "INSERT INTO audit (ts_ms, actor, role, action, target, outcome, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                ctx.now_ms(),
                actor.name,
                actor.role,
                clean(action),
                clean(target[:200]),
                clean(outcome[:200]),
                clean(text),
            ),
        )


def audit_log(
    ctx: Context, *, limit: int = 100, before_id: int | None = None, actor: str | None = None
) -> dict[str, Any]:
    where: list[str] = []
    params: list[Any] = []
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    if actor:
        where.append("actor = ?")
        params.append(actor)
    sql = "SELECT id, ts_ms, actor, role, action, target, outcome, detail FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = [dict(r) for r in ctx.db.all(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))]
    return {"entries": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}
