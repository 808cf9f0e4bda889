"""Merchants (a canteen and its windows), their operators (cashiers and supervisors), the shift
reports their terminals push, and what the terminals report of their journals.

A terminal belongs to one merchant (``terminals.merchant``, chosen by its enrollment token;
terminals enrolled before merchants existed belong to ``DEFAULT``); its sales credit the
merchant's ledger account ``mc:<code>`` (:mod:`sync.server.ledger`).

Operators are people at the till.  Their PIN is kept twice, both as slow scrypt hashes
(:mod:`sync.passwords`) with their own salts: ``pin_hash`` stays on the server, ``verifier`` goes
through the delta feed to the terminals of the operator's merchant only, which check a PIN
offline against it (docs/security.md, "Operators at the till").  A disabled operator is sent
to the terminals as ``status = 'disabled'`` with an empty verifier.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sync import passwords
from sync.db import Params, Row
from sync.records import OperatorRow
from sync.server import ledger, recovery
from sync.server.context import Context, next_version
from sync.server.errors import Conflict, Invalid, NotFound

CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
OPERATOR_NUMBER = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
OPERATOR_PIN = re.compile(r"^[0-9]{6,12}$")
OPERATOR_ROLES = ("cashier", "supervisor")


# -- merchants -----------------------------------------------------------------------------------
def add_merchant(ctx: Context, code: str, name: str) -> dict[str, Any]:
    if not CODE.match(code or ""):
        raise Invalid("merchant code: 1-32 letters, digits, '_' or '-'", "bad_code")
    name = (name or "").strip()
    if not 1 <= len(name) <= 64:
        raise Invalid("merchant name: 1-64 characters", "bad_name")
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        if tx.one("SELECT 1 FROM merchants WHERE code = ?", (code,)) is not None:
            raise Conflict(f"merchant {code} exists", "merchant_exists")
        tx.execute(
            "INSERT INTO merchants (code, name, created_ms) VALUES (?, ?, ?)", (code, name, now)
        )
        ledger.ensure(tx, ledger.merchant_account(code), "merchant")
    return {"code": code, "name": name, "created_ms": now, "terminals": [], "operators": 0}


def list_merchants(ctx: Context) -> list[dict[str, Any]]:
    with ctx.db.read() as rd:
        rows = rd.all("SELECT code, name, created_ms FROM merchants ORDER BY code")
        terms = rd.all("SELECT id, merchant FROM terminals ORDER BY id")
        ops = rd.all(
            "SELECT merchant, COUNT(*) AS n FROM operators WHERE status = 'active' "
            "GROUP BY merchant"
        )
        bal = {
            r["id"]: int(r["balance"])
            for r in rd.all("SELECT id, balance FROM ledger_accounts WHERE kind = 'merchant'")
        }
    n_ops = {r["merchant"]: int(r["n"]) for r in ops}
    out = []
    for r in rows:
        code = r["code"]
        out.append(
            {
                "code": code,
                "name": r["name"],
                "created_ms": r["created_ms"],
                "terminals": [t["id"] for t in terms if t["merchant"] == code],
                "operators": n_ops.get(code, 0),
                "balance_fen": bal.get(ledger.merchant_account(code), 0),
            }
        )
    return out


# -- operators -----------------------------------------------------------------------------------
def add_operator(
    ctx: Context, merchant: str, number: str, name: str, role: str, pin: str
) -> dict[str, Any]:
    if not OPERATOR_NUMBER.match(number or ""):
        raise Invalid("operator number: 1-32 letters, digits, '_' or '-'", "bad_number")
    name = (name or "").strip()
    if not 1 <= len(name) <= 64:
        raise Invalid("operator name: 1-64 characters", "bad_name")
    if role not in OPERATOR_ROLES:
        raise Invalid("role: cashier or supervisor", "bad_role")
    if not OPERATOR_PIN.match(pin or ""):
        raise Invalid("an operator PIN is 6-12 digits", "bad_pin")
    cost = ctx.config.password_log2_n
    pin_hash = passwords.hash_password(pin, log2_n=cost)
    verifier = passwords.hash_password(pin, log2_n=cost)  # another salt: what terminals get
    now = ctx.now_ms()
    with ctx.db.tx() as tx:
        if tx.one("SELECT 1 FROM merchants WHERE code = ?", (merchant,)) is None:
            raise NotFound(f"no merchant {merchant!r}", "no_merchant")
        if tx.one("SELECT 1 FROM operators WHERE number = ?", (number,)) is not None:
            raise Conflict(f"operator {number} exists", "operator_exists")
        tx.execute(
            "INSERT INTO operators (number, merchant, name, role, pin_hash, verifier, "
            "created_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (number, merchant, name, role, pin_hash, verifier, now, next_version(tx)),
        )
    ctx.notifier.notify()
    return operator(ctx, number)


def operator(ctx: Context, number: str) -> dict[str, Any]:
    r = ctx.db.one(
        "SELECT number, merchant, name, role, status, disabled_ms, created_ms FROM operators "
        "WHERE number = ?",
        (number,),
    )
    if r is None:
        raise NotFound(f"no operator {number!r}", "no_operator")
    return dict(r)


def list_operators(ctx: Context, merchant: str | None = None) -> list[dict[str, Any]]:
    sql = (
        "SELECT number, merchant, name, role, status, disabled_ms, created_ms FROM operators"
        + (" WHERE merchant = ?" if merchant else "")
        + " ORDER BY merchant, number"
    )
    return [dict(r) for r in ctx.db.all(sql, (merchant,) if merchant else ())]


def disable_operator(ctx: Context, number: str) -> dict[str, Any]:
    with ctx.db.tx() as tx:
        r = tx.one("SELECT status FROM operators WHERE number = ?", (number,))
        if r is None:
            raise NotFound(f"no operator {number!r}", "no_operator")
        if r["status"] != "disabled":
            tx.execute(
                "UPDATE operators SET status = 'disabled', disabled_ms = ?, version = ? "
                "WHERE number = ?",
                (ctx.now_ms(), next_version(tx), number),
            )
    ctx.notifier.notify()
    return operator(ctx, number)


def feed_operators_read(merchant: str, since: int, upto: int) -> tuple[str, Params]:
    """The statement of the operators of ``merchant`` changed in (since, upto]: what its
    terminals check a PIN with offline (:func:`operator_rows` takes its rows)."""
    return (
        "SELECT number, name, role, status, verifier, version FROM operators "
        "WHERE merchant = ? AND version > ? AND version <= ? ORDER BY version, number",
        (merchant, since, upto),
    )


def operator_rows(rows: list[Row]) -> list[OperatorRow]:
    """The rows of :func:`feed_operators_read` as the feed sends them (a disabled operator's
    verifier is not sent)."""
    return [
        OperatorRow(
            number=r["number"],
            name=r["name"],
            role=r["role"],
            status=r["status"],
            verifier=r["verifier"] if r["status"] == "active" else "",
            version=int(r["version"]),
        )
        for r in rows
    ]


# -- what terminals report -----------------------------------------------------------------------
def report_head(ctx: Context, terminal_id: str, head: int, acked: int | None = None) -> None:
    """The terminal's journal head as its feed request says (the records it has not synced
    yet are ``head - head_seq``: the settlement report shows them), and the head the server
    acked to it (``acked``: above what the server holds, the server lost records and enters
    the recovering state, :mod:`sync.server.recovery`).  While recovering every report is
    kept with its time (it tells that the terminal was heard from since the restore), and the
    state ends once no terminal is waited for."""
    row = ctx.db.one(
        "SELECT head_seq, (SELECT value FROM settings WHERE key = 'recovery') AS recovery "
        "FROM terminals WHERE id = ?",
        (terminal_id,),
    )
    if row is None:
        return
    recovering = row["recovery"] not in (None, "null")
    if acked is not None and acked > int(row["head_seq"]) and not recovering:
        with ctx.db.tx() as tx:
            recovery.saw_ack(ctx, tx, terminal_id, acked)
        recovering = True
    with ctx.db.tx(exclusive=False) as tx:
        tx.execute(
            "UPDATE terminals SET reported_head = ?, reported_ms = ? WHERE id = ? "
            "AND (reported_head <> ? OR ? = 1)",
            (head, ctx.now_ms(), terminal_id, head, int(recovering)),
        )
    if recovering:
        recovery.check(ctx)


def store_shift(ctx: Context, terminal: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Keep a shift (Z) report a terminal pushed; the same report again is harmless, another
    report under the same shift number is refused."""
    tid = terminal["id"]
    text = json.dumps(report, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    with ctx.db.tx() as tx:
        old = tx.one(
            "SELECT report FROM shift_reports WHERE terminal_id = ? AND shift_no = ?",
            (tid, report["shift_no"]),
        )
        if old is not None:
            if old["report"] != text:
                raise Conflict(
                    f"shift {report['shift_no']} of {tid} was reported differently",
                    "shift_conflict",
                )
            return {"stored": False, "terminal_id": tid, "shift_no": report["shift_no"]}
        tx.execute(
            "INSERT INTO shift_reports (terminal_id, shift_no, operator, opened_ms, closed_ms, "
            "report, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                tid,
                report["shift_no"],
                report.get("closed_by") or "",
                report["opened_ms"],
                report["closed_ms"],
                text,
                ctx.now_ms(),
            ),
        )
    return {"stored": True, "terminal_id": tid, "shift_no": report["shift_no"]}


def shift_reports(ctx: Context, terminal_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT terminal_id, shift_no, report, received_ms FROM shift_reports" + (
        " WHERE terminal_id = ?" if terminal_id else ""
    )
    rows = ctx.db.all(
        sql + " ORDER BY terminal_id, shift_no", (terminal_id,) if terminal_id else ()
    )
    return [{**json.loads(r["report"]), "received_ms": r["received_ms"]} for r in rows]
