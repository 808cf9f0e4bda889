"""The SQLite backend of :class:`sync.db.Database` (the terminals' journal and cache, and the
central server's default ``DATA/ykt.db``).

- WAL, ``synchronous`` chosen by the caller (the journal needs FULL: an approval is shown only
  after its record is durable), ``foreign_keys=ON``, ``busy_timeout``.
- One connection per thread (sqlite3 connections are not shared across threads);
  ``:memory:`` databases and a given ``sqlite3.Connection`` use a single connection behind a
  lock so every thread sees the same data.
- Writers of this process take turns on a lock, then ``BEGIN IMMEDIATE``; reads are a WAL
  read transaction (``BEGIN`` … ``COMMIT``).
- sqlite3 errors become :class:`sync.errors.StoreConflict` (a constraint refused a write) or
  :class:`sync.errors.StoreError`, here.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sync.db.backend import CommitGroup, Params, Rider, Row, values_insert
from sync.errors import StoreConflict, StoreError
from sync.files import private_file

#: a table definition's column types (docs/database.md), as SQLite has always had them
TYPES = {
    "id": "INTEGER PRIMARY KEY",  # the rowid: a new row without one gets MAX(id) + 1
    "int": "INTEGER",  # 64-bit
    "text": "TEXT",  # compared and sorted by its bytes
    "blob": "BLOB",
    "real": "REAL",
    "without_rowid": "WITHOUT ROWID",
}


class Session:
    """One sqlite3 connection inside a transaction (its ``execute`` is sqlite3's own)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.execute = conn.execute

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        return self.conn.executemany(sql, rows).rowcount

    def batch(
        self, statements: Sequence[tuple[str, Params]], last: bool = False
    ) -> list[list[Any]]:
        """One after the other (in process, a statement costs no round trip); ``last`` makes
        no difference here (the commit follows)."""
        return [self.conn.execute(sql, params).fetchall() for sql, params in statements]

    def later(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Now (in process, a statement costs no round trip)."""
        for sql, params in statements:
            self.conn.execute(sql, params)

    def defer_commit(self) -> None:
        """Nothing: every commit here waits for the disk (as its ``synchronous`` says)."""

    def hold_durable(self) -> None:
        """Nothing: every commit here waits for the disk (as its ``synchronous`` says)."""

    def insert_statement(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], chunk: int
    ) -> tuple[str, Params] | None:
        """None: in process a statement costs no round trip, so :meth:`insert_rows` after the
        checks that precede it (a foreign key fails at the INSERT here, before them)."""
        return None

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], chunk: int
    ) -> int:
        """Multi-row ``VALUES`` statements of up to ``chunk`` rows.

        sqlite3 lets go of the GIL around every statement step, so ``executemany`` must win
        the GIL back once per row, and in a process whose other threads are busy (a server
        parsing requests) each win can wait out a whole switch interval (5 ms): 500-row
        inserts went from 2.5 to 43 µs a row.  Here it is once per chunk."""
        n = 0
        for start in range(0, len(rows), chunk):
            n += self.conn.execute(
                *values_insert(table, columns, rows[start : start + chunk])
            ).rowcount
        return n


class Backend:
    """A SQLite database file, ``:memory:``, or a connection the caller opened."""

    dialect = "sqlite"
    types = TYPES

    def __init__(
        self,
        target: str | Path | sqlite3.Connection,
        *,
        synchronous: str = "FULL",
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
        self.path: Path | None = None
        if isinstance(target, sqlite3.Connection):
            self._shared = target
            self._prepare(target)
        elif str(target) == ":memory:":
            self._shared = self._connect(":memory:")
        else:
            self.path = Path(target)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:  # every ykt database holds something private (keys, journal, holders' data)
                private_file(self.path)
            except OSError as exc:
                raise StoreError(f"cannot open database {self.path}: {exc}") from exc
            self._conn()  # open now so a bad path fails here
        self.name = str(self.path) if self.path is not None else ":memory:"

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
            if self._shared is None:
                self._wal(conn)
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute("PRAGMA foreign_keys=ON")
            # deleted and overwritten values are zeroed where that costs no extra write, so a
            # copied file keeps no removed secret (a password hash once in a terminal's cache)
            conn.execute("PRAGMA secure_delete=FAST")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prepare database: {exc}") from exc

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Put a file database in WAL mode.  The switch takes the file for itself and does
        not wait on the busy timeout for a connection opening at the same moment (processes
        starting together on a fresh file: "database is locked" now and then, under load);
        it is tried again until the busy timeout has passed."""
        deadline = time.monotonic() + self._busy / 1000
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

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

    # -- transactions and reads ------------------------------------------------------------
    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """The writers of this process take turns here, waking as soon as the turn is free
        (SQLite's own busy handler sleeps in steps of up to 100 ms), and give up after the
        busy timeout like SQLite would."""
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
    def write(self, exclusive: bool = True, durable: bool = True) -> Iterator[Session]:
        """``BEGIN IMMEDIATE`` (``exclusive`` makes no difference: SQLite has one writer);
        not ``durable``: committed without the fsync of ``synchronous=FULL`` (the next
        durable commit's fsync of the write-ahead log covers it; see
        :meth:`sync.db.Database.tx`).

        The locks are taken here rather than through :meth:`_writer_turn` and
        :meth:`_maybe_locked`: a terminal makes thousands of small transactions, and each
        nested generator context costs as much as a statement."""
        if not self._write_lock.acquire(timeout=self._busy / 1000):
            raise StoreError(
                f"the database is busy: no turn to write within {self._busy} ms (another "
                "writer of this process holds it)"
            )
        shared = self._shared_lock if self._shared is not None else None
        try:
            if shared is not None:
                shared.acquire()
            relax = not durable and self._sync.upper() == "FULL"
            try:
                conn = self._conn()
                if relax:
                    conn.execute("PRAGMA synchronous=NORMAL")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise StoreError(f"cannot begin a transaction: {exc}") from exc
                try:
                    yield Session(conn)
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
            finally:
                if relax:
                    conn.execute(f"PRAGMA synchronous={self._sync}")
                if shared is not None:
                    shared.release()
        finally:
            self._write_lock.release()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A WAL read transaction: every statement in it sees the same snapshot."""
        with self._maybe_locked():
            conn = self._conn()
            try:
                conn.execute("BEGIN")
                try:
                    yield Session(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"read failed: {exc}") from exc

    def all(self, sql: str, params: Params) -> list[Row]:
        if self._shared is not None:
            with self._shared_lock:
                return self._all(sql, params)
        return self._all(sql, params)

    def reads(self, statements: Sequence[tuple[str, Params]]) -> list[list[Row]]:
        """One after the other (in process, a statement costs no round trip)."""
        return [self.all(sql, params) for sql, params in statements]

    def _all(self, sql: str, params: Params) -> list[Row]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"query failed: {exc}") from exc

    def scrub(self) -> None:
        """Copy the write-ahead log into the database and truncate it: the log keeps the old
        versions of pages, secrets once overwritten included, until a checkpoint."""
        if self.path is None:
            return
        with self._writer_turn(), self._maybe_locked():
            try:
                self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"checkpoint of {self.path} failed: {exc}") from exc

    # -- notifications: none between processes (listeners poll) ----------------------------
    def rider(
        self, statements: Sequence[tuple[str, Params]]
    ) -> AbstractContextManager[Rider | None]:
        """None: a statement here costs no round trip (the caller runs it by itself)."""
        return contextlib.nullcontext(None)

    def writes_inline(self) -> bool:
        return True

    def group(self, group: CommitGroup | None) -> None:
        """Nothing: a commit here always waits for the disk (its writes run on the event
        loop's thread, one at a time: there is no queue to group)."""

    def flush(self) -> None:
        """Nothing: every commit here was on disk when it returned."""

    def can_listen(self) -> bool:
        return False

    def notify(self, channel: str) -> None:
        pass

    def listen(self, channel: str, callback: Callable[[], None]) -> None:
        raise StoreError("SQLite has no notifications between processes")

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._all_conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all_conns.clear()
        self._local = threading.local()
