"""Journal durable append (:meth:`edge.journal.Journal.append`, real file, ``synchronous=FULL``)
on an empty journal and on one with a large queue (1,000,000 unsynced records by default).

Each append is interleaved with one raw SQLite commit of a journal-shaped row on another file
of the same disk, so the ratio to the floor is measured under the same conditions (docs/benchmarks.md:
append ≤ 1.2× the commit floor, flat up to 1,000,000 queued records).

The large journal is built by :mod:`sim.bench.journal_fixture` and cached.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.journal import Journal
from sim.bench import journal_fixture
from sim.bench.sqlite_floor import FloorDb
from sim.bench.stats import ratio, summary_ms
from sync.clock import SystemClock
from sync.db import Database
from sync.records import Entry

if TYPE_CHECKING:
    from sim.bench import Options


def _entry(i: int, clock: SystemClock) -> Entry:
    acct = 1 + i % 997
    return Entry(
        ts=clock.now_ms(),
        acct=acct,
        cred=f"card:C{acct:08d}:{acct:08X}",
        amt=1250,
        method="card",
        lim=5000,
        bal=8750,
        op="bench",
        auth=f"bench:{i}",
    )


def measure(journals: list[Journal], floor: FloorDb, n: int, warmup: int = 10) -> list[Any]:
    """``n`` rounds of one floor commit then one append to each journal, interleaved so that
    every figure sees the same disk at the same moments."""
    clock = SystemClock()
    floors: list[int] = []
    appends: list[list[int]] = [[] for _ in journals]
    for i in range(warmup + n):
        f = floor.commit_one()
        if i >= warmup:
            floors.append(f)
        for j, journal in enumerate(journals):
            entry = _entry(i, clock)
            t0 = time.perf_counter_ns()
            journal.append(entry)
            if i >= warmup:
                appends[j].append(time.perf_counter_ns() - t0)
    flo = summary_ms(floors)
    out: list[Any] = [flo]
    for samples in appends:
        app = summary_ms(samples)
        out.append(
            {
                "append": app,
                "ratio_p50": ratio(app["p50_ms"], flo["p50_ms"]),
                "ratio_p99": ratio(app["p99_ms"], flo["p99_ms"]),
            }
        )
    return out


def run(work: Path, opts: Options) -> dict[str, Any]:
    n = 200 if opts.quick else 2000
    queued = 20_000 if opts.quick else 1_000_000
    work.mkdir(parents=True, exist_ok=True)
    fixture = journal_fixture.obtain(work / "journal-big.db", queued, opts.cache_dir)
    key = journal_fixture.fixture_key()
    floor = FloorDb(work / "journal-floor.db")
    empty_db = Database(work / "journal-empty.db", synchronous="FULL")
    t0 = time.perf_counter()
    big_db = Database(work / "journal-big.db", synchronous="FULL")
    big = Journal(big_db, journal_fixture.TERMINAL, key, SystemClock(), journal_fixture.TZ)
    open_s = time.perf_counter() - t0
    try:
        queued_before = big.queued
        empty = Journal(empty_db, journal_fixture.TERMINAL, key, SystemClock(), journal_fixture.TZ)
        flo, at_empty, at_queue = measure([empty, big], floor, n)
    finally:
        floor.close()
        empty_db.close()
        big_db.close()
    at_queue.update(queued=queued_before, open_s=round(open_s, 3))
    return {
        "appends": n,
        "floor": flo,
        "empty": at_empty,
        "at_queue": at_queue,
        "flat_p50": ratio(at_queue["append"]["p50_ms"], at_empty["append"]["p50_ms"]),
        "flat_p99": ratio(at_queue["append"]["p99_ms"], at_empty["append"]["p99_ms"]),
        "fixture": fixture,
    }
