"""What :class:`sync.db.Database` needs from a database engine: the :class:`Backend` protocol,
with two implementations, :mod:`sync.db.sqlite` and :mod:`sync.db.postgres`.

The SQL itself is the same on both (written in the subset SQLite 3.40 and PostgreSQL 15 both
accept as written; docs/database.md).  What legitimately differs is stated here, by each
backend, never guessed by reading the SQL:

- :attr:`Backend.types`: the column types of a table definition.  Migrations write
  ``{id}``, ``{int}``, ``{text}``, ``{blob}``, ``{real}`` and ``{without_rowid}``
  (:data:`TYPE_NAMES`) and each backend fills in its own (:func:`fill_types`).
- the DB-API parameter style (``?`` for sqlite3, ``%s`` for psycopg): the SQL says ``?`` (or
  ``:name``), and the PostgreSQL backend swaps the marks (and doubles ``%``) outside string
  literals, quoted names and comments (:func:`sync.db.postgres.pg_params`).
- how many rows go in at once (:meth:`Session.insert_rows`: multi-row ``VALUES`` on SQLite,
  ``COPY`` on PostgreSQL), transactions, connections, errors and notifications.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sync.errors import StoreError

Row = Mapping[str, Any]
Params = Sequence[Any] | Mapping[str, Any]

#: the column types a table definition may name, as ``{name}``
TYPE_NAMES = ("id", "int", "text", "blob", "real", "without_rowid")
_TYPE = re.compile(r"\{([a-z_]+)\}")


def fill_types(sql: str, types: Mapping[str, str]) -> str:
    """A table definition with its ``{int}``, ``{text}``, … replaced by ``types``."""

    def one(m: re.Match[str]) -> str:
        try:
            return types[m.group(1)]
        except KeyError:
            raise StoreError(
                f"unknown column type {m.group()} (known: {', '.join(TYPE_NAMES)})"
            ) from None

    return _TYPE.sub(one, sql)


def placeholders(n: int) -> str:
    """``?, ?, …`` for an ``IN (…)`` list of ``n`` values.  An empty list is refused: SQLite
    takes ``IN ()``, PostgreSQL does not, so the caller says what no values means."""
    if n < 1:
        raise ValueError("an IN list needs at least one value (decide the empty case in Python)")
    return ", ".join("?" * n)


def value_rows(n: int, width: int) -> str:
    """``(?, ?), (?, ?), …``: ``n`` rows of ``width`` parameters, the ``VALUES`` list of one
    set-based statement instead of one statement per row (``UPDATE t SET c = v.column2 FROM
    (VALUES …) AS v WHERE t.id = v.column1``: both engines name a ``VALUES`` list's columns
    ``column1``, ``column2``, …).  A parameter in a ``VALUES`` list has no column to take its
    type from (PostgreSQL reads it as text), so the statement casts where it uses a value
    that is not text: ``CAST(v.column2 AS BIGINT)`` (docs/database.md).  ``n`` of 0 is
    refused, as by :func:`placeholders`."""
    if n < 1 or width < 1:
        raise ValueError("a VALUES list needs at least one row (decide the empty case in Python)")
    return ", ".join(["(" + ", ".join("?" * width) + ")"] * n)


def values_insert(
    table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[str, Params]:
    """One multi-row ``INSERT INTO table (columns) VALUES (…), (…)`` of ``rows``."""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {value_rows(len(rows), len(columns))}",
        [v for row in rows for v in row],
    )


class Result(Protocol):
    """What one statement gives back (a ``sqlite3.Cursor`` is one)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Session(Protocol):
    """One connection inside one transaction."""

    def execute(self, sql: str, params: Params = ..., /) -> Result: ...

    def executemany(self, sql: str, rows: Iterable[Params]) -> int: ...

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], chunk: int
    ) -> int: ...

    def insert_statement(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], chunk: int
    ) -> tuple[str, Params] | None:
        """:meth:`insert_rows` as one statement, for a :meth:`batch`, where that saves a round
        trip and it would be one plain ``INSERT`` (a few rows, no identity values given); else
        None."""
        ...

    def batch(
        self, statements: Sequence[tuple[str, Params]], last: bool = False
    ) -> list[list[Any]]:
        """Run ``statements`` in order, as one round trip where the engine allows it; the rows
        of each (empty for a statement that returns none).  ``last``: the transaction's
        commit goes in that round trip too."""
        ...

    def later(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Run ``statements``, whose answers nobody reads, by the transaction's next
        statement or its commit, in that one's round trip where the engine allows it."""
        ...

    def defer_commit(self) -> None:
        """This transaction's commit may leave the disk for later on a thread whose commits
        may (:class:`CommitGroup`), unless :meth:`hold_durable` was called."""
        ...

    def hold_durable(self) -> None:
        """This transaction's commit waits for the disk whatever else says: others learn of
        what it wrote (a feed version, a notification) as soon as it commits."""
        ...


class CommitGroup:
    """A thread's leave to commit without waiting for the disk (:meth:`Backend.group`): a write
    transaction that asked for it (:meth:`Session.defer_commit`) and took no feed version and
    sent no notification commits so whenever ``when()`` says yes at its commit, and ``deferred``
    becomes true. While ``waiting`` (the group's owner has such commits to put on disk), a
    transaction that wrote and whose commit waited for the disk sets ``flushed``: every commit
    before it is on disk too (PostgreSQL flushes its WAL in order). Whoever set the group
    answers for what follows: nothing that such a commit did may be told to anyone outside the
    database until ``flushed`` or :meth:`Backend.flush` has returned (a crash before then may
    lose it, and only it and the commits after it)."""

    __slots__ = ("deferred", "flushed", "waiting", "when")

    def __init__(self, when: Callable[[], bool]) -> None:
        self.when = when
        self.deferred = False
        self.flushed = False
        self.waiting = False


class Rider:
    """Statements that go with a thread's next write transaction (:meth:`Backend.rider`):
    ``committed`` once that transaction committed with them."""

    __slots__ = ("committed", "statements")

    def __init__(self, statements: Sequence[tuple[str, Params]]) -> None:
        self.statements = list(statements)
        self.committed = False


class Backend(Protocol):
    """One database: connections, transactions, errors, notifications."""

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        ...

    @property
    def name(self) -> str:
        """Where the data is, for messages (a PostgreSQL URL without its password)."""
        ...

    @property
    def types(self) -> Mapping[str, str]:
        """The column types of a table definition, for :data:`TYPE_NAMES`."""
        ...

    def write(self, exclusive: bool, durable: bool = True) -> AbstractContextManager[Session]:
        """A write transaction that runs while no other writer does (``exclusive``)."""
        ...

    def read(self) -> AbstractContextManager[Session]:
        """A read transaction: one snapshot."""
        ...

    def rider(
        self, statements: Sequence[tuple[str, Params]]
    ) -> AbstractContextManager[Rider | None]:
        """``statements`` to send with the thread's next write transaction, or None where
        round trips cost nothing (SQLite: the caller runs them by itself)."""
        ...

    def all(self, sql: str, params: Params) -> list[Row]:
        """One statement's rows, in the thread's transaction if it has one."""
        ...

    def reads(self, statements: Sequence[tuple[str, Params]]) -> list[list[Row]]:
        """The rows of each statement, as :meth:`all` gives them, in one round trip where the
        engine allows it."""
        ...

    def scrub(self) -> None:
        """Leave no copy of deleted or overwritten data in the engine's files beyond what it
        must keep (SQLite: its write-ahead log, checkpointed and truncated)."""
        ...

    def can_listen(self) -> bool: ...

    def writes_inline(self) -> bool: ...

    def group(self, group: CommitGroup | None) -> None:
        """Set (or, with None, clear) this thread's :class:`CommitGroup`.  SQLite: nothing (a
        commit there always waits for the disk)."""
        ...

    def flush(self) -> None:
        """Return once every commit made before the call, by any connection, is on disk."""
        ...

    def notify(self, channel: str) -> None: ...

    def listen(self, channel: str, callback: Callable[[], None]) -> None: ...

    def close(self) -> None: ...
