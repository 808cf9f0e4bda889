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
import bisect
import threading
from types import GenericAlias
from typing import Any, TypeVar

import msgspec

from sync.db import Row, placeholders
from sync.records import (
    UNSET,
    AccountSnapshot,
    CardRow,
    CertRow,
    CodesInfo,
    FeedPage,
    IssuerKey,
    OperatorRow,
)
from sync.server import codes, merchants
from sync.server.context import POLICY_READ, Context

PAGE = 2000

_Row = TypeVar("_Row", AccountSnapshot, CardRow, CertRow)


def _rows(cls: type[_Row], rows: list[Row]) -> list[_Row]:
    """``rows``, whose columns are named as the fields of ``cls``, as ``cls`` (0/1 read as
    ``false``/``true`` where the field is a boolean: SQLite has no boolean type).  One
    conversion for the page, of plain dicts (half the time of a conversion a row: a page of a
    busy campus has thousands)."""
    if not rows:
        return []
    names = tuple(rows[0].keys())
    plain = [dict(zip(names, r, strict=True)) for r in rows]  # a row iterates its values
    out: list[_Row] = msgspec.convert(plain, GenericAlias(list, (cls,)), strict=False)
    return out


def _terminal_bits(
    ctx: Context, ids: list[str]
) -> tuple[dict[str, tuple[str, int, str, str]], int]:
    """What the pages ask of their terminals' rows (each one's merchant, journal ack, status
    and key) and the current feed version, read together: one statement for a whole wake's
    batch of pages (:meth:`FeedShare.pages`).  Read a terminal at a time, in a read
    transaction, it was 22 % of a server process's GIL time in a wake; as one statement a
    page, still the most of a page's cost (docs/benchmarks.md, peak).  A terminal without a
    row (the server's data replaced) is not in the map: no ack."""
    rows = ctx.db.all(
        "SELECT v.value AS current, t.id, t.merchant, t.head_seq, t.status, t.pubkey "
        f"FROM versions v LEFT JOIN terminals t ON t.id IN ({placeholders(len(ids))}) "
        "WHERE v.name = 'feed'",
        tuple(ids),
    )
    assert rows  # the schema's own versions row (sync/server/schema.py)
    bits = {
        str(r["id"]): (
            str(r["merchant"] or "DEFAULT"),
            int(r["head_seq"] or 0),
            str(r["status"]),
            str(r["pubkey"]),
        )
        for r in rows
        if r["id"] is not None
    }
    return bits, int(rows[0]["current"])


class _Shared(msgspec.Struct, frozen=True):
    """What the pages asking from ``since`` carry alike (:class:`FeedShare`); one that was not
    cut (``more`` and ``reset`` false) holds every row of (since, version] and so serves any
    ``since`` in between too (:func:`_view`)."""

    since: int
    version: int
    more: bool
    reset: bool
    accounts: list[AccountSnapshot]
    cards: list[CardRow]
    certs: list[CertRow]
    operators: list[OperatorRow]
    codes: dict[str, Any]
    merchant_name: str
    policy_version: int
    policy: dict[str, Any]


#: what the common part of a page depends on besides ``since``: the current version, the
#: merchant, whether the terminal signs operators in (a POS), whether it is simulated, the
#: page size
_Key = tuple[int, str, bool, bool, int]


def _shared(ctx: Context, key: _Key, since: int) -> _Shared:
    """The common part of the pages from ``since`` of ``key``: one snapshot, read in two round
    trips on PostgreSQL (what bounds the page, then its rows with the snapshot's end): a
    statement at a time it was ten, and a lunch peak's feed reads one part for every few pages
    (the version moves with every sale)."""
    current, merchant, is_pos, simulated, page = key
    reset = since > current  # the server's data was replaced: start over
    if reset:
        since = 0
    with ctx.db.read() as rd:
        cut_rows, policy_version_rows, policy_rows, *name_rows = rd.batch(
            [
                (
                    "SELECT version FROM (SELECT version FROM accounts WHERE version > ? "
                    "UNION ALL SELECT version FROM cards WHERE version > ? "
                    "UNION ALL SELECT version FROM wallet_certs WHERE version > ? "
                    "UNION ALL SELECT version FROM operators WHERE merchant = ? AND version > ?) "
                    "AS changed ORDER BY version LIMIT 1 OFFSET ?",
                    (since, since, since, merchant, since, page),
                ),
                ("SELECT value FROM settings WHERE key = 'policy_version'", ()),
                POLICY_READ,
                # "" for no merchant of its own: the receipt has the terminal's name
                *(
                    ()
                    if merchant == "DEFAULT"
                    else (("SELECT name FROM merchants WHERE code = ?", (merchant,)),)
                ),
            ]
        )
        upto = current
        cut = cut_rows[0]["version"] if cut_rows else None
        # (rows committed after ``current`` was read lie beyond it: they are not cut here)
        if cut is not None and int(cut) <= current:
            upto = int(cut) - 1 if int(cut) - 1 > since else int(cut)
        account_rows, card_rows, cert_rows, *operator_rows = rd.batch(
            [
                (
                    "SELECT a.id, a.number, a.name, a.type, a.status, "
                    "COALESCE(w.balance, 0) AS balance_fen, "
                    "COALESCE(t.balance, 0) AS transition_fen, "
                    "a.limit_fen, a.spent_day, a.spent_fen, a.pin_tries, "
                    "a.pin_epoch, a.expires, a.version FROM accounts a "
                    "LEFT JOIN ledger_accounts w ON w.id = 'w:' || a.id "
                    "LEFT JOIN ledger_accounts t ON t.id = 't:' || a.id "
                    "WHERE a.version > ? AND a.version <= ? ORDER BY a.version, a.id",
                    (since, upto),
                ),
                # a card's signed identity holds its consumption-password verifier (R5), which
                # a terminal with the POS card keys could attack offline: only a simulated
                # terminal (tests, demos) gets it, to make simulated cards from
                # (docs/security.md)
                (
                    "SELECT card_no, account_id, uid, generation, status, version, "
                    "CASE WHEN ? = 1 THEN identity ELSE '' END AS identity FROM cards "
                    "WHERE version > ? AND version <= ? ORDER BY version, card_no",
                    (int(simulated), since, upto),
                ),
                (
                    "SELECT serial, account_id, raw, revoked, version FROM wallet_certs "
                    "WHERE version > ? AND version <= ? ORDER BY version, serial",
                    (since, upto),
                ),
                # the operators' PIN verifiers go only to the tills that sign them in (a kiosk
                # has none)
                *((merchants.feed_operators_read(merchant, since, upto),) if is_pos else ()),
            ],
            last=True,
        )
    policy = ctx.policy_of(policy_rows)
    return _Shared(
        since=since,
        version=upto,
        more=upto < current,
        reset=reset,
        accounts=_rows(AccountSnapshot, account_rows),
        cards=_rows(CardRow, card_rows),
        certs=_rows(CertRow, cert_rows),
        operators=merchants.operator_rows(operator_rows[0]) if operator_rows else [],
        codes=codes.public_info(ctx, policy),
        merchant_name=str(name_rows[0][0]["name"] or "") if name_rows and name_rows[0] else "",
        policy_version=int(policy_version_rows[0]["value"] or 0) if policy_version_rows else 0,
        policy=policy,
    )


def _covers(part: _Shared, since: int) -> bool:
    """Whether ``part`` (not cut) holds the page asked from ``since``."""
    return not (part.more or part.reset) and part.since <= since <= part.version


def _version(row: AccountSnapshot | CardRow | CertRow | OperatorRow) -> int:
    return row.version if isinstance(row.version, int) else 0


def _after(rows: list[_R], since: int) -> list[_R]:
    """The rows (in version order) of versions above ``since``."""
    return rows[bisect.bisect_right(rows, since, key=_version) :]


def _page(ctx: Context, terminal_id: str, ack: int, part: _Shared, since: int) -> FeedPage:
    """The page from ``since`` (one ``part`` covers) for ``terminal_id``."""
    if since != part.since:
        part = msgspec.structs.replace(
            part,
            since=since,
            accounts=_after(part.accounts, since),
            cards=_after(part.cards, since),
            certs=_after(part.certs, since),
            operators=_after(part.operators, since),
        )
    first = part.since  # 0 after a reset
    send_policy = first == 0 or first < part.policy_version <= part.version or part.reset
    info = part.codes
    return FeedPage(
        version=part.version,
        more=part.more,
        reset=part.reset,
        ack=ack,
        accounts=part.accounts,
        cards=part.cards,
        certs=part.certs,
        operators=part.operators,
        codes=CodesInfo(
            campus_id=info["campus_id"],
            campus_tag=info["campus_tag"],
            keys=[IssuerKey(k["kid"], k["public_key"]) for k in info["keys"]],
            code_valid_s=info["code_valid_s"],
            code_skew_s=info["code_skew_s"],
            proof_key=base64.b64encode(codes.proof_key(ctx, terminal_id)).decode(),
        ),
        campus_id=ctx.config.campus_id,
        tz=ctx.config.tz,
        merchant_name=part.merchant_name,
        server_time_ms=ctx.now_ms(),
        policy=part.policy if send_policy else UNSET,
    )


def _key(terminal: dict[str, Any], merchant: str, current: int, page: int) -> _Key:
    is_pos = terminal.get("role", "pos") == "pos"
    return (current, merchant, is_pos, bool(terminal.get("simulated")), page)


def delta(ctx: Context, terminal: dict[str, Any], since: int, page: int = PAGE) -> FeedPage:
    """The page of changes after ``since`` for ``terminal`` (at most ``page`` changed rows,
    never splitting a version)."""
    bits, current = _terminal_bits(ctx, [terminal["id"]])
    merchant, ack, _, _ = bits.get(terminal["id"], _NO_ROW)
    part = _shared(ctx, _key(terminal, merchant, current, page), since)
    return _page(ctx, terminal["id"], ack, part, part.since)


#: the merchant, ack, status and key of a terminal without a row (no key to compare)
_NO_ROW = ("DEFAULT", 0, "active", "")


class FeedShare:
    """The feed pages of one server process, their common part read once.

    A wake answers every parked long-poll at once (1,000 at a lunch peak), and their pages
    differ only in the terminal's own fields (the journal ack, its reverse-scan proof key, the
    server's time) and in where they start: the rows (accounts, cards, certificates), the
    merchant's operators, the code keys and the policy depend only on the current version, the
    merchant, the terminal's role and whether it is simulated (:data:`_Key`).  So one read of
    the rows after the lowest ``since`` asked serves every page of the key: each takes the rows
    after its own ``since`` (they are in version order).  A request from further back reads
    them again from there (in a random order of requests that happens a handful of times for
    1,000); one whose rows would not fit in a page reads its own, cut.  The pages of a batch
    (:meth:`pages`) read their terminals' rows and the current version in one statement.  A
    part stays right after the data moves on: a row changed again takes a later version, which
    the terminal's next page (from this page's version) carries."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._parts: dict[_Key, _Slot] = {}
        self.computed = 0  # parts read (tests, benchmarks)

    def pages(
        self, ctx: Context, asks: list[tuple[dict[str, Any], int]], page: int = PAGE
    ) -> list[FeedPage | None]:
        """The page of each (terminal, since) asked, their terminals' rows read together;
        None for a terminal whose row is no longer what its request was checked against
        (revoked, or another key: a stream checked when it opened gets no further page).  A
        terminal without a row (the server's data replaced) still gets its page, without an
        ack, as before."""
        bits, current = _terminal_bits(ctx, list({term["id"]: None for term, _ in asks}))
        out: list[FeedPage | None] = []
        for term, since in asks:
            merchant, ack, status, key = bits.get(term["id"], _NO_ROW)
            if status != "active" or (key and key != term.get("pubkey", key)):
                out.append(None)
                continue
            part = self._part(ctx, _key(term, merchant, current, page), since)
            out.append(_page(ctx, term["id"], ack, part, part.since if part.reset else since))
        return out

    def _part(self, ctx: Context, key: _Key, since: int) -> _Shared:
        with self._lock:
            slot = self._parts.get(key)
            if slot is None:
                slot = self._parts[key] = _Slot()
                while len(self._parts) > self.keep:
                    del self._parts[next(iter(self._parts))]
        with slot.lock:  # one reads while the others of the key wait for its rows
            part = slot.part
            if part is not None and _covers(part, since):
                return part
            part = _shared(ctx, key, since)
            self.computed += 1
            if _covers(part, since) and (slot.part is None or part.since < slot.part.since):
                slot.part = part
            return part


_R = TypeVar("_R", AccountSnapshot, CardRow, CertRow, OperatorRow)


class _Slot:
    __slots__ = ("lock", "part")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.part: _Shared | None = None
