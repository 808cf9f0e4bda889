"""The delta feed terminals pull by version (docs/architecture.md): hotlist and account snapshots for
offline decisions, cards (generations, replaced cards), wallet certificates and the code keys
(phone codes, docs/codes.md), the operators of the terminal's merchant
(:mod:`sync.server.merchants`), and policy.

Every change takes the next feed version (:func:`sync.server.context.next_version`) and stamps
the rows it touches, so "everything since version V" is one indexed query per table.  A page
never splits a version, so a terminal that stores the returned version never misses a row.
"""

from __future__ import annotations

import base64
from types import GenericAlias
from typing import Any, TypeVar

import msgspec

from sync.db import Tx
from sync.records import UNSET, AccountSnapshot, CardRow, CertRow, CodesInfo, FeedPage, IssuerKey
from sync.server import codes, merchants
from sync.server.context import Context

PAGE = 2000

_Row = TypeVar("_Row", AccountSnapshot, CardRow, CertRow)


def _rows(rd: Tx, cls: type[_Row], sql: str, params: tuple[int, ...]) -> list[_Row]:
    """The rows of ``sql``, whose columns are named as the fields of ``cls`` (0/1 read as
    ``false``/``true`` where the field is a boolean: SQLite has no boolean type).  One
    conversion for the page, of plain dicts (half the time of a conversion a row: a page of a
    busy campus has thousands)."""
    rows = rd.all(sql, params)
    if not rows:
        return []
    names = tuple(rows[0].keys())
    plain = [dict(zip(names, r, strict=True)) for r in rows]  # a row iterates its values
    out: list[_Row] = msgspec.convert(plain, GenericAlias(list, (cls,)), strict=False)
    return out


def delta(ctx: Context, terminal: dict[str, Any], since: int, page: int = PAGE) -> FeedPage:
    with ctx.db.read() as rd:
        merchant = str(
            rd.scalar("SELECT merchant FROM terminals WHERE id = ?", (terminal["id"],)) or "DEFAULT"
        )
        merchant_name = (  # "" for no merchant of its own: the receipt has the terminal's name
            ""
            if merchant == "DEFAULT"
            else str(rd.scalar("SELECT name FROM merchants WHERE code = ?", (merchant,)) or "")
        )
        current = int(rd.scalar("SELECT value FROM versions WHERE name = 'feed'"))
        reset = since > current  # the server's data was replaced: start over
        if reset:
            since = 0
        upto = current
        cut = rd.scalar(
            "SELECT version FROM (SELECT version FROM accounts WHERE version > ? "
            "UNION ALL SELECT version FROM cards WHERE version > ? "
            "UNION ALL SELECT version FROM wallet_certs WHERE version > ? "
            "UNION ALL SELECT version FROM operators WHERE merchant = ? AND version > ?) "
            "AS changed ORDER BY version LIMIT 1 OFFSET ?",
            (since, since, since, merchant, since, page),
        )
        if cut is not None:
            upto = int(cut) - 1 if int(cut) - 1 > since else int(cut)
        accounts = _rows(
            rd,
            AccountSnapshot,
            "SELECT a.id, a.number, a.name, a.type, a.status, "
            "COALESCE(w.balance, 0) AS balance_fen, COALESCE(t.balance, 0) AS transition_fen, "
            "a.limit_fen, a.spent_day, a.spent_fen, a.pin_tries, "
            "a.pin_epoch, a.expires, a.version FROM accounts a "
            "LEFT JOIN ledger_accounts w ON w.id = 'w:' || a.id "
            "LEFT JOIN ledger_accounts t ON t.id = 't:' || a.id "
            "WHERE a.version > ? AND a.version <= ? ORDER BY a.version, a.id",
            (since, upto),
        )
        # a card's signed identity holds its consumption-password verifier (R5), which a
        # terminal with the POS card keys could attack offline: only a simulated terminal
        # (tests, demos) gets it, to make simulated cards from (docs/security.md)
        cards = _rows(
            rd,
            CardRow,
            "SELECT card_no, account_id, uid, generation, status, version, "
            "CASE WHEN ? = 1 THEN identity ELSE '' END AS identity FROM cards "
            "WHERE version > ? AND version <= ? ORDER BY version, card_no",
            (int(bool(terminal.get("simulated"))), since, upto),
        )
        certs = _rows(
            rd,
            CertRow,
            "SELECT serial, account_id, raw, revoked, version FROM wallet_certs "
            "WHERE version > ? AND version <= ? ORDER BY version, serial",
            (since, upto),
        )
        # the operators' PIN verifiers go only to the tills that sign them in (a kiosk has none)
        operators = (
            merchants.feed_operators(rd, merchant, since, upto)
            if terminal.get("role", "pos") == "pos"
            else []
        )
        ack = int(rd.scalar("SELECT head_seq FROM terminals WHERE id = ?", (terminal["id"],)))
        policy_version = int(
            rd.scalar("SELECT value FROM settings WHERE key = 'policy_version'") or 0
        )
    info = codes.public_info(ctx)
    send_policy = since == 0 or since < policy_version <= upto or reset
    return FeedPage(
        version=upto,
        more=upto < current,
        reset=reset,
        ack=ack,
        accounts=accounts,
        cards=cards,
        certs=certs,
        operators=operators,
        codes=CodesInfo(
            campus_id=info["campus_id"],
            campus_tag=info["campus_tag"],
            keys=[IssuerKey(k["kid"], k["public_key"]) for k in info["keys"]],
            code_valid_s=info["code_valid_s"],
            code_skew_s=info["code_skew_s"],
            proof_key=base64.b64encode(codes.proof_key(ctx, terminal["id"])).decode(),
        ),
        campus_id=ctx.config.campus_id,
        tz=ctx.config.tz,
        merchant_name=merchant_name,
        server_time_ms=ctx.now_ms(),
        policy=ctx.policy() if send_policy else UNSET,
    )
