"""Receipts: what a terminal prints for each of its sales, and the durable print queue.

A sale never waits for the printer: once a record is journaled the receipt is queued here (in
``DATA/receipts.db``, synchronous FULL) and the printer thread (:mod:`edge.counter`) prints it
when it can; a receipt the printer did not finish (paper out, cover open, the printer gone)
stays queued and prints when the printer is back.  The cashier can ask for a copy of any
receipt (``reprint``).  A shift's Z report is printed through the same queue (``add_report``,
``seq`` 0).  At start the queue takes the journal's sales it has not queued yet
(a crash between the approval and the queueing loses no receipt).

The receipt (Chinese, GB18030 on the wire) carries the merchant and window, terminal, time,
method, amount, balance after, journal seq, sale or refund, and a QR code the terminal signed
(:mod:`sync.receipt`) that ``ykt verify-receipt`` checks against the terminal's key.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.printer.base import Receipt
from edge.identity import Identity
from edge.journal import Journal
from sync import receipt as receipt_code
from sync.clock import Clock, iso
from sync.db import Database, Migrations
from sync.records import JournalRecord

log = logging.getLogger(__name__)

MIGRATIONS = Migrations()
MIGRATIONS.add(
    "0001-receipts",
    """
    CREATE TABLE receipts (
        id {id},
        seq {int} NOT NULL,
        copy {int} NOT NULL,
        doc {text} NOT NULL,
        state {text} NOT NULL,
        tries {int} NOT NULL,
        error {text} NOT NULL,
        queued_ms {int} NOT NULL,
        printed_ms {int} NOT NULL
    );
    CREATE INDEX receipts_state ON receipts (state, id)
    """,
)

#: the journal record kinds that get a receipt (money moved at this till)
RECEIPT_KINDS = frozenset({"sale", "refund"})
METHODS = {"card": "校园卡 card", "qr-forward": "付款码 pay code", "qr-reverse": "扫码 scan"}
KINDS = {"sale": "消费 SALE", "refund": "退款 REFUND"}


def merchant_line(ident: Identity, merchant: str = "") -> str:
    """The merchant and window printed at the top of a receipt: the merchant's name as the feed
    brought it and the terminal's name (e.g. "第一食堂 window-3"); the terminal's name alone for
    a terminal of no merchant of its own."""
    return f"{merchant} {ident.name}" if merchant else ident.name


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100}.{fen % 100:02d}"


def build(
    rec: JournalRecord, qr: str, ident: Identity, tz: str, copy: int = 0, merchant: str = ""
) -> Receipt:
    """The receipt document of a journal record."""
    lines = [
        f"交易 Type:     {KINDS.get(rec.kind, rec.kind)}",
        f"终端 Terminal: {rec.term}",
        f"流水 Seq:      {rec.seq}",
        f"时间 Time:     {iso(rec.ts, tz)[:19].replace('T', ' ')}",
        f"方式 Method:   {METHODS.get(rec.method, rec.method)}",
        f"金额 Amount:   ￥{yuan(rec.amt)}",
    ]
    if rec.bal is not None:
        lines.append(f"余额 Balance:  ￥{yuan(rec.bal)}")
    if rec.off:
        lines.append("离线交易 offline, to be synced")
    if copy:
        lines.append(f"*** 补打 COPY {copy} ***")
    return Receipt(
        title=merchant_line(ident, merchant),
        lines=lines,
        qr=qr,
        footer=["扫码验证 scan to verify", "谢谢惠顾 thank you"],
    )


def shift_report(report: dict[str, Any], ident: Identity, tz: str, merchant: str = "") -> Receipt:
    """The printed Z report of a closed shift (:meth:`edge.pos.till.Till.report`): the same
    figures the server stores, no QR (it is not a journal record)."""

    def when(ms: int) -> str:
        return iso(ms, tz)[:19].replace("T", " ")

    def figure(t: dict[str, int]) -> str:
        return f"{t['count']:>4}  ￥{yuan(t['total_fen'])}"

    lines = [
        "交班报表 Z REPORT",
        f"终端 Terminal: {report['terminal_id']}",
        f"班次 Shift:    {report['shift_no']}",
        f"开班 Opened:   {when(report['opened_ms'])} {report['opened_by']}",
        f"交班 Closed:   {when(report['closed_ms'])} {report['closed_by']}",
        f"流水 Seq:      {report['first_seq']}-{report['last_seq']}",
        f"消费 Sales:    {figure(report['sales'])}",
    ]
    for method, t in report["sales_by_method"].items():
        if t["count"]:
            lines.append(f"  {METHODS.get(method, method)}: {figure(t)}")
    lines += [
        f"离线 Offline:  {figure(report['offline_sales'])}",
        f"退款 Refunds:  {figure(report['refunds'])}",
        f"净额 Net:      ￥{yuan(report['net_fen'])}",
    ]
    pending = report["pending_sync"]
    if pending["records"]:
        lines.append(
            f"未同步 Unsynced: {pending['records']} records, "
            f"offline ￥{yuan(pending['offline_fen'])}"
        )
    return Receipt(
        title=merchant_line(ident, merchant), lines=lines, qr=None, footer=["交班 END OF SHIFT"]
    )


def to_json(doc: Receipt) -> str:
    return json.dumps(
        {"title": doc.title, "lines": doc.lines, "qr": doc.qr, "footer": doc.footer},
        ensure_ascii=False,
    )


def from_json(text: str) -> Receipt:
    d = json.loads(text)
    return Receipt(d["title"], list(d["lines"]), d["qr"], list(d["footer"]))


@dataclass(frozen=True)
class Queued:
    id: int
    seq: int
    copy: int
    doc: Receipt
    tries: int


def service_receipt(title: str, kind: str, fields: list[tuple[str, str]], copy: int = 0) -> Receipt:
    """The receipt of a service at a self-service kiosk (a reissue, an electricity transfer):
    the same layout as a sale's, without the signed QR (no journal record stands behind it:
    the order id or request id names it at the service desk)."""
    lines = [f"业务 Service:  {kind}", *(f"{k} {v}" for k, v in fields)]
    if copy:
        lines.append(f"*** 补打 COPY {copy} ***")
    return Receipt(title=title, lines=lines, qr=None, footer=["请妥善保管 keep this receipt"])


class ReceiptQueue:
    """The durable print queue (``receipts.db``): documents waiting for the printer, printed
    in order, each kept with its tries and last error (:class:`edge.counter.Counter` prints)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        db.migrate(MIGRATIONS)
        self.clock = clock
        self._lock = threading.Lock()
        self.changed = threading.Condition()

    def catch_up(self) -> list[int]:
        """Queue what the terminal did since (a POS: its journal's sales); here nothing."""
        return []

    def record_ts(self, seq: int) -> int | None:
        """When the record a receipt of ``seq`` is for was made (None: not known)."""
        return None

    def enqueue(self, doc: Receipt, seq: int = 0, copy: int = 0) -> int:
        """Queue ``doc`` for the printer; its id."""
        with self.db.tx() as tx:
            rid = tx.insert(
                "INSERT INTO receipts (seq, copy, doc, state, tries, error, queued_ms, "
                "printed_ms) VALUES (?, ?, ?, 'queued', 0, '', ?, 0) RETURNING id",
                (seq, copy, to_json(doc), self.clock.now_ms()),
            )
        with self.changed:
            self.changed.notify_all()
        return rid

    def next(self) -> Queued | None:
        row = self.db.one(
            "SELECT id, seq, copy, doc, tries FROM receipts WHERE state = 'queued' "
            "ORDER BY id LIMIT 1"
        )
        if row is None:
            return None
        return Queued(
            int(row["id"]),
            int(row["seq"]),
            int(row["copy"]),
            from_json(row["doc"]),
            int(row["tries"]),
        )

    def printed(self, rid: int) -> None:
        with self.db.tx() as tx:
            tx.execute(
                "UPDATE receipts SET state = 'printed', printed_ms = ?, tries = tries + 1, "
                "error = '' WHERE id = ?",
                (self.clock.now_ms(), rid),
            )

    def failed(self, rid: int, error: str) -> None:
        with self.db.tx() as tx:
            tx.execute(
                "UPDATE receipts SET tries = tries + 1, error = ? WHERE id = ?",
                (error[:200], rid),
            )

    def counts(self) -> dict[str, Any]:
        rows = self.db.all("SELECT state, COUNT(*) AS n FROM receipts GROUP BY state")
        out: dict[str, Any] = {"queued": 0, "printed": 0}
        out.update({str(r["state"]): int(r["n"]) for r in rows})
        return out

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        return [
            {
                k: r[k]
                for k in ("id", "seq", "copy", "state", "tries", "error", "queued_ms", "printed_ms")
            }
            for r in self.db.all(
                "SELECT id, seq, copy, state, tries, error, queued_ms, printed_ms FROM receipts "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        ]


class PrintQueue(ReceiptQueue):
    """A POS's queue: a receipt for each sale or refund its journal holds, and copies."""

    def __init__(
        self,
        db: Database,
        journal: Journal,
        ident: Identity,
        clock: Clock,
        merchant: Callable[[], str] = lambda: "",
    ) -> None:
        """``merchant``: the name of the terminal's merchant now (the feed's)."""
        super().__init__(db, clock)
        self.merchant = merchant
        self.journal = journal
        self.ident = ident
        last = db.scalar("SELECT MAX(seq) FROM receipts")
        # a new queue takes only what is journaled from now on; so does one whose journal is
        # behind it (the journal was replaced: its seqs start again)
        head = journal.head_seq
        self._seen = head if last is None or int(last) > head else int(last)

    def catch_up(self) -> list[int]:
        """Queue a receipt for each sale journaled since the last one queued (the seqs)."""
        with self._lock:
            head = self.journal.head_seq
            if head <= self._seen:
                return []
            added = []
            for seq in range(self._seen + 1, head + 1):
                found = self.journal.record_and_hash(seq)
                if found is None:
                    continue
                rec, h = found
                if rec.kind in RECEIPT_KINDS:
                    self._add(rec, h, 0)
                    added.append(seq)
            self._seen = head
        if added:
            with self.changed:
                self.changed.notify_all()
        return added

    def record_ts(self, seq: int) -> int | None:
        found = self.journal.record_and_hash(seq)
        return None if found is None else found[0].ts

    def _add(self, rec: JournalRecord, record_hash: str, copy: int) -> int:
        qr = receipt_code.sign(receipt_code.facts_of(rec, record_hash), self.journal.key)
        doc = build(rec, qr, self.ident, self.journal.tz, copy, self.merchant())
        with self.db.tx() as tx:
            return tx.insert(
                "INSERT INTO receipts (seq, copy, doc, state, tries, error, queued_ms, "
                "printed_ms) VALUES (?, ?, ?, 'queued', 0, '', ?, 0) RETURNING id",
                (rec.seq, copy, to_json(doc), self.clock.now_ms()),
            )

    def reprint(self, seq: int | None = None) -> int:
        """Queue a copy of the receipt of ``seq`` (default: the last receipt); its id."""
        self.catch_up()  # a sale approved a moment ago has its receipt before its copy
        with self._lock:
            if seq is None:
                last = self.db.scalar("SELECT MAX(seq) FROM receipts")
                if last is None:
                    raise LookupError("no receipt to print again")
                seq = int(last)
            found = self.journal.record_and_hash(seq)
            if found is None or found[0].kind not in RECEIPT_KINDS:
                raise LookupError(f"no sale or refund with journal seq {seq} on this terminal")
            copies = int(self.db.scalar("SELECT COUNT(*) FROM receipts WHERE seq = ?", (seq,)))
            rid = self._add(found[0], found[1], copies)
        with self.changed:
            self.changed.notify_all()
        return rid

    def add_report(self, report: dict[str, Any]) -> int:
        """Queue the printed Z report of a shift just closed (``seq`` 0 in the queue: not a
        journal record, never a copy's source); its id."""
        self.catch_up()  # the shift's last receipts print before its report
        doc = shift_report(report, self.ident, self.journal.tz, self.merchant())
        with self._lock:
            return self.enqueue(doc)
