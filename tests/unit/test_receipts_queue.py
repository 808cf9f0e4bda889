"""The durable print queue (edge/receipts.py): one receipt per sale journaled from the queue's
start on, none lost across a restart (sales journaled while no queue ran are caught up), copies
on request, and each receipt's QR signed over the record it prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cache import Cache
from edge.identity import Identity
from edge.journal import Journal
from edge.receipts import PrintQueue
from sync import receipt
from sync.clock import ManualClock
from sync.crypto import SigningKey
from sync.db import Database
from sync.records import Entry, FeedPage

TZ = "Asia/Shanghai"
IDENT = Identity("T00042", "一食堂 3号窗口", "pos", "http://server", "campus", TZ)
NOON = 1_733_371_200_000


def _sale(journal: Journal, clock: ManualClock, amt: int, bal: int | None = 5000) -> int:
    clock.advance(1000)
    entry = Entry(ts=clock.now_ms(), acct=7, cred="10000001", amt=amt, method="card", bal=bal)
    return journal.append(entry).seq


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Journal, ManualClock, Path]:
    clock = ManualClock(NOON)
    key = SigningKey.from_seed(bytes(range(32)))
    journal = Journal(Database(tmp_path / "journal.db"), IDENT.terminal_id, key, clock, TZ)
    return journal, clock, tmp_path / "receipts.db"


def test_sales_queued_once_and_caught_up_after_a_restart(
    parts: tuple[Journal, ManualClock, Path],
) -> None:
    journal, clock, path = parts
    _sale(journal, clock, 100)  # before the queue existed: no receipt
    q = PrintQueue(Database(path), journal, IDENT, clock)
    assert q.catch_up() == []
    s2, s3 = _sale(journal, clock, 1250), _sale(journal, clock, 300, bal=None)
    assert q.catch_up() == [s2, s3] and q.catch_up() == []
    job = q.next()
    assert job is not None and job.seq == s2 and job.copy == 0
    assert job.doc.title == IDENT.name
    assert "金额 Amount:   ￥12.50" in job.doc.lines and "余额 Balance:  ￥50.00" in job.doc.lines
    q.printed(job.id)
    q.db.close()
    s4 = _sale(journal, clock, 700)  # journaled while no queue ran (a crash after the approval)
    q = PrintQueue(Database(path), journal, IDENT, clock)
    assert q.catch_up() == [s4]
    assert q.counts() == {"queued": 2, "printed": 1}
    job = q.next()
    assert job is not None and job.seq == s3
    assert not any(line.startswith("余额") for line in job.doc.lines)  # balance unknown
    q.failed(job.id, "paper out")
    assert q.next() == job.__class__(job.id, job.seq, 0, job.doc, 1)  # still first, one try


def test_a_copy_on_request_and_a_signed_code_of_the_record(
    parts: tuple[Journal, ManualClock, Path],
) -> None:
    journal, clock, path = parts
    q = PrintQueue(Database(path), journal, IDENT, clock)
    with pytest.raises(LookupError):
        q.reprint()
    seq = _sale(journal, clock, 1250)
    q.catch_up()
    q.reprint(seq)
    jobs = []
    while (job := q.next()) is not None:
        jobs.append(job)
        q.printed(job.id)
    assert [(j.seq, j.copy) for j in jobs] == [(seq, 0), (seq, 1)]
    assert "*** 补打 COPY 1 ***" in jobs[1].doc.lines
    with pytest.raises(LookupError):
        q.reprint(seq + 5)
    assert jobs[0].doc.qr is not None
    facts, sig = receipt.parse(jobs[0].doc.qr)
    rec, h = journal.record_and_hash(seq) or (None, "")
    assert rec is not None and facts == receipt.facts_of(rec, h)
    assert receipt.genuine(facts, sig, journal.key.public)


def test_a_replaced_journal_starts_the_receipts_again(
    parts: tuple[Journal, ManualClock, Path], tmp_path: Path
) -> None:
    journal, clock, path = parts
    q = PrintQueue(Database(path), journal, IDENT, clock)
    for amt in (100, 200, 300):
        _sale(journal, clock, amt)
    assert len(q.catch_up()) == 3
    q.db.close()
    fresh = Journal(Database(tmp_path / "new.db"), IDENT.terminal_id, journal.key, clock, TZ)
    q = PrintQueue(Database(path), fresh, IDENT, clock)  # its seqs start at 1 again
    assert q.catch_up() == [] and q.catch_up() == []
    assert q.catch_up() == [] and _sale(fresh, clock, 400) == 1
    assert q.catch_up() == [1]


def test_a_shift_report_prints_after_the_shifts_receipts(
    parts: tuple[Journal, ManualClock, Path],
) -> None:
    journal, clock, path = parts
    q = PrintQueue(Database(path), journal, IDENT, clock)
    seq = _sale(journal, clock, 1250)  # not caught up yet: add_report does it first
    sales = {"count": 1, "total_fen": 1250}
    none = {"count": 0, "total_fen": 0}
    report = {
        "terminal_id": IDENT.terminal_id, "shift_no": 3, "opened_ms": NOON,
        "closed_ms": clock.now_ms(), "opened_by": "C01", "closed_by": "C01", "first_seq": 1,
        "last_seq": seq, "sales": sales,
        "sales_by_method": {"card": sales, "qr-forward": none, "qr-reverse": none},
        "offline_sales": none, "refunds": {"count": 1, "total_fen": 250},
        "refunds_by_method": {}, "net_fen": 1000,
        "pending_sync": {"records": 2, "offline_fen": 0},
    }  # fmt: skip
    q.add_report(report)
    jobs = []
    while (job := q.next()) is not None:
        jobs.append(job)
        q.printed(job.id)
    assert [j.seq for j in jobs] == [seq, 0]
    z = jobs[1].doc
    assert z.qr is None and z.title == IDENT.name and z.lines[0] == "交班报表 Z REPORT"
    assert "班次 Shift:    3" in z.lines and "净额 Net:      ￥10.00" in z.lines
    assert "消费 Sales:       1  ￥12.50" in z.lines and "退款 Refunds:     1  ￥2.50" in z.lines
    assert "  校园卡 card:    1  ￥12.50" in z.lines
    assert not any("付款码" in line for line in z.lines)  # methods without sales left out
    assert "未同步 Unsynced: 2 records, offline ￥0.00" in z.lines
    q.reprint()  # a copy is of the last sale's receipt, never of the report
    job = q.next()
    assert job is not None and (job.seq, job.copy) == (seq, 1)


def test_the_merchant_heads_the_receipt(parts: tuple[Journal, ManualClock, Path]) -> None:
    journal, clock, path = parts
    merchant = ["第一食堂"]  # as the feed says now
    q = PrintQueue(Database(path), journal, IDENT, clock, merchant=lambda: merchant[0])
    _sale(journal, clock, 100)
    q.catch_up()
    merchant[0] = ""  # a terminal of no merchant of its own: its name alone
    _sale(journal, clock, 200)
    q.catch_up()
    titles = []
    while (job := q.next()) is not None:
        titles.append(job.doc.title)
        q.printed(job.id)
    assert titles == ["第一食堂 一食堂 3号窗口", "一食堂 3号窗口"]


def test_the_terminal_learns_its_merchant_from_the_feed(tmp_path: Path) -> None:
    cache = Cache(Database(tmp_path / "cache.db", synchronous="NORMAL"))
    assert cache.merchant_name == ""
    cache.apply(FeedPage(version=1, merchant_name="第一食堂"))
    cache.apply(FeedPage(version=2))  # a page without it (an older server) changes nothing
    assert cache.merchant_name == "第一食堂"
    cache.apply(FeedPage(version=3, merchant_name=""))  # moved to no merchant of its own
    assert cache.merchant_name == ""
