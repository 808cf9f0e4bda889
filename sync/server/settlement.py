"""The daily settlement report: per merchant and terminal, the sales, refunds, reversals and net
of one campus day, split by method (card, payment code, reverse scan) and by online/offline,
and the records each terminal has not synced yet.

It is read from the ledger: every transfer of that day into or out of a merchant's accounts
(``mc:<code>``, and ``m:<term>`` of its terminals from before merchants existed), each placed
at its terminal and method by its id and the journal record behind it.  So its net equals the
movement of the merchant's ledger accounts on that day (``ledger_net_fen``, checked here and by
``tests/test_cashier.py``).  Unsynced records are what the terminal reported as its journal head
in its last feed request, less what the server has applied: records made but not yet here.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from sync.db import placeholders
from sync.errors import ProtocolError
from sync.records import JournalRecord
from sync.server import ledger
from sync.server.context import Context
from sync.server.errors import Invalid, NotFound

METHODS = ("card", "qr-forward", "qr-reverse")
MODES = ("online", "offline")
FIGURES = ("sales", "refunds", "reversals")


def _bounds(date: str, tz: str) -> tuple[int, int]:
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise Invalid("date: YYYY-MM-DD", "bad_date") from None
    zone = ZoneInfo(tz)
    lo = dt.datetime.combine(day, dt.time(), zone)
    hi = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return round(lo.timestamp() * 1000), round(hi.timestamp() * 1000)


def _empty() -> dict[str, Any]:
    return {f: {"count": 0, "total_fen": 0} for f in FIGURES} | {"net_fen": 0}


def _add(block: dict[str, Any], figure: str, amount: int) -> None:
    block[figure]["count"] += 1
    block[figure]["total_fen"] += amount
    block["net_fen"] += amount if figure == "sales" else -amount


class _Where:
    """Where a transfer belongs: its terminal, and the journal record that decides its method
    and mode."""

    def __init__(self, term: str, seq: int | None, method: str | None, offline: bool | None):
        self.term, self.seq, self.method, self.offline = term, seq, method, offline


def _place(tx: Any, transfer_id: str) -> _Where | None:
    parts = transfer_id.split(":")
    if parts[0] == "refund" and len(parts) >= 4:  # refund:<original id>:<n>
        return _place(tx, ":".join(parts[1:-1]))
    if len(parts) != 3:
        return None
    kind, term, num = parts
    if not num.isdigit():
        return None
    if kind in ("sale", "reversal", "posrefund"):
        return _Where(term, int(num), None, None)
    if kind in ("rsale", "rrefund", "rsale-late"):  # reverse scan: the phone paid online
        seq = tx.scalar(
            "SELECT journal_seq FROM reverse_payments WHERE terminal_id = ? AND order_no = ?",
            (term, int(num)),
        )
        return _Where(term, None if seq is None else int(seq), "qr-reverse", True)
    return None


def report(ctx: Context, date: str, merchant: str | None = None) -> dict[str, Any]:
    lo, hi = _bounds(date, ctx.config.tz)
    with ctx.db.read() as rd:
        mrows = rd.all(
            "SELECT code, name FROM merchants"
            + (" WHERE code = ?" if merchant else "")
            + " ORDER BY code",
            (merchant,) if merchant else (),
        )
        if merchant and not mrows:
            raise NotFound(f"no merchant {merchant!r}", "no_merchant")
        terms = [
            dict(r)
            for r in rd.all(
                "SELECT id, name, merchant, head_seq, reported_head, reported_ms FROM terminals "
                "WHERE role = 'pos' ORDER BY id"
            )
        ]
        out_merchants = []
        rows: list[dict[str, Any]] = []
        for m in mrows:
            code = m["code"]
            mterms = [t for t in terms if t["merchant"] == code]
            accts = [ledger.merchant_account(code)] + [ledger.merchant(t["id"]) for t in mterms]
            moves = rd.all(
                "SELECT id, ts_ms, debit, credit, amount, kind FROM transfers "
                f"WHERE ts_ms >= ? AND ts_ms < ? AND (debit IN ({placeholders(len(accts))}) "
                f"OR credit IN ({placeholders(len(accts))})) ORDER BY ts_ms, id",
                (lo, hi, *accts, *accts),
            )
            placed = [(mv, _place(rd, str(mv["id"]))) for mv in moves]
            bodies: dict[tuple[str, int], JournalRecord] = {}
            want: dict[str, set[int]] = defaultdict(set)
            for _mv, w in placed:
                if w is not None and w.seq is not None and w.method is None:
                    want[w.term].add(w.seq)
            for term, seqs in want.items():
                s = sorted(seqs)
                for r in rd.all(
                    "SELECT seq, body FROM records WHERE terminal_id = ? "
                    f"AND seq IN ({placeholders(len(s))})",
                    (term, *s),
                ):
                    try:
                        bodies[(term, int(r["seq"]))] = JournalRecord.parse(str(r["body"]))
                    except ProtocolError:  # refused at ingest: it moved no money
                        continue
            total = _empty()
            ledger_net = 0
            per_term: dict[str, dict[str, Any]] = {}
            cells: dict[tuple[str, str, str], dict[str, Any]] = {}
            for mv, w in placed:
                amount = int(mv["amount"])
                inflow = mv["credit"] in accts
                outflow = mv["debit"] in accts
                if inflow == outflow:
                    continue  # between two accounts of the merchant
                ledger_net += amount if inflow else -amount
                if inflow:
                    figure = "sales"
                elif mv["kind"] == "reversal":
                    figure = "reversals"
                else:
                    figure = "refunds"
                term = w.term if w is not None else "-"
                method, offline = (w.method, w.offline) if w is not None else (None, None)
                if w is not None and method is None and w.seq is not None:
                    rec = bodies.get((w.term, w.seq))
                    if rec is not None:
                        method, offline = rec.method, rec.off
                method = method or "other"
                mode = "offline" if offline else "online"
                _add(total, figure, amount)
                if term not in per_term:
                    per_term[term] = _empty() | {"by_method": {}, "by_mode": {}}
                pt = per_term[term]
                _add(pt, figure, amount)
                _add(pt["by_method"].setdefault(method, _empty()), figure, amount)
                _add(pt["by_mode"].setdefault(mode, _empty()), figure, amount)
                cell = cells.setdefault((term, method, mode), _empty())
                _add(cell, figure, amount)
            term_out = []
            for t in mterms:
                pt = per_term.pop(t["id"], _empty() | {"by_method": {}, "by_mode": {}})
                unsynced = max(0, int(t["reported_head"]) - int(t["head_seq"]))
                term_out.append(
                    {
                        "terminal_id": t["id"],
                        "name": t["name"],
                        **pt,
                        "unsynced_records": unsynced,
                        "reported_ms": int(t["reported_ms"]),
                    }
                )
            for term, pt in sorted(per_term.items()):  # a terminal moved to another merchant
                term_out.append(
                    {
                        "terminal_id": term,
                        "name": "",
                        **pt,
                        "unsynced_records": 0,
                        "reported_ms": 0,
                    }
                )
            out_merchants.append(
                {
                    "code": code,
                    "name": m["name"],
                    "ledger_accounts": accts,
                    **total,
                    "ledger_net_fen": ledger_net,
                    "unsynced_records": sum(t["unsynced_records"] for t in term_out),
                    "terminals": term_out,
                }
            )
            for (term, method, mode), c in sorted(cells.items()):
                rows.append(
                    {
                        "merchant": code,
                        "terminal": term,
                        "method": method,
                        "mode": mode,
                        **{f"{f}_count": c[f]["count"] for f in FIGURES},
                        **{f"{f}_fen": c[f]["total_fen"] for f in FIGURES},
                        "net_fen": c["net_fen"],
                    }
                )
    totals = _empty()
    for m in out_merchants:
        for f in FIGURES:
            totals[f]["count"] += m[f]["count"]
            totals[f]["total_fen"] += m[f]["total_fen"]
        totals["net_fen"] += m["net_fen"]
    return {
        "date": date,
        "tz": ctx.config.tz,
        "merchants": out_merchants,
        "totals": totals,
        "rows": rows,
    }
