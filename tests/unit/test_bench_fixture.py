"""The large-journal fixture ``ykt bench`` builds (:mod:`sim.bench.journal_fixture`): chained,
signed, cached, and rebuilt when the cached copy is damaged."""

from __future__ import annotations

from pathlib import Path

from sim.bench import journal_fixture
from sync.db import Database


def test_fixture_is_chained_signed_cached_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = journal_fixture.obtain(tmp_path / "a.db", 300, cache)
    assert first["cached"] is False and first["records"] == 300
    journal_fixture.spot_check(tmp_path / "a.db", 300)  # the copy verifies too

    again = journal_fixture.obtain(tmp_path / "b.db", 300, cache)
    assert again["cached"] is True

    damaged = Path(again["cache_file"])
    db = Database(damaged)
    with db.tx() as tx:
        tx.execute(
            "UPDATE journal SET body = replace(body, '\"amt\":', '\"amt\":1') WHERE seq = 299"
        )
    db.close()
    rebuilt = journal_fixture.obtain(tmp_path / "c.db", 300, cache)
    assert rebuilt["cached"] is False and "chain broken" in rebuilt["cache_rejected"]
    journal_fixture.spot_check(damaged, 300)
