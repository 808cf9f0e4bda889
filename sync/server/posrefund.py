"""Refunds made at a POS (journal records of kind ``refund``), checked at ingest.

A POS refunds a sale of its own from the same campus day, with a supervisor's PIN, online or
offline; the refund is a journal record like a sale and syncs the same way.  The server applies
it only when:

- the record it names (``x.refund.seq``) is a sale of the same terminal, of the same campus day;
- the supervisor (``x.refund.sup``) is a supervisor of the terminal's merchant, and was not
  disabled before the refund's time;
- it is the first POS refund of that sale (a second one is refused, whatever its amount);
- the amount is at most what is left of the sale after every earlier correction: the desk's
  refunds, a reversal of a double-spent or forged phone code (``corrected``), and an earlier
  POS refund — so the sum of all refunds of a sale never exceeds it, whichever path made them;
- the holder's account is not cancelled (R14: a cancelled account holds no money).

A refund that fails a check moves no money and raises the alarm ``refund_refused`` (the record
is kept: the chain goes on); the desk settles it by hand if it should stand.  One that passes is
a ``refund`` transfer ``posrefund:<term>:<seq>`` from the account the sale credited back to the
wallet it debited, listed in ``refunds`` with the sale's transfer as its original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.clock import CampusDays
from sync.db import Tx
from sync.errors import ProtocolError
from sync.records import JournalRecord
from sync.rules import AccountStatus
from sync.server import ledger


@dataclass
class RunState:
    """What the records of one ingest run did before the one being applied (their transfers
    are written at the end of the run)."""

    records: dict[int, JournalRecord] = field(default_factory=dict)
    transfers: dict[str, ledger.Transfer] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)  # original transfer -> amount
    sales_refunded: set[int] = field(default_factory=set)
    refund_rows: list[tuple[Any, ...]] = field(default_factory=list)
    pos_rows: list[tuple[Any, ...]] = field(default_factory=list)
    operators: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)


class Refused(Exception):
    """Why a refund record moves no money."""


def operator_row(tx: Tx, run: RunState, number: str) -> Mapping[str, Any] | None:
    if number not in run.operators:
        r = tx.one(
            "SELECT number, merchant, role, status, disabled_ms FROM operators WHERE number = ?",
            (number,),
        )
        run.operators[number] = None if r is None else dict(r)
    return run.operators[number]


def _sale(tx: Tx, tid: str, seq: int, run: RunState) -> JournalRecord:
    rec = run.records.get(seq)
    if rec is None:
        row = tx.one("SELECT body FROM records WHERE terminal_id = ? AND seq = ?", (tid, seq))
        if row is not None:
            try:
                rec = JournalRecord.parse(str(row["body"]))
            except ProtocolError:  # a record refused at ingest: kept in the chain, not a sale
                rec = None
    if rec is None or rec.kind != "sale":
        raise Refused(f"record {seq} of {tid} is not a sale")
    return rec


def _original(tx: Tx, tid: str, seq: int, sale: JournalRecord, run: RunState) -> dict[str, Any]:
    """The transfer that charged the sale."""
    if sale.method == "qr-reverse":
        tid_of = tx.scalar(
            "SELECT transfer_id FROM reverse_payments WHERE terminal_id = ? AND journal_seq = ?",
            (tid, seq),
        )
        if tid_of is None:
            raise Refused(f"the reverse-scan sale {tid}:{seq} is not linked to a payment")
        transfer_id = str(tid_of)
    else:
        transfer_id = f"sale:{tid}:{seq}"
    pending = run.transfers.get(transfer_id)
    if pending is not None:
        return pending._asdict()
    row = tx.one("SELECT * FROM transfers WHERE id = ?", (transfer_id,))
    if row is None:
        raise Refused(f"the sale {tid}:{seq} charged nothing")
    return dict(row)


def _corrected(tx: Tx, original: str, run: RunState) -> int:
    """What of ``original`` was given back already: what the ledger knows
    (:func:`sync.server.ledger.corrected`: refunds of every kind, a reversal of the sale) and
    what this run gave back before (its transfers are written at its end)."""
    done = ledger.corrected(tx, original)
    rev = ledger.reversal_of(original)
    if rev is not None and rev in run.transfers:
        done += run.transfers[rev].amount
    return done + run.refunded.get(original, 0)


def check(
    tx: Tx,
    tid: str,
    merchant_code: str,
    seq: int,
    rec: JournalRecord,
    run: RunState,
    day_of: CampusDays,
) -> ledger.Transfer:
    """The transfer of refund record ``seq`` of ``tid``, or :class:`Refused`."""
    ref = rec.refund_x()
    assert ref is not None  # JournalRecord checks it
    sale = _sale(tx, tid, ref.seq, run)
    if day_of(sale.ts) != day_of(rec.ts):
        raise Refused(f"sale {ref.seq} is of {day_of(sale.ts)}, not of the refund's day")
    sup = operator_row(tx, run, ref.sup)
    if sup is None or sup["merchant"] != merchant_code or sup["role"] != "supervisor":
        raise Refused(f"{ref.sup} is not a supervisor of merchant {merchant_code}")
    if sup["status"] != "active" and int(sup["disabled_ms"]) <= rec.ts:
        raise Refused(f"supervisor {ref.sup} was disabled before this refund")
    if ref.seq in run.sales_refunded or tx.one(
        "SELECT 1 FROM pos_refunds WHERE terminal_id = ? AND sale_seq = ?", (tid, ref.seq)
    ):
        raise Refused(f"sale {ref.seq} was refunded at the till already")
    orig = _original(tx, tid, ref.seq, sale, run)
    left = int(orig["amount"]) - _corrected(tx, str(orig["id"]), run)
    if rec.amt > left:
        raise Refused(f"{rec.amt} fen is more than the {max(left, 0)} fen left of sale {ref.seq}")
    aid = int(orig["account_id"])
    status = tx.scalar("SELECT status FROM accounts WHERE id = ?", (aid,))
    if status == AccountStatus.CANCELLED:
        raise Refused("the account is cancelled (R14): a refund cannot go back into it")
    t = ledger.Transfer(
        f"posrefund:{tid}:{seq}",
        rec.ts,
        str(orig["credit"]),
        str(orig["debit"]),
        rec.amt,
        "refund",
        aid,
        f"refund at {tid} of sale {ref.seq}, supervisor {ref.sup}",
    )
    run.refunded[str(orig["id"])] = run.refunded.get(str(orig["id"]), 0) + rec.amt
    run.sales_refunded.add(ref.seq)
    run.refund_rows.append(
        (t.id, str(orig["id"]), rec.amt, t.memo, None, f"{tid}/{ref.sup}", rec.ts)
    )
    run.pos_rows.append((tid, seq, ref.seq, t.id, rec.amt, ref.sup, rec.op, rec.ts))
    return t


def write_rows(tx: Tx, run: RunState) -> None:
    """The ``refunds`` and ``pos_refunds`` rows of the run (after its transfers)."""
    tx.insert_rows(
        "refunds",
        ("transfer_id", "original", "amount", "reason", "request_id", "actor", "ts_ms"),
        run.refund_rows,
    )
    tx.insert_rows(
        "pos_refunds",
        (
            "terminal_id",
            "seq",
            "sale_seq",
            "transfer_id",
            "amount",
            "supervisor",
            "operator",
            "ts_ms",
        ),
        run.pos_rows,
    )
