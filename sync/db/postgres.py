"""The PostgreSQL backend of :class:`sync.db.Database` (psycopg 3), used by the central server
when it runs with ``--db postgresql://…``.  Nothing outside sync.db uses this module.

It makes a PostgreSQL connection look like the sqlite3 connection :class:`sync.db.Tx` drives
(``execute`` / ``executemany`` returning a cursor with ``rowcount``, ``lastrowid``,
``fetchone``, ``fetchall``), so the same SQL and the same ``Tx`` run on both:

- statements are translated once by :mod:`sync.db.sql` (placeholders, types, dialect);
- an INSERT into a table with an identity column (``INTEGER PRIMARY KEY`` in SQLite) returns the
  new id as ``lastrowid``; an INSERT that gives that id itself moves the identity past it, as
  SQLite's rowid would;
- rows behave like ``sqlite3.Row`` (index or column name, ``keys()``, ``dict(row)``);
- integral ``numeric`` results (``SUM`` of integers) load as ``int``; ``bool`` parameters go as
  integers (SQLite has no booleans);
- psycopg errors become :class:`edge.errors.StoreConflict` (a constraint refused a write) or
  :class:`edge.errors.StoreError`, here, where our code meets the library.

Transactions (see :class:`Backend`): every write transaction first takes one
transaction-scoped advisory lock, the counterpart of SQLite's ``BEGIN IMMEDIATE``, so writers
take turns across all server processes and every piece of SQL written for SQLite's one-writer
model stays correct without row-lock reasoning; reads never wait (MVCC).  Read transactions
are ``REPEATABLE READ READ ONLY``: one snapshot, like SQLite's WAL read transaction.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import Any, ClassVar

import psycopg
from psycopg import errors as pgerr
from psycopg.adapt import Dumper, Loader
from psycopg.rows import RowMaker

from sync.db.sql import SqlError, Statement, finish_replace, translate
from sync.errors import StoreConflict, StoreError, StoreRefused

log = logging.getLogger(__name__)

#: the advisory lock every write transaction takes (any constant; per database)
WRITER_LOCK = 0x796B74  # "ykt"

# -- rows and types --------------------------------------------------------------------------


class Row(tuple[Any, ...]):
    """A result row like ``sqlite3.Row``: ``row[0]``, ``row["name"]``, ``keys()``, ``dict(row)``."""

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}
    _keys: ClassVar[tuple[str, ...]] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._index[key])
            except KeyError:
                try:
                    return tuple.__getitem__(self, self._index[key.lower()])
                except KeyError:
                    raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._keys)


_row_classes: dict[tuple[str, ...], type[Row]] = {}


def _row_class(names: tuple[str, ...]) -> type[Row]:
    cls = _row_classes.get(names)
    if cls is None:
        index: dict[str, int] = {}
        for i, n in enumerate(names):
            index.setdefault(n, i)
            index.setdefault(n.lower(), i)
        cls = type("Row", (Row,), {"__slots__": (), "_index": index, "_keys": names})
        _row_classes[names] = cls
    return cls


def _row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    desc = cursor.description
    cls = _row_class(tuple(c.name for c in desc) if desc else ())
    return lambda values: cls(values)


class _NumericLoader(Loader):
    """``numeric`` results: int when integral (SUM of integers), float otherwise."""

    def load(self, data: Any) -> Any:
        text = bytes(data).decode()
        if "." not in text and text.lstrip("-").isdigit():
            return int(text)
        value = Decimal(text)
        return int(value) if value == value.to_integral_value() else float(value)


class _BoolDumper(Dumper):
    """Python bools as integers, as sqlite3 stores them (columns are INTEGER)."""

    oid = 20  # int8

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


# -- cursors and connections -------------------------------------------------------------------
#: ``INSERT INTO t (…) VALUES (%s, …)`` with nothing after: executemany sends COPY for these
#: when there are COPY_ROWS rows or more (psycopg's executemany costs a few dozen µs of Python
#: per row)
_PLAIN_INSERT = re.compile(
    r"^INSERT\s+INTO\s+\S+\s*\([^()]*\)\s*VALUES\s*\((?:\s*%s\s*,)*\s*%s\s*\)$", re.IGNORECASE
)
#: the same with many rows in one statement (``VALUES (%s, %s), (%s, %s), …``)
_MULTI_ROW_INSERT = re.compile(
    r"^INSERT\s+INTO\s+\S+\s*\([^()]*\)\s*VALUES\s*"
    r"\((?:\s*%s\s*,)*\s*%s\s*\)(?:\s*,\s*\((?:\s*%s\s*,)*\s*%s\s*\))*$",
    re.IGNORECASE,
)
COPY_ROWS = 20


@lru_cache(maxsize=256)
def _copy_rows(text: str, n_columns: int) -> int:
    """How many rows a multi-row ``INSERT … VALUES (%s, …), …`` holds (0: not one to COPY)."""
    if n_columns == 0 or text.count("(") < COPY_ROWS or not _MULTI_ROW_INSERT.match(text):
        return 0
    values = text[text.upper().index(" VALUES") :]
    rows, placeholders = values.count("("), values.count("%s")
    return rows if placeholders == rows * n_columns else 0


class Cursor:
    """The result of one statement, shaped like a sqlite3 cursor."""

    def __init__(self, rowcount: int, rows: list[Row], lastrowid: int | None = None) -> None:
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self._rows = rows
        self._pos = 0

    def fetchone(self) -> Any:
        if self._pos < len(self._rows):
            self._pos += 1
            return self._rows[self._pos - 1]
        return None

    def fetchall(self) -> list[Any]:
        rest, self._pos = self._rows[self._pos :], len(self._rows)
        return rest


def convert(exc: psycopg.Error, what: str) -> StoreError:
    """A psycopg error as one of ours."""
    if isinstance(exc, psycopg.IntegrityError):
        return StoreConflict(str(exc).strip())
    if isinstance(exc, psycopg.DataError):
        return StoreRefused(str(exc).strip())
    if isinstance(exc, pgerr.LockNotAvailable):
        return StoreError(f"{what}: the database is busy (lock timeout)")
    return StoreError(f"{what}: {str(exc).strip() or type(exc).__name__}")


class Connection:
    """One PostgreSQL session that takes SQLite-dialect statements."""

    def __init__(self, raw: psycopg.Connection[Row], catalog: Catalog) -> None:
        self.raw = raw
        self.catalog = catalog

    @property
    def broken(self) -> bool:
        return self.raw.closed or self.raw.broken

    def _prepare(self, sql: str, params: Any) -> tuple[Statement, str]:
        named = isinstance(params, Mapping)
        try:
            stmt = translate(sql, named)
        except SqlError as exc:
            raise StoreError(f"SQL not portable to PostgreSQL: {exc}: {sql[:200]}") from exc
        text = stmt.sql
        if stmt.replace:
            assert stmt.insert_into is not None
            text = finish_replace(stmt, self.catalog.primary_key(self, stmt.insert_into))
        return stmt, text

    def _identity(self, stmt: Statement) -> str | None:
        if stmt.insert_into is None:
            return None
        return self.catalog.identity(self, stmt.insert_into)

    def execute(self, sql: str, params: Any = ()) -> Cursor:
        stmt, text = self._prepare(sql, params)
        if stmt.insert_into is not None and not stmt.returning and isinstance(params, Sequence):
            n = _copy_rows(text, len(stmt.columns))
            if n >= COPY_ROWS and len(params) == n * len(stmt.columns):
                width = len(stmt.columns)  # many rows in one INSERT: COPY them
                split = [params[i : i + width] for i in range(0, len(params), width)]
                try:
                    return Cursor(self._copy(stmt, split), [])
                except psycopg.Error as exc:
                    raise convert(exc, "query failed") from exc
        ident = self._identity(stmt)
        add_returning = ident is not None and not stmt.returning and ident not in stmt.columns
        if add_returning:
            text += f" RETURNING {ident}"
        try:
            cur = self.raw.execute(text, params)
            rows = cur.fetchall() if cur.description is not None else []
            lastrowid = None
            if add_returning:
                lastrowid = int(rows[0][0]) if rows else None
                rows = []
            elif ident is not None and ident in stmt.columns:
                self._bump_identity(stmt.insert_into, ident)
            rowcount = cur.rowcount
        except psycopg.Error as exc:
            raise convert(exc, "query failed") from exc
        if stmt.ddl:
            self.catalog.forget()
        return Cursor(rowcount, rows, lastrowid)

    def executemany(self, sql: str, rows: Iterable[Any]) -> Cursor:
        batch = list(rows)
        if not batch:
            return Cursor(0, [])
        stmt, text = self._prepare(sql, batch[0])
        ident = self._identity(stmt)
        plain = (
            len(batch) >= COPY_ROWS
            and not stmt.returning
            and bool(stmt.columns)
            and not isinstance(batch[0], Mapping)
            and _PLAIN_INSERT.match(text) is not None
        )
        try:
            if plain:  # COPY: a journal batch inserts a thousand rows under the writer lock
                rowcount = self._copy(stmt, batch)
            else:
                with self.raw.cursor() as cur:
                    cur.executemany(text, batch)
                    rowcount = cur.rowcount
                if ident is not None and ident in stmt.columns:
                    self._bump_identity(stmt.insert_into, ident)
        except psycopg.Error as exc:
            raise convert(exc, "query failed") from exc
        return Cursor(rowcount, [])

    def _copy(self, stmt: Statement, rows: list[Any]) -> int:
        """COPY rows into the INSERT's table and columns; the identity moves past given ids."""
        assert stmt.insert_into is not None
        cols = ", ".join(stmt.columns)
        with (
            self.raw.cursor() as cur,
            cur.copy(f"COPY {stmt.insert_into} ({cols}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        ident = self._identity(stmt)
        if ident is not None and ident in stmt.columns:
            self._bump_identity(stmt.insert_into, ident)
        return len(rows)

    def _bump_identity(self, table: str | None, column: str) -> None:
        """An INSERT gave the identity value itself: the next generated one must lie past it."""
        self.raw.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, %s), (SELECT MAX({column}) FROM {table}))",
            (table, column),
        )

    def run(self, sql: str) -> None:
        """Run our own statement (no translation): BEGIN, COMMIT, SET …"""
        try:
            self.raw.execute(sql)
        except psycopg.Error as exc:
            raise convert(exc, sql.split()[0].lower()) from exc

    def close(self) -> None:
        try:
            self.raw.close()
        except psycopg.Error:
            pass


class Catalog:
    """Identity columns and primary keys of the tables, read from the database once and again
    after DDL (shared by the connections of one Database)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._identity: dict[str, str] | None = None
        self._pk: dict[str, tuple[str, ...]] | None = None

    def forget(self) -> None:
        with self._lock:
            self._identity = None
            self._pk = None

    def _load(self, conn: Connection) -> None:
        rows = conn.raw.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE a.attidentity <> '' AND c.relnamespace = current_schema()::regnamespace"
        ).fetchall()
        pks = conn.raw.execute(
            "SELECT c.relname, a.attname FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
            "WHERE i.indisprimary AND c.relnamespace = current_schema()::regnamespace "
            "ORDER BY c.relname, array_position(i.indkey, a.attnum)"
        ).fetchall()
        pk: dict[str, list[str]] = {}
        for table, col in pks:
            pk.setdefault(table, []).append(col)
        with self._lock:
            self._identity = {t: c for t, c in rows}
            self._pk = {t: tuple(c) for t, c in pk.items()}

    def identity(self, conn: Connection, table: str) -> str | None:
        if self._identity is None:
            self._load(conn)
        assert self._identity is not None
        return self._identity.get(table)

    def primary_key(self, conn: Connection, table: str) -> tuple[str, ...]:
        if self._pk is None:
            self._load(conn)
        assert self._pk is not None
        return self._pk.get(table, ())


# -- the backend: a pool of connections, transactions, notifications -----------------------------


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://…"
    host, db, user = info.get("host", ""), info.get("dbname", ""), info.get("user", "")
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{'@' if user else ''}{host}{port}/{db}"


class Backend:
    """Connections to one PostgreSQL database, pooled, one per thread while it is in a
    transaction (so a read inside a write transaction sees that transaction's writes, as with
    SQLite)."""

    def __init__(
        self,
        url: str,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
        pool_size: int = 16,
    ) -> None:
        self.url = url
        self.name = redact(url)
        self._sync = "off" if synchronous.upper() == "OFF" else "on"
        self._busy = busy_timeout_ms
        self._size = pool_size
        self._idle: list[Connection] = []
        self._open = 0
        self._cond = threading.Condition()
        self._local = threading.local()
        self._catalog = Catalog()
        self._closed = False
        self._listeners: list[threading.Thread] = []
        self._stop = threading.Event()
        self._put(self._connect())  # open one now so a bad URL fails here

    # -- pool ------------------------------------------------------------------------------
    def _connect(self) -> Connection:
        try:
            raw = psycopg.connect(
                self.url, autocommit=True, row_factory=_row_factory, connect_timeout=10
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot open database {self.name}: {exc}") from exc
        raw.adapters.register_loader("numeric", _NumericLoader)
        raw.adapters.register_dumper(bool, _BoolDumper)
        conn = Connection(raw, self._catalog)
        conn.run(
            f"SET lock_timeout = {int(self._busy)}; SET synchronous_commit = {self._sync}; "
            "SET idle_in_transaction_session_timeout = 60000; SET TIME ZONE 'UTC'"
        )
        with self._cond:
            self._open += 1
        return conn

    def _get(self) -> Connection:
        deadline = time.monotonic() + self._busy / 1000
        with self._cond:
            while not self._idle and self._open >= self._size:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise StoreError(f"no free connection to {self.name}")
                self._cond.wait(left)
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _put(self, conn: Connection) -> None:
        with self._cond:
            if conn.broken or self._closed:
                self._open -= 1
                conn.close()
            else:
                self._idle.append(conn)
            self._cond.notify()

    def _discard(self, conn: Connection) -> None:
        conn.close()
        self._put(conn)

    @contextmanager
    def _session(self, begin: str) -> Iterator[Connection]:
        """A pooled connection inside ``begin``; a connection found dead before the body runs is
        replaced (the one failure that can be retried without running the body twice)."""
        if getattr(self._local, "conn", None) is not None:
            raise StoreError("cannot start a transaction within a transaction")
        for attempt in range(3):
            conn = self._get()
            try:
                conn.run(begin)
                break
            except StoreError:
                broken = conn.broken
                if broken:
                    self._discard(conn)
                else:  # e.g. the writer lock timed out: end the aborted transaction
                    try:
                        conn.run("ROLLBACK")
                    except StoreError:
                        conn.close()
                    self._put(conn)
                if not broken or attempt == 2:
                    raise
                log.warning("database connection to %s lost; reconnecting", self.name)
        self._local.conn = conn
        try:
            yield conn
        except BaseException:
            self._local.conn = None
            try:
                conn.run("ROLLBACK")
            except StoreError:
                pass
            self._put(conn)
            raise
        self._local.conn = None
        try:
            conn.run("COMMIT")
        except StoreError:
            if not conn.broken:
                try:
                    conn.run("ROLLBACK")
                except StoreError:
                    pass
            self._put(conn)
            raise
        self._put(conn)

    def write(self, exclusive: bool = True) -> Any:
        """A write transaction: waits its turn on the writer lock (``BEGIN IMMEDIATE``), unless
        ``exclusive`` is False (see :meth:`sync.db.Database.tx`)."""
        if not exclusive:
            return self._session("BEGIN")
        return self._session(f"BEGIN; SELECT pg_advisory_xact_lock({WRITER_LOCK})")

    def read(self) -> Any:
        """A read transaction: one snapshot, never waits for writers."""
        return self._session("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def all(self, sql: str, params: Any = ()) -> list[Any]:
        """One statement: in the thread's transaction if it has one, else on its own."""
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            return current.execute(sql, params).fetchall()
        conn = self._get()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            self._put(conn)

    # -- notifications (LISTEN/NOTIFY) ------------------------------------------------------
    def notify(self, channel: str) -> None:
        """Tell every process listening on ``channel``; inside a transaction, at its commit."""
        self.all("SELECT pg_notify(?, '')", (channel,))

    def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from a thread of its own) whenever ``channel`` is notified, and
        after a lost listening connection is back (a notification may have been missed)."""
        if not channel.isidentifier():
            raise ValueError(f"bad channel name {channel!r}")

        def loop() -> None:
            backoff = 0.5
            while not self._stop.is_set():
                try:
                    with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                        conn.execute(f"LISTEN {channel}")
                        callback()
                        backoff = 0.5
                        while not self._stop.is_set():
                            for _ in conn.notifies(timeout=0.5):
                                callback()
                except psycopg.Error as exc:
                    if self._stop.is_set():
                        return
                    log.warning("listening on %s at %s failed: %s", channel, self.name, exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)

        t = threading.Thread(target=loop, name=f"pg-listen-{channel}", daemon=True)
        t.start()
        self._listeners.append(t)

    def close(self) -> None:
        self._stop.set()
        for t in self._listeners:
            t.join(5)
        self._listeners.clear()
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()
