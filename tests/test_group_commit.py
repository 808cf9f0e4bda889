"""Sales that queue for the writer lock share the disk's flush (PostgreSQL):
:meth:`sync.db.Database.grouped`, :meth:`sync.db.Database.flush` and
:class:`sync.server.workers.GroupCommit`.

On a PostgreSQL cluster of their own that keeps its commits durable (``fsync`` on) and whose
WAL writer sleeps 10 s between rounds, so that a commit that did not wait for the disk stays
off it until something flushes (or a page of the WAL fills); the crash is ``pg_ctl stop -m
immediate``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from sim.harness.pg import PgUnavailable, TempCluster
from sync.db import CommitGroup, Database
from sync.errors import StoreError
from sync.server import workers
from sync.server.context import next_version
from sync.server.workers import GroupCommit

PLAIN = "ykt_plain"  # a role that is no superuser


@pytest.fixture(scope="module")
def cluster() -> Iterator[TempCluster]:
    try:
        pg = TempCluster(durable=True, max_connections=40).start()
    except PgUnavailable as exc:  # (make test installs it: a missing cluster is a failure)
        pytest.fail(str(exc))
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(f"CREATE ROLE {PLAIN} LOGIN")
    yield pg
    pg.stop()


@pytest.fixture
def url(cluster: TempCluster) -> str:
    url = cluster.create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x BIGINT PRIMARY KEY)")
        conn.execute("CREATE TABLE versions (name TEXT PRIMARY KEY, value BIGINT NOT NULL)")
        conn.execute("INSERT INTO versions VALUES ('feed', 0)")
        conn.execute(f"GRANT ALL ON t, versions TO {PLAIN}")
    return url


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    db = Database(url)
    yield db
    db.close()


def wal(db: Database) -> tuple[int, int]:
    """Where the WAL ends, and how far of it is on disk (bytes)."""
    row = db.one(
        "SELECT CAST(pg_current_wal_insert_lsn() - '0/0' AS BIGINT) AS at, "
        "CAST(pg_current_wal_flush_lsn() - '0/0' AS BIGINT) AS flushed"
    )
    assert row is not None
    return int(row["at"]), int(row["flushed"])


def insert(db: Database, x: int, *, defer: bool = True) -> int:
    """A write that asks to leave the disk for later; where the WAL ends after its commit."""
    with db.tx() as tx:
        if defer:
            tx.defer_commit()
        tx.execute("INSERT INTO t VALUES (?)", (x,))
    return wal(db)[0]


def test_a_commit_in_a_group_leaves_the_disk_for_the_flush(db: Database) -> None:
    group = CommitGroup(lambda: True)
    off_disk = 0
    for x in range(3):
        group.deferred = False
        with db.grouped(group):
            end = insert(db, x)
        assert group.deferred
        off_disk += wal(db)[1] < end
        db.flush()
        assert wal(db)[1] >= end, "the flush put the commit on disk"
    # the commit did not wait for its fsync (the WAL writer could have woken for one of them)
    assert off_disk >= 1
    # outside a group, the same transaction waits for the disk as always
    end = insert(db, 10)
    assert wal(db)[1] >= end


@pytest.mark.parametrize("what", ["no_request", "version", "notify", "group_says_no"])
def test_these_commits_wait_for_the_disk_in_a_group(db: Database, what: str) -> None:
    """Only a transaction that asks may leave the disk for later, never one that took a feed
    version (a terminal keeps it as its own at once) or sent a notification, and only when
    the group says so at the commit."""
    group = CommitGroup(lambda: what != "group_says_no")
    with db.grouped(group), db.tx() as tx:
        if what != "no_request":
            tx.defer_commit()
        tx.execute("INSERT INTO t VALUES (1)")
        if what == "version":
            assert next_version(tx) == 1
        elif what == "notify":
            db.notify("feed")
    assert not group.deferred
    at, flushed = wal(db)
    assert flushed >= at


def test_sqlite_commits_always_wait_for_the_disk(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")
    with db.tx() as tx:
        tx.execute("CREATE TABLE t (x INTEGER)")
    group = CommitGroup(lambda: True)
    with db.grouped(group), db.tx() as tx:
        tx.defer_commit()
        tx.execute("INSERT INTO t VALUES (1)")
    assert not group.deferred
    db.flush()
    db.close()


def run_jobs(
    worker: GroupCommit,
    db: Database,
    xs: list[int],
    fail: int | None = None,
    before: Callable[[], None] = lambda: None,
) -> list[object]:
    """Sales ``xs`` queued at once behind a job that holds the thread; each answer with how
    far the WAL was on disk when it arrived (or the error it raised).  Sale ``fail`` raises
    after its commit, a negative one before it writes; ``before`` runs as each begins."""

    def sale(x: int) -> int:
        before()
        if x < 0:
            raise ValueError("refused before it wrote")
        end = insert(db, x)
        if x == fail:
            raise ValueError("refused after its commit")
        return end

    async def one(x: int) -> object:
        try:
            end = await worker.run(sale, x)
        except (ValueError, StoreError) as exc:
            return exc
        return end, wal(db)[1]

    async def main() -> list[object]:
        gate = threading.Event()
        first = asyncio.ensure_future(worker.run(gate.wait, 10))
        tasks = [asyncio.ensure_future(one(x)) for x in xs]
        await asyncio.sleep(0)  # every task has queued its job (behind the gate)
        gate.set()
        assert await first
        return list(await asyncio.gather(*tasks))

    return asyncio.run(main())


def on_disk(answers: list[object]) -> bool:
    """Every answer arrived once its commit was on disk."""
    return all(isinstance(a, tuple) and a[1] >= a[0] for a in answers)


def counts(worker: GroupCommit) -> tuple[int, int, int]:
    return worker.flushes, worker.shared, worker.released


def test_queued_sales_share_the_last_ones_flush_and_each_is_answered_on_disk(
    db: Database,
) -> None:
    # (a group never ages here)
    worker = GroupCommit(db, "t-group", clock=lambda: 0.0)
    answers = run_jobs(worker, db, list(range(20)))
    assert on_disk(answers), "answered before its commit was on disk"
    assert worker.grouping
    # 15 held, then a flush of its own (a group holds 16); then 4 held, and the last sale's
    # commit waits for the disk and puts them there with its own
    assert workers.GROUP_JOBS == 16
    assert counts(worker) == (1, 1, 19)
    assert sorted(r["x"] for r in db.all("SELECT x FROM t")) == list(range(20))
    worker.close()


def test_a_group_ends_once_its_first_answer_waited_long_enough(db: Database) -> None:
    now = [0.0]

    def tick() -> None:  # each sale takes 0.6 of the wait a group allows
        now[0] += workers.GROUP_WAIT_S * 0.6

    worker = GroupCommit(db, "t-age", clock=lambda: now[0])
    answers = run_jobs(worker, db, list(range(8)), before=tick)
    assert on_disk(answers)
    # two held, the third waits for the disk; twice; then one held and the last
    assert counts(worker) == (0, 3, 5)
    worker.close()


def test_a_sale_alone_commits_and_is_answered_as_always(db: Database) -> None:
    worker = GroupCommit(db, "t-alone")

    async def main() -> tuple[int, int]:
        end = await worker.run(insert, db, 1)
        return end, wal(db)[1]

    end, flushed = asyncio.run(main())
    assert flushed >= end
    assert counts(worker) == (0, 0, 0)  # nothing held, nothing flushed
    worker.close()


def test_an_error_after_a_held_commit_is_answered_once_it_is_on_disk(db: Database) -> None:
    worker = GroupCommit(db, "t-error", clock=lambda: 0.0)
    answers = run_jobs(worker, db, list(range(5)), fail=2)
    assert isinstance(answers[2], ValueError)
    assert on_disk(answers[:2] + answers[3:])
    assert counts(worker) == (0, 1, 4)  # the failed one was held with the others
    assert sorted(r["x"] for r in db.all("SELECT x FROM t")) == list(range(5))
    worker.close()


def test_a_group_whose_last_sale_wrote_nothing_is_flushed_by_itself(db: Database) -> None:
    worker = GroupCommit(db, "t-last", clock=lambda: 0.0)
    answers = run_jobs(worker, db, [1, 2, 3, -1])
    assert on_disk(answers[:3]) and isinstance(answers[3], ValueError)
    assert counts(worker) == (1, 0, 3)
    worker.close()


def test_answered_sales_survive_a_crash_and_a_held_commit_does_not_without_its_flush(
    cluster: TempCluster, url: str
) -> None:
    db = Database(url)
    worker = GroupCommit(db, "t-crash", clock=lambda: 0.0)
    answers = run_jobs(worker, db, list(range(12)))
    assert on_disk(answers) and worker.released == 11
    # commits a group left off the disk, and no flush followed: a crash loses them (what
    # the flush is for).  The WAL writer, woken when a page of the WAL fills, may have written
    # the earlier ones; the last ends in a page not yet full, off the disk until its 10 s.
    group = CommitGroup(lambda: True)
    with db.grouped(group):
        ends = [insert(db, x) for x in (100, 101, 102)]
    assert group.deferred
    assert wal(db)[1] < ends[-1], "the last commit was on disk before the crash"
    worker.close()
    db.close()
    cluster.crash()
    again = Database(url)
    kept = {r["x"] for r in again.all("SELECT x FROM t")}
    again.close()
    assert set(range(12)) <= kept, "an answered sale was lost"
    assert 102 not in kept


def plain_url(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://{PLAIN}@", 1)


def refuse_wal_messages(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC"
        )


def test_a_role_that_may_not_flush_gets_durable_commits(url: str) -> None:
    refuse_wal_messages(url)
    db = Database(plain_url(url))
    with pytest.raises(StoreError):
        db.flush()
    worker = GroupCommit(db, "t-plain", clock=lambda: 0.0)
    answers = run_jobs(worker, db, list(range(6)))
    assert on_disk(answers)
    assert worker.grouping is False and counts(worker) == (0, 0, 0)
    worker.close()
    db.close()


def test_a_flush_that_fails_answers_every_held_sale_with_an_error(url: str) -> None:
    db = Database(plain_url(url))
    worker = GroupCommit(db, "t-fails", clock=lambda: 0.0)
    assert on_disk(run_jobs(worker, db, [1, 2]))  # the thread found it could flush
    assert worker.grouping
    refuse_wal_messages(url)
    answers = run_jobs(worker, db, [10, 11, 12, -1])  # the last wrote nothing: a flush
    assert all(isinstance(a, StoreError) and a.http_status == 503 for a in answers[:3])
    assert "may not be on disk" in str(answers[0])
    assert isinstance(answers[3], ValueError)
    worker.close()
    db.close()
