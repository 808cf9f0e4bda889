"""Issue 10 item 18: data directories and databases are private whatever the umask
(sync/files.py, the SQLite backend)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.db import Database
from sync.files import private_dir, write_private


@pytest.fixture
def lax_umask() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_a_database_and_its_wal_are_0600_under_umask_000(tmp_path: Path, lax_umask: None) -> None:
    db = Database(tmp_path / "j.db")
    with db.tx() as tx:
        tx.execute("CREATE TABLE t (x INTEGER)")
        tx.execute("INSERT INTO t (x) VALUES (1)")
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == ["j.db", "j.db-shm", "j.db-wal"]
    assert {n: _mode(tmp_path / n) for n in made} == dict.fromkeys(made, 0o600)
    db.close()


def test_a_database_made_world_readable_before_is_made_private(tmp_path: Path) -> None:
    (tmp_path / "old.db").touch()
    (tmp_path / "old.db").chmod(0o644)
    Database(tmp_path / "old.db").close()
    assert _mode(tmp_path / "old.db") == 0o600


def test_a_private_dir_is_0700_and_its_files_lose_group_and_other(
    tmp_path: Path, lax_umask: None
) -> None:
    data = tmp_path / "a" / "data"
    data.mkdir(parents=True, mode=0o777)
    (data / "terminal.json").write_text("{}")
    (data / "terminal.json").chmod(0o666)
    (data / "sub").mkdir()
    private_dir(data)
    assert _mode(data) == 0o700
    assert _mode(data / "terminal.json") == 0o600
    write_private(data / "new.key", b"k")
    assert _mode(data / "new.key") == 0o600
