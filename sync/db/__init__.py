"""The one database wrapper of ykt (the terminal and the central server both use it): SQLite,
and for the central server also PostgreSQL.

- ``Database(path | ":memory:" | sqlite3.Connection)``: SQLite, WAL, ``synchronous`` chosen by
  the caller (the journal needs FULL: an approval is shown only after its record is durable).
- ``Database("postgresql://USER@HOST/DB")``: PostgreSQL through psycopg 3
  (:mod:`sync.db.postgres`); the same :class:`Tx`, the same SQL (written in SQLite's dialect and
  translated in one place, :mod:`sync.db.sql`; rules in docs/database.md), the same migrations.
- Every write goes through :meth:`Database.tx`, a transaction that commits or rolls back as a
  whole and runs while no other writer does (SQLite: the writers of one process take turns on
  a lock, then ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock, so writers
  of every server process take turns); reads may
  use :meth:`Database.all` / :meth:`Database.one`, or :meth:`Database.read` for one snapshot.
- Migrations are registered in one :class:`Migrations` list per schema and applied in order,
  each in its own transaction together with its bookkeeping row in ``_migrations`` (checked
  again inside that transaction, so processes starting together apply each step once).
- sqlite3 and psycopg errors are converted to :class:`edge.errors.StoreError` here, where our
  code meets the library.

SQLite: one connection per thread (sqlite3 connections are not shared across threads);
``:memory:`` databases use a single connection behind a lock so every thread sees the same data.
PostgreSQL: a pool of connections; a thread keeps one for the length of a transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sync.errors import StoreConflict, StoreError

if TYPE_CHECKING:
    from sync.db.postgres import Backend as PgBackend
    from sync.db.postgres import Connection as PgConnection

log = logging.getLogger(__name__)

Row = Mapping[str, Any]
Params = Sequence[Any] | Mapping[str, Any]


class Tx:
    """A transaction in progress: the only way to write."""

    def __init__(self, conn: sqlite3.Connection | PgConnection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows changed."""
        return self._conn.execute(sql, params).rowcount

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT and return the new row id."""
        cur = self._conn.execute(sql, params)
        assert cur.lastrowid is not None
        return cur.lastrowid

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        return self._conn.executemany(sql, rows).rowcount

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], chunk: int = 100
    ) -> int:
        """INSERT ``rows`` with multi-row ``VALUES`` statements of up to ``chunk`` rows.

        For the hot bulk inserts: sqlite3 lets go of the GIL around every statement step, so
        ``executemany`` must win the GIL back once per row, and in a process whose other
        threads are busy (a server parsing requests) each win can wait out a whole switch
        interval (5 ms): 500-row inserts went from 2.5 to 43 µs a row.  Here it is once per chunk.
        """
        cols = ", ".join(columns)
        one = "(" + ", ".join("?" * len(columns)) + ")"
        n = 0
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            n += self._conn.execute(
                f"INSERT INTO {table} ({cols}) VALUES " + ", ".join([one] * len(part)),
                [v for row in part for v in row],
            ).rowcount
        return n

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._conn.execute(sql, params).fetchall())

    def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


@dataclass
class Migrations:
    """An ordered list of schema steps; ids are never reused or edited once released."""

    steps: list[tuple[str, Callable[[Tx], None]]] = field(default_factory=list)

    def add(self, step_id: str, sql: str) -> None:
        def run(tx: Tx) -> None:
            for stmt in (s.strip() for s in sql.split(";")):
                if stmt:
                    tx.execute(stmt)

        self.steps.append((step_id, run))

    def add_fn(self, step_id: str, fn: Callable[[Tx], None]) -> None:
        self.steps.append((step_id, fn))


class Database:
    def __init__(
        self,
        target: str | Path | sqlite3.Connection,
        *,
        synchronous: str = "FULL",
        migrations: Migrations | None = None,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self._local = threading.local()
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.RLock()
        # Writers of this process queue here instead of in SQLite's busy handler, which sleeps
        # in growing steps (up to 100 ms) and lets a waiting writer starve for seconds.
        self._write_lock = threading.RLock()
        self._sync = synchronous
        self._busy = busy_timeout_ms
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._pg: PgBackend | None = None
        if is_postgres_url(target):
            from sync.db.postgres import Backend

            self.path = None
            self._pg = Backend(
                str(target), synchronous=synchronous, busy_timeout_ms=busy_timeout_ms
            )
        elif isinstance(target, sqlite3.Connection):
            self.path = None
            self._shared = target
            self._prepare(target)
        elif str(target) == ":memory:":
            self.path = None
            self._shared = self._connect(":memory:")
        else:
            self.path = Path(target)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn()  # open now so a bad path fails here
        if migrations is not None:
            self.migrate(migrations)

    # -- connections ---------------------------------------------------------------------
    def _connect(self, where: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {where}: {exc}") from exc
        self._prepare(conn)
        with self._conns_lock:
            self._all_conns.append(conn)
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self._busy)}")
            if self._shared is None and conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prepare database: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            assert self.path is not None
            conn = self._connect(str(self.path))
            self._local.conn = conn
        return conn

    @contextmanager
    def _maybe_locked(self) -> Iterator[None]:
        if self._shared is not None:
            with self._shared_lock:
                yield
        else:
            yield

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return "sqlite" if self._pg is None else "postgresql"

    @property
    def name(self) -> str:
        """Where the data is, for messages (a PostgreSQL URL without its password)."""
        if self._pg is not None:
            return self._pg.name
        return str(self.path) if self.path is not None else ":memory:"

    # -- transactions and reads ------------------------------------------------------------
    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """SQLite: the writers of this process take turns here, waking as soon as the turn is
        free (SQLite's own busy handler sleeps in steps of up to 100 ms), and give up after
        the busy timeout like SQLite would."""
        if not self._write_lock.acquire(timeout=self._busy / 1000):
            raise StoreError(
                f"the database is busy: no turn to write within {self._busy} ms (another "
                "writer of this process holds it)"
            )
        try:
            yield
        finally:
            self._write_lock.release()

    @contextmanager
    def tx(self, *, exclusive: bool = True) -> Iterator[Tx]:
        """A write transaction (``BEGIN IMMEDIATE``): commits on success, rolls back on error.

        ``exclusive=False`` lets a PostgreSQL transaction run beside other writers (it skips
        the writer lock; SQLite ignores it): only for transactions whose every statement is
        right on its own, whatever commits beside it (``INSERT … ON CONFLICT DO NOTHING``, a
        ``DELETE`` by a condition), never read-then-write."""
        if self._pg is not None:
            with self._pg.write(exclusive) as pg_conn:
                yield Tx(pg_conn)
            return
        with self._writer_turn(), self._maybe_locked():
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin a transaction: {exc}") from exc
            try:
                yield Tx(conn)
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK")
                raise StoreConflict(str(exc)) from exc
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"transaction failed: {exc}") from exc
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"commit failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read transaction: every statement in it sees the same snapshot (WAL)."""
        if self._pg is not None:
            with self._pg.read() as pg_conn:
                yield Tx(pg_conn)
            return
        with self._maybe_locked():
            conn = self._conn()
            try:
                conn.execute("BEGIN")
                try:
                    yield Tx(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"read failed: {exc}") from exc

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        if self._pg is not None:
            return list(self._pg.all(sql, params))
        with self._maybe_locked():
            try:
                return list(self._conn().execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"query failed: {exc}") from exc

    def one(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else cast(Any, row)[0]

    # -- schema ------------------------------------------------------------------------------
    def migrate(self, migrations: Migrations) -> list[str]:
        """Apply the steps not yet applied; returns their ids."""
        with self.tx() as tx:
            tx.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (id TEXT PRIMARY KEY, applied_at TEXT)"
            )
        done = {r["id"] for r in self.all("SELECT id FROM _migrations")}
        applied = []
        for step_id, fn in migrations.steps:
            if step_id in done:
                continue
            try:
                with self.tx() as tx:
                    if tx.one("SELECT 1 FROM _migrations WHERE id = ?", (step_id,)):
                        continue  # another process applied it meanwhile
                    fn(tx)
                    tx.execute(
                        "INSERT INTO _migrations (id, applied_at) VALUES (?, ?)",
                        (step_id, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"migration {step_id} failed: {exc}") from exc
            except StoreError as exc:
                raise StoreError(f"migration {step_id} failed: {exc}") from exc
            log.info("applied migration %s", step_id)
            applied.append(step_id)
        return applied

    # -- notifications between processes sharing the database --------------------------------
    def notify(self, channel: str) -> None:
        """PostgreSQL: NOTIFY ``channel`` (at commit when called inside a transaction).
        SQLite: nothing (listeners there poll; see :meth:`can_listen`)."""
        if self._pg is not None:
            self._pg.notify(channel)

    def can_listen(self) -> bool:
        return self._pg is not None

    def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """PostgreSQL only: call ``callback`` from a thread whenever ``channel`` is notified."""
        if self._pg is None:
            raise StoreError("SQLite has no notifications between processes")
        self._pg.listen(channel, callback)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            return
        with self._conns_lock:
            for conn in self._all_conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all_conns.clear()
        self._local = threading.local()
