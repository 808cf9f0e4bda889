"""Pieces the ingest hot path relies on: CampusDays, Tx.insert_rows, and writers taking
turns on one database (main's tests/test_db.py checks that a writer gives up after the busy
timeout)."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from sync.clock import CampusDays, campus_date
from sync.db import Database


@pytest.mark.parametrize(
    "tz", ["Asia/Shanghai", "America/Sao_Paulo", "America/Havana", "Asia/Kolkata", "UTC"]
)
def test_campus_days_agree_with_campus_date(tz: str) -> None:
    days, rng = CampusDays(tz), random.Random(tz)
    ms = 1_500_000_000_000
    for _ in range(20_000):  # close together, across midnights and DST changes
        ms += rng.randrange(0, 3 * 3_600_000)
        assert days(ms) == campus_date(ms, tz)
    for _ in range(2_000):  # far apart
        far = rng.randrange(0, 2_000_000_000_000)
        assert days(far) == campus_date(far, tz)


def test_insert_rows_in_chunks(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db", synchronous="OFF")
    with db.tx() as tx:
        tx.schema("CREATE TABLE t (a {id}, b {text})")
        assert tx.insert_rows("t", ("a", "b"), [(i, f"r{i}") for i in range(250)], chunk=100) == 250
        assert tx.insert_rows("t", ("a", "b"), []) == 0
    assert db.scalar("SELECT COUNT(*) FROM t") == 250
    assert db.scalar("SELECT b FROM t WHERE a = 249") == "r249"


def test_writers_of_one_process_take_turns(tmp_path: Path) -> None:
    """Eight threads write at once and every transaction lands; a transaction that fails gives
    its turn back (a kept turn would make every later writer time out)."""
    db = Database(tmp_path / "w.db", synchronous="OFF", busy_timeout_ms=2000)
    with db.tx() as tx:
        tx.schema("CREATE TABLE t (k {id}, who {int})")
    errors: list[Exception] = []

    def writer(n: int) -> None:
        try:
            for i in range(60):
                if i == 30:
                    with pytest.raises(ZeroDivisionError), db.tx() as tx:
                        tx.execute("INSERT INTO t (who) VALUES (?)", (-1,))
                        _ = 1 / 0  # the transaction fails: rolled back, turn given back
                with db.tx() as tx:
                    tx.execute("INSERT INTO t (who) VALUES (?)", (n,))
                    tx.all(  # hold the transaction a little, without the GIL
                        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                        "WHERE x < 3000) SELECT COUNT(*) FROM c"
                    )
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.scalar("SELECT COUNT(*) FROM t") == 480
    assert db.scalar("SELECT COUNT(*) FROM t WHERE who = -1") == 0
