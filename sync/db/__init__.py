"""The one database layer of ykt (the terminal and the central server both use it): SQLite, and
for the central server also PostgreSQL, behind one small interface (:mod:`sync.db.backend`).

- ``Database(path | ":memory:" | sqlite3.Connection)``: SQLite (:mod:`sync.db.sqlite`), WAL,
  ``synchronous`` chosen by the caller (the journal needs FULL: an approval is shown only
  after its record is durable).
- ``Database("postgresql://USER@HOST/DB")``: PostgreSQL through psycopg 3
  (:mod:`sync.db.postgres`, imported only then).
- The SQL is written once, in the subset both engines accept as written (the rules are in
  docs/database.md; tests/test_db_statements.py runs every statement of the code on both).
  Table definitions name their column types ``{id}``, ``{int}``, ``{text}``, … and each
  backend fills in its own (:data:`sync.db.backend.TYPE_NAMES`).
- Every write goes through :meth:`Database.tx`, a transaction that commits or rolls back as a
  whole and runs while no other writer does (SQLite: the writers of one process take turns on
  a lock, then ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock, so writers
  of every server process take turns); reads may use :meth:`Database.all` /
  :meth:`Database.one`, or :meth:`Database.read` for one snapshot.
- Migrations are registered in one :class:`Migrations` list per schema and applied in order,
  each in its own transaction together with its bookkeeping row in ``_migrations`` (checked
  again inside that transaction, so processes starting together apply each step once).
- Library errors become :class:`sync.errors.StoreError` (or its kinds ``StoreConflict``,
  ``StoreRefused``) in the backends, where our code meets the library.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from sync.db import sqlite
from sync.db.backend import (
    Backend,
    CommitGroup,
    Params,
    Rider,
    Row,
    Session,
    fill_types,
    placeholders,
    value_rows,
)
from sync.errors import StoreError

__all__ = [
    "CommitGroup",
    "Database",
    "Migrations",
    "Params",
    "Rider",
    "Row",
    "Tx",
    "is_postgres_url",
    "placeholders",
    "value_rows",
]

log = logging.getLogger(__name__)


class Tx:
    """A transaction in progress: the only way to write."""

    def __init__(self, session: Session, types: Mapping[str, str], dialect: str) -> None:
        self._s = session
        self._types = types
        #: the feed versions this transaction took (``sync.server.context.next_version``)
        self.versions: list[int] = []
        #: ``"sqlite"`` or ``"postgresql"``: only for a migration step that differs by engine
        self.dialect = dialect

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows changed."""
        return self._s.execute(sql, params).rowcount

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run an ``INSERT … RETURNING id`` and return the new row's id."""
        rows = self._s.execute(sql, params).fetchall()
        if len(rows) != 1:
            raise StoreError(
                f"insert() wants one row back from INSERT … RETURNING id, got {len(rows)}: "
                f"{sql[:120]}"
            )
        return int(rows[0][0])

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        return self._s.executemany(sql, rows)

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], chunk: int = 100
    ) -> int:
        """INSERT many ``rows`` at once, for the hot bulk inserts (SQLite: multi-row ``VALUES``
        of up to ``chunk`` rows; PostgreSQL: ``COPY``).  The one way to give an ``{id}``
        column's values yourself in a table whose ids are also generated: PostgreSQL's
        identity then moves past them, as SQLite's rowid does."""
        return self._s.insert_rows(table, columns, rows, chunk)

    def insert_statement(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], chunk: int = 100
    ) -> tuple[str, Params] | None:
        """:meth:`insert_rows` as one statement to send in a :meth:`batch` with others, where
        that saves a round trip (PostgreSQL) and it would be one plain ``INSERT`` (a few rows,
        no identity values given); else None (then :meth:`insert_rows`)."""
        return self._s.insert_statement(table, columns, rows, chunk)

    def batch(
        self, statements: Sequence[tuple[str, Params]], *, last: bool = False
    ) -> list[list[Row]]:
        """Run ``statements`` in order and return the rows of each: on PostgreSQL sent as one
        pipeline (one round trip for all; a transaction holding the writer lock spends less
        of its time waiting for answers), on SQLite one after the other.  For statements
        whose parameters do not depend on each other's results.  ``last``: they end the
        transaction, and on PostgreSQL its ``COMMIT`` goes in their round trip (no statement
        may follow; an error of the commit is raised here)."""
        return self._s.batch(statements, last)

    def defer_commit(self) -> None:
        """Its commit may leave the disk for later where this thread's commits may
        (:meth:`Database.grouped`): only for a transaction whose effects its caller tells
        nobody outside the database of before :meth:`Database.flush` (a sale's hold, whose
        approval is answered after it: ``sync.server.authorize``)."""
        self._s.defer_commit()

    def hold_durable(self) -> None:
        """Its commit waits for the disk, whatever :meth:`defer_commit` said: others learn of
        what it wrote as soon as it commits (a feed version, which terminals keep as theirs:
        ``sync.server.context.next_version``)."""
        self._s.hold_durable()

    def later(self, sql: str, params: Params = ()) -> None:
        """Run a write whose answer nobody reads (no rows, no count): on PostgreSQL it goes
        with the transaction's next statement or its ``COMMIT``, in that one's round trip,
        and its error is raised there (at the end of the ``with`` block for the commit); on
        SQLite now.  Not for a statement whose failure the caller handles by itself."""
        self._s.later(((sql, params),))

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self._s.execute(sql, params).fetchall())

    def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self._s.execute(sql, params).fetchone()
        return row

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self._s.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def schema(self, script: str) -> None:
        """Run table definitions (``;``-separated, no parameters) with the backend's column
        types for ``{id}``, ``{int}``, ``{text}``, … (:data:`sync.db.backend.TYPE_NAMES`)."""
        for stmt in (s.strip() for s in fill_types(script, self._types).split(";")):
            if stmt:
                self._s.execute(stmt, ())


class _InTx:
    """The backend's transaction as a :class:`Tx` (a plain class: a generator context around
    the backend's own would cost a terminal's every transaction one more)."""

    __slots__ = ("_cm", "_dialect", "_types")

    def __init__(
        self, cm: AbstractContextManager[Session], types: Mapping[str, str], dialect: str
    ) -> None:
        self._cm = cm
        self._types = types
        self._dialect = dialect

    def __enter__(self) -> Tx:
        return Tx(self._cm.__enter__(), self._types, self._dialect)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._cm.__exit__(kind, exc, tb)


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


@dataclass
class Migrations:
    """An ordered list of schema steps; ids are never reused or edited once released."""

    steps: list[tuple[str, Callable[[Tx], None]]] = field(default_factory=list)
    #: the table definitions of the steps added with :meth:`add` (for the tests)
    scripts: list[str] = field(default_factory=list)

    def add(self, step_id: str, sql: str) -> None:
        """A step of table definitions and plain statements (see :meth:`Tx.schema`)."""

        def run(tx: Tx) -> None:
            tx.schema(sql)

        self.steps.append((step_id, run))
        self.scripts.append(sql)

    def add_fn(self, step_id: str, fn: Callable[[Tx], None]) -> None:
        self.steps.append((step_id, fn))


class Database:
    """One database, on the backend its target names."""

    def __init__(
        self,
        target: str | Path | sqlite3.Connection,
        *,
        synchronous: str = "FULL",
        migrations: Migrations | None = None,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self.backend: Backend
        self.path: Path | None = None
        if is_postgres_url(target):
            from sync.db import postgres  # psycopg is optional: only a PostgreSQL server needs it

            self.backend = postgres.Backend(
                str(target), synchronous=synchronous, busy_timeout_ms=busy_timeout_ms
            )
        else:
            lite = sqlite.Backend(target, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
            self.path = lite.path
            self.backend = lite
        self._types = self.backend.types
        if migrations is not None:
            self.migrate(migrations)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.backend.dialect

    @property
    def name(self) -> str:
        """Where the data is, for messages (a PostgreSQL URL without its password)."""
        return self.backend.name

    # -- transactions and reads ------------------------------------------------------------
    def tx(self, *, exclusive: bool = True, durable: bool = True) -> AbstractContextManager[Tx]:
        """A write transaction (``BEGIN IMMEDIATE``): commits on success, rolls back on error.

        ``exclusive=False`` lets a PostgreSQL transaction run beside other writers (it skips
        the writer lock; SQLite ignores it): only for transactions whose every statement is
        right on its own, whatever commits beside it (``INSERT … ON CONFLICT DO NOTHING``, a
        ``DELETE`` by a condition), never read-then-write.

        ``durable=False``: the commit does not wait for the disk (SQLite ``synchronous=NORMAL``
        for it, PostgreSQL ``synchronous_commit = off``); the next durable commit, of any
        connection, makes it durable too (both flush their write-ahead log in order).  A power
        cut may lose it, and only it and the commits after it: only for writes whose loss
        matters no more than that of the durable writes that follow them (a request's nonce,
        :class:`sync.server.terminals.NonceCache`)."""
        return _InTx(self.backend.write(exclusive, durable), self._types, self.backend.dialect)

    def read(self) -> AbstractContextManager[Tx]:
        """A read transaction: every statement in it sees the same snapshot."""
        return _InTx(self.backend.read(), self._types, self.backend.dialect)

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        return self.backend.all(sql, params)

    def one(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def reads(self, statements: Sequence[tuple[str, Params]]) -> list[list[Row]]:
        """The rows of each statement as :meth:`all` would give them (each its own snapshot
        outside a transaction), on PostgreSQL sent together in one round trip."""
        return self.backend.reads(statements)

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else cast(Any, row)[0]

    # -- schema ------------------------------------------------------------------------------
    def migrate(self, migrations: Migrations) -> list[str]:
        """Apply the steps not yet applied; returns their ids."""
        with self.tx() as tx:
            tx.schema(
                "CREATE TABLE IF NOT EXISTS _migrations (id {text} PRIMARY KEY, applied_at {text})"
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
            except StoreError as exc:
                raise StoreError(f"migration {step_id} failed: {exc}") from exc
            log.info("applied migration %s", step_id)
            applied.append(step_id)
        return applied

    def scrub(self) -> None:
        """Leave no copy of deleted or overwritten data in the database's files beyond what
        the engine must keep (SQLite zeroes deleted values as it goes, ``secure_delete``, and
        here checkpoints and truncates its write-ahead log; PostgreSQL: nothing to do here)."""
        self.backend.scrub()

    # -- notifications between processes sharing the database --------------------------------
    def notify(self, channel: str) -> None:
        """PostgreSQL: NOTIFY ``channel`` (at commit when called inside a transaction).
        SQLite: nothing (listeners there poll; see :meth:`can_listen`)."""
        self.backend.notify(channel)

    def can_listen(self) -> bool:
        return self.backend.can_listen()

    def rider(
        self, statements: Sequence[tuple[str, Params]]
    ) -> AbstractContextManager[Rider | None]:
        """On PostgreSQL: ``statements`` go with the thread's next write transaction begun in
        the ``with`` block, in its first round trip, and commit with it or fail it
        (:meth:`sync.db.postgres.Backend.rider`; ``committed`` says which); None on SQLite,
        whose round trips cost nothing (the caller writes them by itself)."""
        return self.backend.rider(statements)

    def writes_inline(self) -> bool:
        """Whether short transactions may run on an event loop's own thread: on SQLite (in
        process: a statement waits on nothing but the disk, and a write for the writer turn
        of this process's other threads, which every writer waits for anyway).  Never on
        PostgreSQL: a statement there waits on the network and on other processes' row
        locks, and the loop would wait with it."""
        return self.backend.writes_inline()

    @contextmanager
    def grouped(self, group: CommitGroup) -> Iterator[CommitGroup]:
        """Within the block, this thread's write transactions that asked for it
        (:meth:`Tx.defer_commit`) commit without waiting for the disk whenever ``group.when()``
        says so at their commit, unless they took a feed version or sent a notification
        (:meth:`Tx.hold_durable`); ``group.deferred`` tells that one did. What such a commit
        wrote is seen by other transactions at once but is on disk only after :meth:`flush`: the
        caller tells nobody outside the database of it before
        (``sync.server.workers.GroupCommit``). On PostgreSQL the writer lock then passes on with
        the commit record instead of after its fsync, and one fsync serves a queue of
        transactions; on SQLite nothing changes."""
        self.backend.group(group)
        try:
            yield group
        finally:
            self.backend.group(None)

    def flush(self) -> None:
        """Return once every commit made before the call is on disk (call it outside a
        transaction)."""
        self.backend.flush()

    def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """PostgreSQL only: call ``callback`` from a thread whenever ``channel`` is notified."""
        self.backend.listen(channel, callback)

    def close(self) -> None:
        self.backend.close()
