"""The one database layer (sync/db/) on both of its backends: the same Tx API, rows, errors,
transactions and migrations on SQLite and on PostgreSQL (tests/dbs.py), the same SQL giving the
same answers, and what each backend states for itself (column types, parameter marks).
tests/test_db_statements.py runs every statement of the code on both engines."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync.db import Database, Migrations, placeholders, value_rows
from sync.db.backend import fill_types
from sync.db.sqlite import TYPES as SQLITE_TYPES
from sync.errors import StoreConflict, StoreError
from sync.server.context import current_version, next_version
from tests import dbs
from tests.helpers import ykt
from tests.turns import Turns

SCHEMA = Migrations()
SCHEMA.add(
    "0001",
    """
    CREATE TABLE things (
        id {id},
        name {text} NOT NULL UNIQUE,
        n {int} NOT NULL DEFAULT 0,
        big {int},
        flag {int} NOT NULL DEFAULT 0
    );
    CREATE TABLE pairs (a {text} NOT NULL, b {int} NOT NULL, v {text}, PRIMARY KEY (a, b))
        {without_rowid};
    CREATE TABLE versions (name {text} PRIMARY KEY, value {int} NOT NULL);
    INSERT INTO versions (name, value) VALUES ('feed', 0)
    """,
)


def open_db(tmp: Path, migrations: Migrations | None = SCHEMA) -> Database:
    url = dbs.fresh_url()
    return dbs.opened(url, Database(url or tmp / "t.db", migrations=migrations))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = open_db(tmp_path)
    yield d
    d.close()


def test_the_tx_api_is_the_same_on_both(db: Database) -> None:
    with db.tx() as tx:
        first = tx.insert(
            "INSERT INTO things (name, n, big) VALUES (?, ?, ?) RETURNING id", ("a", 1, 2**62)
        )
        second = tx.insert("INSERT INTO things (name) VALUES (:name) RETURNING id", {"name": "b"})
        assert (first, second) == (1, 2)
        assert (
            tx.executemany(
                "INSERT INTO things (name, n, flag) VALUES (?, ?, ?)",
                [("c", 3, True), ("d", 4, False)],
            )
            == 2
        )
        assert tx.execute("UPDATE things SET n = n + 10 WHERE n >= ?", (3,)) == 2
        row = tx.one("SELECT * FROM things WHERE name = ?", ("a",))
        assert row is not None
        assert (row[0], row["name"], row["big"]) == (1, "a", 2**62)  # 64-bit integers
        assert dict(row) == {"id": 1, "name": "a", "n": 1, "big": 2**62, "flag": 0}
        assert [r["flag"] for r in tx.all("SELECT flag FROM things ORDER BY id")] == [0, 0, 1, 0]
        assert tx.scalar("SELECT SUM(n) FROM things") == 1 + 0 + 13 + 14  # an int, not Decimal
        assert type(tx.scalar("SELECT SUM(n) FROM things")) is int
        assert tx.scalar("SELECT name FROM things WHERE id = ?", (99,)) is None
    assert db.scalar("SELECT COUNT(*) FROM things") == 4


def test_many_rows_at_once(db: Database) -> None:
    """insert_rows and executemany of many rows (PostgreSQL sends insert_rows as COPY): NULLs,
    bools, big numbers, quotes and tabs survive; explicit ids move the identity; a duplicate
    fails it all."""
    rows = [(i, f"n{i}\t'\"\\", i * 2**40, None if i % 2 else True) for i in range(1, 51)]
    with db.tx() as tx:
        assert (
            tx.insert_rows("things", ("id", "name", "big", "flag"), [(*r[:3], 0) for r in rows])
            == 50
        )
        assert tx.insert("INSERT INTO things (name) VALUES ('after') RETURNING id") == 51
        tx.insert_rows("pairs", ("a", "b", "v"), [("p", i, r[3]) for i, r in enumerate(rows)])
    got = db.all("SELECT id, name, big FROM things WHERE id <= 50 ORDER BY id")
    assert [tuple(r) for r in got] == [r[:3] for r in rows]
    assert db.scalar("SELECT COUNT(*) FROM pairs WHERE v IS NULL") == 25
    assert db.scalar("SELECT COUNT(*) FROM pairs WHERE v = '1'") == 25
    with db.tx() as tx:  # many rows in one INSERT statement
        sql = "INSERT INTO pairs (a, b, v) VALUES " + ", ".join(["(?, ?, ?)"] * 30)
        assert tx.execute(sql, [v for i in range(30) for v in ("m", i, f"m{i}")]) == 30
        tx.insert_rows("things", ("id", "name"), [(100 + i, f"t{i}") for i in range(25)])
        assert tx.insert("INSERT INTO things (name) VALUES ('after many') RETURNING id") == 125
    assert db.scalar("SELECT v FROM pairs WHERE a = 'm' AND b = 29") == "m29"
    for insert in ("executemany", "insert_rows"):
        with pytest.raises(StoreConflict), db.tx() as tx:
            if insert == "executemany":
                tx.executemany(
                    "INSERT INTO pairs (a, b, v) VALUES (?, ?, ?)",
                    [("q", i % 30, "x") for i in range(40)],
                )
            else:
                tx.insert_rows("pairs", ("a", "b", "v"), [("q", i % 30, "x") for i in range(40)])
        assert db.scalar("SELECT COUNT(*) FROM pairs WHERE a = 'q'") == 0


def test_text_compares_and_sorts_by_bytes_and_lower_like_ignores_ascii_case(db: Database) -> None:
    names = ["b", "B", "a:2", "a-1", "aa", "Z", "é"]
    with db.tx() as tx:
        tx.executemany("INSERT INTO things (name) VALUES (?)", [(n,) for n in names])
    got = [r["name"] for r in db.all("SELECT name FROM things ORDER BY name")]
    assert got == sorted(names)  # Python sorts str by code point = UTF-8 byte order
    assert db.scalar("SELECT COUNT(*) FROM things WHERE LOWER(name) LIKE 'b'") == 2
    assert db.scalar("SELECT COUNT(*) FROM things WHERE LOWER(name) LIKE ?", ("%É",)) == 0
    assert db.scalar("SELECT COUNT(*) FROM things WHERE LOWER(name) LIKE ?", ("%é",)) == 1
    assert db.scalar("SELECT COUNT(*) FROM things WHERE name > ?", ("Z",)) == 5
    with db.tx() as tx:  # LOWER of a text column changes ASCII letters only, on both
        tx.execute("INSERT INTO things (name) VALUES ('ÉCOLE Ab')")
    assert db.scalar("SELECT LOWER(name) FROM things WHERE name = 'ÉCOLE Ab'") == "École ab"


def test_identity_moves_past_ids_given_explicitly(db: Database) -> None:
    with db.tx() as tx:
        tx.insert_rows("things", ("id", "name"), [(10, "ten")])
        assert tx.insert("INSERT INTO things (name) VALUES (?) RETURNING id", ("next",)) == 11
        with pytest.raises(StoreError, match="RETURNING"):
            tx.insert("INSERT INTO things (name) VALUES (?)", ("no id back",))


def test_an_insert_goes_into_a_batch_only_where_that_saves_a_round_trip(db: Database) -> None:
    """Tx.insert_statement: on PostgreSQL a few rows without identity values are one plain
    INSERT for a batch; many rows (COPY), identity values given (the identity must move past
    them) and SQLite (in process: no round trip to save) get None, and insert_rows does it."""
    rows = [("a", 1, "x"), ("b", 2, "y")]
    with db.tx() as tx:
        stmt = tx.insert_statement("pairs", ("a", "b", "v"), rows)
        if db.dialect == "postgresql":
            assert stmt is not None
            got = tx.batch([stmt, ("SELECT a, b, v FROM pairs ORDER BY a", ())])
            assert [tuple(r) for r in got[1]] == rows
            many = [(f"m{i}", i, None) for i in range(50)]
            assert tx.insert_statement("pairs", ("a", "b", "v"), many) is None
            assert tx.insert_statement("things", ("id", "name"), [(9, "n9")]) is None
            assert tx.insert_statement("things", ("name",), [("n9",)]) is not None
        else:
            assert stmt is None
        assert tx.insert_statement("pairs", ("a", "b", "v"), []) is None


def test_statements_in_one_batch_and_set_based_updates(db: Database) -> None:
    """Tx.batch (PostgreSQL: one pipeline) runs its statements in order and gives the rows of
    each; a failing one fails the transaction like a statement alone.  ``value_rows`` makes the
    VALUES list of one UPDATE … FROM that changes many rows, each from its own row."""
    with db.tx() as tx:
        tx.insert_rows("things", ("id", "name", "n"), [(i, f"n{i}", i) for i in range(1, 8)])
        got = tx.batch(
            [
                ("UPDATE things SET n = n + 100 WHERE id = ?", (1,)),
                ("SELECT n FROM things WHERE id = ?", (1,)),
                ("DELETE FROM things WHERE id = ?", (7,)),
                ("SELECT id FROM things WHERE id > ? ORDER BY id", (4,)),
            ]
        )
        assert [[tuple(r) for r in rows] for rows in got] == [[], [(101,)], [], [(5,), (6,)]]
        moves = [("n2", 5), ("n4", -3), ("n6", 2**40)]
        changed = tx.execute(
            "UPDATE things SET n = n + CAST(v.column2 AS BIGINT) "
            f"FROM (VALUES {value_rows(len(moves), 2)}) AS v WHERE things.name = v.column1",
            [x for m in moves for x in m],
        )
        assert changed == 3
    assert [tuple(r) for r in db.all("SELECT id, n FROM things ORDER BY id")] == [
        (1, 101),
        (2, 7),
        (3, 3),
        (4, 1),
        (5, 5),
        (6, 6 + 2**40),
    ]
    with pytest.raises(StoreConflict), db.tx() as tx:
        tx.batch(
            [
                ("UPDATE things SET n = 0 WHERE id = ?", (1,)),
                ("INSERT INTO things (name) VALUES (?)", ("n2",)),  # taken
                ("UPDATE things SET n = 0 WHERE id = ?", (2,)),
            ]
        )
    assert db.scalar("SELECT SUM(n) FROM things WHERE id IN (1, 2)") == 108  # rolled back
    with pytest.raises(ValueError):
        value_rows(0, 2)


def test_constraint_violations_are_conflicts_and_roll_back_the_transaction(db: Database) -> None:
    with db.tx() as tx:
        tx.execute("INSERT INTO things (name) VALUES ('x')")
    with pytest.raises(StoreConflict), db.tx() as tx:
        tx.execute("INSERT INTO things (name) VALUES ('y')")
        tx.execute("INSERT INTO things (name) VALUES ('x')")
    assert db.scalar("SELECT COUNT(*) FROM things") == 1  # 'y' rolled back with it
    with pytest.raises(RuntimeError), db.tx() as tx:
        tx.execute("INSERT INTO things (name) VALUES ('z')")
        raise RuntimeError("the body failed")
    assert db.scalar("SELECT COUNT(*) FROM things") == 1


def test_a_write_left_for_later_runs_before_the_next_statement_or_at_the_commit(
    db: Database,
) -> None:
    """Tx.later: a write whose answer nobody reads goes with the transaction's next statement
    (which sees it) or with its commit; its error ends the transaction as a statement's would,
    nothing of it kept."""
    with db.tx() as tx:
        tx.later("INSERT INTO things (name) VALUES (?)", ("a",))
        assert tx.scalar("SELECT COUNT(*) FROM things WHERE name = 'a'") == 1
        tx.later("INSERT INTO things (name, n) VALUES (?, ?)", ("b", 2))
    assert [tuple(r) for r in db.all("SELECT name, n FROM things ORDER BY id")] == [
        ("a", 0),
        ("b", 2),
    ]
    with pytest.raises(StoreConflict), db.tx() as tx:
        tx.execute("INSERT INTO things (name) VALUES ('c')")
        tx.later("INSERT INTO things (name) VALUES (?)", ("a",))  # taken: refused
    assert db.scalar("SELECT COUNT(*) FROM things") == 2  # 'c' rolled back with it
    with db.tx() as tx:  # the connection goes on
        tx.later("UPDATE things SET n = n + 1 WHERE name = ?", ("a",))
    assert db.scalar("SELECT n FROM things WHERE name = 'a'") == 1


def test_a_last_batch_ends_the_transaction(db: Database) -> None:
    """Tx.batch(last=True): the rows of each statement, and the transaction committed (on
    PostgreSQL in their round trip); a refused one keeps nothing."""
    with db.tx() as tx:
        tx.execute("INSERT INTO things (name) VALUES ('a')")
        got = tx.batch(
            [
                ("INSERT INTO things (name) VALUES (?) RETURNING name", ("b",)),
                ("SELECT COUNT(*) AS n FROM things", ()),
            ],
            last=True,
        )
    assert [[tuple(r) for r in rows] for rows in got] == [[("b",)], [(2,)]]
    assert db.scalar("SELECT COUNT(*) FROM things") == 2
    with pytest.raises(StoreConflict), db.tx() as tx:
        tx.later("INSERT INTO things (name) VALUES ('c')")
        tx.batch([("INSERT INTO things (name) VALUES (?)", ("a",))], last=True)
    assert db.scalar("SELECT COUNT(*) FROM things") == 2
    with db.tx() as tx:
        tx.batch([("DELETE FROM things WHERE name = ?", ("b",))], last=True)
    assert db.scalar("SELECT COUNT(*) FROM things") == 1


def test_reads_outside_a_transaction_give_each_statement_its_rows(db: Database) -> None:
    with db.tx() as tx:
        tx.execute("INSERT INTO things (name, n) VALUES ('a', 5)")
    got = db.reads(
        [
            ("SELECT n FROM things WHERE name = ?", ("a",)),
            ("SELECT n FROM things WHERE name = ?", ("zz",)),
            ("SELECT COUNT(*) FROM things", ()),
        ]
    )
    assert [[tuple(r) for r in rows] for rows in got] == [[(5,)], [], [(1,)]]
    with db.tx() as tx:  # inside a transaction: its own writes are seen
        tx.execute("INSERT INTO things (name) VALUES ('b')")
        assert db.reads([("SELECT COUNT(*) FROM things", ())])[0][0][0] == 2


@pytest.mark.postgres
def test_what_goes_together_takes_one_round_trip(db_kind: str) -> None:
    """PostgreSQL: counted by a relay between the pool and the server (tests/turns.py): a
    write left for later goes with the commit, a last batch takes its commit along, reads
    outside a transaction go together.  (A statement and then the commit: two.)"""
    url = dbs.fresh_url()
    assert db_kind == "postgres" and url is not None
    dbs.opened(url, Database(url, migrations=SCHEMA))
    relay, through = Turns.for_url(url)
    db = Database(through)
    try:
        db.all("SELECT 1")  # the pool's connection made

        def turns(work: Callable[[], object]) -> int:
            relay.reset()
            work()
            return relay.count

        def one_then_commit() -> None:
            with db.tx() as tx:
                tx.execute("INSERT INTO things (name) VALUES ('a')")

        def later_then_commit() -> None:
            with db.tx() as tx:
                tx.later("INSERT INTO things (name) VALUES ('b')")
                tx.later("UPDATE things SET n = 7 WHERE name = 'b'")

        def last_batch() -> None:
            with db.tx(exclusive=False, durable=False) as tx:
                tx.batch([("INSERT INTO things (name) VALUES ('c') RETURNING id", ())], last=True)

        def reads() -> None:
            db.reads([("SELECT 1", ()), ("SELECT 2", ()), ("SELECT COUNT(*) FROM things", ())])

        def batch_later_commit() -> None:
            with db.tx() as tx:
                tx.batch([("SELECT n FROM things WHERE name = 'b'", ())])
                tx.later("UPDATE things SET n = 8 WHERE name = 'b'")

        assert turns(one_then_commit) == 2  # the relay counts
        assert turns(later_then_commit) == 1
        assert turns(last_batch) == 1
        assert turns(reads) == 1
        assert turns(batch_later_commit) == 2
        assert db.scalar("SELECT n FROM things WHERE name = 'b'") == 8
        assert db.scalar("SELECT COUNT(*) FROM things") == 3
    finally:
        db.close()
        relay.close()


@pytest.mark.postgres
def test_a_failed_pipeline_leaves_no_statement_counted_prepared_that_is_not(
    db_kind: str,
) -> None:
    """PostgreSQL: psycopg prepares a statement once it ran five times, and in a pipeline
    counts it prepared once its PREPARE is sent; but the server skips every message after an
    error until the pipeline's end.  A replay's nonce (its INSERT first in a sale's first
    round trip) failed just as the sale's reads were being prepared: every later sale on that
    connection failed with 'prepared statement "_pg3_N" does not exist'.  Found by a test of
    revoked terminals (tests/test_server_auth.py)."""
    url = dbs.fresh_url()
    assert db_kind == "postgres" and url is not None
    db = dbs.opened(url, Database(url, migrations=SCHEMA))
    try:
        with db.tx() as tx:
            tx.execute("INSERT INTO things (name) VALUES ('taken')")
        read = ("SELECT COUNT(*) FROM things WHERE name = ?", ("taken",))
        taken = ("INSERT INTO things (name) VALUES ('taken')", ())
        with pytest.raises(StoreConflict), db.tx() as tx:  # an earlier failure: rolled back
            tx.batch([taken])
        for _ in range(5):  # psycopg's threshold: prepared the next time
            with db.tx() as tx:
                assert tx.batch([read])[0][0][0] == 1
        with pytest.raises(StoreConflict), db.tx() as tx:  # PREPARE sent after the error
            tx.batch([taken, read])
        for _ in range(3):  # the same connection (one thread, one at a time: the pool's last)
            with db.tx() as tx:
                assert tx.batch([read])[0][0][0] == 1
            assert db.reads([read])[0][0][0] == 1
    finally:
        db.close()


@pytest.mark.postgres
def test_a_rider_commits_with_the_next_write_or_fails_it_in_the_same_round_trips(
    db_kind: str,
) -> None:
    """PostgreSQL (:meth:`sync.db.Database.rider`, how a request's nonce claim goes with its
    work): the rider's statements go in the first round trip of the next write transaction
    of the thread (reads do not take them), commit with it, or fail it and nothing of it
    stays; a transaction that did not commit hands them on to the next."""
    url = dbs.fresh_url()
    assert db_kind == "postgres" and url is not None
    dbs.opened(url, Database(url, migrations=SCHEMA))
    relay, through = Turns.for_url(url)
    db = Database(through)
    claim = ("INSERT INTO pairs (a, b) VALUES (?, ?)", ("nonce", 1))

    def names() -> list[str]:
        return [r["name"] for r in db.all("SELECT name FROM things ORDER BY name")]

    try:
        db.all("SELECT 1")  # the pool's connection made
        with db.rider([claim]) as rider:
            assert rider is not None and not rider.committed
            with db.read() as rd:
                rd.all("SELECT COUNT(*) FROM things")
            with pytest.raises(StoreError), db.read() as rd:  # a failed read keeps it waiting
                rd.all("SELECT nope FROM things")
            db.reads([("SELECT 1", ())])
            relay.reset()
            with db.tx() as tx:
                tx.execute("INSERT INTO things (name) VALUES ('a')")
            assert relay.count == 2  # as without the rider: the statement, the commit
            assert rider.committed
            with db.tx() as tx:  # the next one goes alone
                tx.execute("INSERT INTO things (name) VALUES ('b')")
        assert db.scalar("SELECT COUNT(*) FROM pairs") == 1 and names() == ["a", "b"]

        with db.rider([claim]) as rider:  # the same key again: refused with what it rides
            assert rider is not None
            for name in ("c", "d"):
                with pytest.raises(StoreConflict), db.tx() as tx:
                    tx.execute("INSERT INTO things (name) VALUES (?)", (name,))
            assert not rider.committed
        with db.tx() as tx:  # out of the block: nothing rides
            tx.execute("INSERT INTO things (name) VALUES ('e')")
        assert names() == ["a", "b", "e"]

        other = ("INSERT INTO pairs (a, b) VALUES (?, ?)", ("nonce", 2))
        with db.rider([other]) as rider:
            assert rider is not None
            with pytest.raises(ZeroDivisionError), db.tx() as tx:
                tx.execute("INSERT INTO things (name) VALUES ('f')")
                raise ZeroDivisionError
            assert not rider.committed
            with db.tx(exclusive=False, durable=False):
                pass  # no statement of its own: the rider and the commit, one round trip
            assert rider.committed
        assert db.scalar("SELECT COUNT(*) FROM pairs") == 2 and "f" not in names()
        with db.rider([other]) as rider:  # a block that writes nothing sends nothing
            assert rider is not None and not rider.committed
        with pytest.raises(StoreError), db.rider([claim]), db.rider([other]):
            pass  # one rider at a time
    finally:
        db.close()
        relay.close()


def test_a_rider_is_for_postgresql_only(db: Database) -> None:
    with db.rider([("INSERT INTO things (name) VALUES ('x')", ())]) as rider:
        assert (rider is None) == (db.dialect == "sqlite")
    assert db.scalar("SELECT COUNT(*) FROM things") == 0


def test_errors_are_store_errors_and_the_connection_survives(db: Database) -> None:
    with pytest.raises(StoreError):
        db.all("SELECT nope FROM things")
    with pytest.raises(StoreError), db.tx() as tx:
        tx.execute("SELECT * FROM no_such_table")
    with pytest.raises(StoreError), db.tx(), db.tx():
        pass  # no transaction inside a transaction
    assert db.scalar("SELECT COUNT(*) FROM things") == 0


def test_upserts_ignores_and_empty_lists(db: Database) -> None:
    with db.tx() as tx:
        for v in ("one", "two"):
            tx.execute(
                "INSERT INTO pairs (a, b, v) VALUES (?, ?, ?) "
                "ON CONFLICT (a, b) DO UPDATE SET v = excluded.v",
                ("k", 1, v),
            )
        assert (
            tx.execute("INSERT INTO pairs (a, b, v) VALUES ('k', 1, 'x') ON CONFLICT DO NOTHING")
            == 0
        )
        for v in ("r1", "r2"):
            tx.execute(
                "INSERT INTO pairs (a, b, v) VALUES ('k', 2, ?) "
                "ON CONFLICT (a, b) DO UPDATE SET v = excluded.v",
                (v,),
            )
        assert [tuple(r) for r in tx.all("SELECT v FROM pairs ORDER BY b")] == [("two",), ("r2",)]
        with pytest.raises(ValueError, match="empty"):
            placeholders(0)  # an empty IN list: the caller decides what it means
        assert tx.all(f"SELECT * FROM pairs WHERE b IN ({placeholders(1)})", [9]) == []
        assert (
            tx.scalar(f"SELECT COUNT(*) FROM pairs WHERE b NOT IN ({placeholders(2)})", [8, 9]) == 2
        )
        sub = "SELECT COUNT(*) FROM (SELECT a FROM pairs UNION ALL SELECT name FROM things) AS u"
        assert tx.scalar(sub) == 2
        assert tx.scalar("SELECT CASE WHEN ? > ? THEN ? ELSE ? END", (3, 5, 3, 5)) == 5


def test_a_read_transaction_sees_one_snapshot(db: Database) -> None:
    with db.read() as rd:
        before = rd.scalar("SELECT COUNT(*) FROM things")
        done = threading.Event()

        def write() -> None:
            with db.tx() as tx:
                tx.execute("INSERT INTO things (name) VALUES ('later')")
            done.set()

        t = threading.Thread(target=write)
        t.start()
        assert done.wait(10)  # a writer never waits for a reader
        t.join()
        assert rd.scalar("SELECT COUNT(*) FROM things") == before
    assert db.scalar("SELECT COUNT(*) FROM things") == before + 1


def test_a_writer_waits_its_turn_then_gives_up_clearly(tmp_path: Path) -> None:
    """A second writer waits for the first (SQLite's busy timeout, PostgreSQL's lock_timeout on
    the writer lock) and then fails with a StoreError; its connection is fine afterwards."""
    url = dbs.fresh_url()
    db = dbs.opened(url, Database(url or tmp_path / "t.db", migrations=SCHEMA, busy_timeout_ms=300))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.tx() as tx:
            tx.execute("INSERT INTO things (name) VALUES ('first')")
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(10)
    try:
        with pytest.raises(StoreError), db.tx() as tx:
            tx.execute("INSERT INTO things (name) VALUES ('second')")
    finally:
        release.set()
        t.join(10)
    for _ in range(3):  # the same thread's connection works again
        with db.tx() as tx:
            tx.execute("UPDATE things SET n = n + 1")
    assert [tuple(r) for r in db.all("SELECT name, n FROM things")] == [("first", 3)]
    db.close()


def test_reads_inside_a_write_transaction_see_its_writes(db: Database) -> None:
    with db.tx() as tx:
        tx.execute("INSERT INTO things (name) VALUES ('mine')")
        assert db.scalar("SELECT COUNT(*) FROM things") == 1  # same connection as the tx


def test_processes_starting_together_apply_each_migration_once(tmp_path: Path) -> None:
    url = dbs.fresh_url()
    target = url or tmp_path / "t.db"
    steps = Migrations()
    steps.add("0001", "CREATE TABLE t (id {id}, v {text})")
    steps.add("0002", "ALTER TABLE t ADD COLUMN w {int} NOT NULL DEFAULT 0")
    steps.add("0003", "INSERT INTO t (v) VALUES ('once')")
    gate = threading.Barrier(4)
    errors: list[BaseException] = []
    opened: list[Database] = []

    def start() -> None:
        gate.wait()
        try:
            opened.append(dbs.opened(url, Database(target, migrations=steps)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert [tuple(r) for r in opened[0].all("SELECT v, w FROM t")] == [("once", 0)]
    assert [r["id"] for r in opened[0].all("SELECT id FROM _migrations ORDER BY id")] == [
        "0001",
        "0002",
        "0003",
    ]
    for d in opened:
        d.close()


def test_feed_versions_become_visible_in_order(db: Database) -> None:
    """``next_version`` under concurrent writers: whenever a reader sees version V, it sees
    every row stamped with a version up to V (a plain counter would let V+1 commit first)."""
    stop = threading.Event()
    bad: list[str] = []

    def writer(w: int) -> None:
        for i in range(40):
            with db.tx() as tx:
                v = next_version(tx)
                tx.execute("INSERT INTO things (name, n) VALUES (?, ?)", (f"w{w}-{i}", v))

    def reader() -> None:
        while not stop.is_set():
            with db.read() as rd:
                top = int(rd.scalar("SELECT value FROM versions WHERE name = 'feed'"))
                seen = {r["n"] for r in rd.all("SELECT n FROM things WHERE n <= ?", (top,))}
            if seen != set(range(1, top + 1)):
                bad.append(f"at {top}: missing {sorted(set(range(1, top + 1)) - seen)[:5]}")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in readers:
        t.join(10)
    assert bad == []
    assert current_version(db) == 160


# -- what each backend states for itself ----------------------------------------------------------
PG_TYPES = {
    "id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    "int": "BIGINT",
    "text": 'TEXT COLLATE "C"',
    "blob": "BYTEA",
    "real": "DOUBLE PRECISION",
    "without_rowid": "",
}


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (
            SQLITE_TYPES,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT DEFAULT '{}', b BLOB, "
            "r REAL) WITHOUT ROWID",
        ),
        (
            PG_TYPES,
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT, "
            "s TEXT COLLATE \"C\" DEFAULT '{}', b BYTEA, r DOUBLE PRECISION) ",
        ),
    ],
)
def test_column_types_are_filled_in_by_the_backend(types: dict[str, str], expected: str) -> None:
    sql = "CREATE TABLE t (id {id}, n {int}, s {text} DEFAULT '{}', b {blob}, r {real}) "
    assert fill_types(sql + "{without_rowid}", types) == expected
    with pytest.raises(StoreError, match="integer"):
        fill_types("CREATE TABLE t (n {integer})", types)


def test_postgresql_column_types_are_what_the_backend_states() -> None:
    pytest.importorskip("psycopg")
    from sync.db import postgres

    assert postgres.TYPES == PG_TYPES
    assert set(postgres.TYPES) == set(SQLITE_TYPES)


@pytest.mark.parametrize(
    ("sql", "psycopg"),
    [
        (
            "SELECT * FROM t WHERE a = ? AND b LIKE '5%'",
            "SELECT * FROM t WHERE a = %s AND b LIKE '5%%'",
        ),
        (
            "SELECT ':x' || ? FROM t WHERE c = :x AND d = 10 % 3",
            "SELECT ':x' || %s FROM t WHERE c = %(x)s AND d = 10 %% 3",
        ),
        (
            "SELECT 'it''s ? here' -- and ? here\n FROM \"t?\" /* ? */ WHERE a = ?",
            "SELECT 'it''s ? here' -- and ? here\n FROM \"t?\" /* ? */ WHERE a = %s",
        ),
        ("SELECT CAST(? AS TEXT)", "SELECT CAST(%s AS TEXT)"),
    ],
)
def test_postgresql_swaps_parameter_marks_outside_literals(sql: str, psycopg: str) -> None:
    """The one change the PostgreSQL backend makes to a statement: sqlite3's parameter marks
    as psycopg's."""
    pytest.importorskip("psycopg")
    from sync.db.postgres import pg_params

    assert pg_params(sql) == psycopg


def test_parameter_marks_and_percent_signs_mean_the_same_on_both(db: Database) -> None:
    with db.tx() as tx:
        tx.execute("INSERT INTO pairs (a, b, v) VALUES ('50%?', 1, ?)", ("100%",))
        tx.execute(
            "INSERT INTO pairs (a, b, v) VALUES (:a, :b, :v)", {"a": "x:y", "b": 2, "v": "?"}
        )
    assert db.scalar("SELECT v FROM pairs WHERE a = '50%?' AND LOWER(v) LIKE '1%'") == "100%"
    assert db.scalar("SELECT b FROM pairs WHERE a = 'x:y' AND v = '?'") == 2
    assert db.scalar("SELECT 7 % ?", (4,)) == 3


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT OR IGNORE INTO pairs (a, b, v) VALUES ('k', 1, 'x')",
        "INSERT OR REPLACE INTO pairs (a, b, v) VALUES ('k', 1, 'x')",
        "SELECT IFNULL(v, '') FROM pairs",
        "SELECT MAX(1, 2)",
        "SELECT * FROM pairs WHERE b IN ()",
        "SELECT COUNT(*) FROM (SELECT a FROM pairs)",
        "SELECT * FROM pairs WHERE a GLOB 'x*'",
    ],
)
def test_sqlite_only_sql_fails_on_postgresql_with_a_store_error(db: Database, sql: str) -> None:
    """Nothing translates SQLite's own SQL any more: on PostgreSQL it is a StoreError (the
    connection survives), and tests/test_db_statements.py keeps it out of the code."""
    if db.dialect == "sqlite":
        with db.tx() as tx:
            tx.all(sql)
        return
    with pytest.raises(StoreError), db.tx() as tx:
        tx.all(sql)
    assert db.scalar("SELECT COUNT(*) FROM pairs") == 0


@pytest.mark.postgres
def test_server_refuses_a_db_url_it_cannot_use(tmp_path: Path, db_kind: str) -> None:

    bad = ["mysql://u@h/db", "/var/lib/ykt/ykt.db"]
    for url in bad:
        done = ykt("server", "--data", str(tmp_path), "--db", url, check=False, timeout=60)
        assert done.returncode == 2 and "postgresql://" in done.stderr, done.stderr
    assert not (tmp_path / "ykt.db").exists()


@pytest.mark.postgres
def test_a_pooled_connection_found_dead_is_replaced_without_losing_the_transaction(
    db_kind: str,
) -> None:
    """PostgreSQL: a transaction's start goes out with its first statements
    (``Session.opening``); a pooled connection that died meanwhile (the server restarted, an
    administrator ended it) is replaced there and the whole sent again, as nothing of the
    transaction had run.  A transaction that runs no statement sends nothing."""
    url = dbs.fresh_url()
    assert db_kind == "postgres" and url is not None  # the pool and its connections
    db = dbs.opened(url, Database(url, migrations=SCHEMA))
    with db.tx() as tx:
        tx.execute("INSERT INTO things (name) VALUES (?)", ("before",))
        mine = tx.scalar("SELECT pg_backend_pid()")
    with db.tx():
        pass  # no statement: nothing sent, nothing to commit
    with db.read() as rd:
        assert rd.scalar("SELECT pg_backend_pid()") == mine  # the one pooled connection
    other = Database(url)  # a connection of its own, to end the pool's
    try:
        assert other.scalar("SELECT pg_terminate_backend(?)", (mine,))
    finally:
        other.close()
    with db.tx() as tx:  # the pooled connection is dead: replaced as the transaction starts
        tx.execute("INSERT INTO things (name) VALUES (?)", ("after",))
        assert tx.scalar("SELECT pg_backend_pid()") != mine
    assert [r[0] for r in db.all("SELECT name FROM things ORDER BY id")] == ["before", "after"]
