"""Which database the server under test keeps its data in: SQLite (a file in its data
directory) or PostgreSQL (a fresh database in a throwaway cluster this test session starts on
loopback from Debian's postgresql, :mod:`sim.harness.pg`).

The modules in ``conftest.BOTH_DBS`` run once per database (``pytest --db both|sqlite|postgres``,
default both).  Everything that starts a server in a test (``ServerProc``, ``open_live``,
``make_context``) asks :func:`fresh_url` for its database, so a test does not say which one it
runs on.
"""

from __future__ import annotations

import atexit
import threading

from sim.harness.pg import TempCluster
from sync.db import Database

KINDS = ("sqlite", "postgres")

_current = "sqlite"
_cluster: TempCluster | None = None
_lock = threading.Lock()
#: databases made so far, in order (the fixtures drop those of a finished test or module)
created: list[str] = []
#: connections this process opened to them (closed before the drop)
_opened: dict[str, list[Database]] = {}


def current() -> str:
    return _current


def set_current(kind: str) -> None:
    global _current
    assert kind in KINDS, kind
    _current = kind


def cluster() -> TempCluster:
    """The session's PostgreSQL cluster, started on first use."""
    global _cluster
    with _lock:
        if _cluster is None:
            _cluster = TempCluster().start()
            atexit.register(stop)
        return _cluster


def fresh_url() -> str | None:
    """A new empty database of the current kind: a PostgreSQL URL, or None for SQLite."""
    if _current == "sqlite":
        return None
    url = cluster().create_database()
    created.append(url)
    return url


def opened(url: str | None, db: Database) -> Database:
    """Note an in-process connection to a test database, to be closed before it is dropped."""
    if url is not None:
        _opened.setdefault(url, []).append(db)
    return db


def drop_since(mark: int) -> None:
    """Drop the databases made after ``created[mark]`` (their servers have stopped)."""
    while len(created) > mark:
        url = created.pop()
        for db in _opened.pop(url, []):
            db.close()
        if _cluster is not None:
            _cluster.drop_database(url)


def stop() -> None:
    global _cluster
    with _lock:
        if _cluster is not None:
            _cluster.stop()
            _cluster = None
