"""The ingest benchmark of ``ykt bench --only db`` runs (briefly) on both databases: figures are
not checked, only that it measures real work without errors."""

from __future__ import annotations

from sim.bench import db_load as bench_db
from tests import dbs


def test_ingest_benchmark_measures_applied_records(db_kind: str) -> None:
    f = bench_db.measure_ingest(1, seconds=0.5, db_url=dbs.fresh_url(), clients=2)
    assert f["db"] == {"sqlite": "sqlite", "postgres": "postgresql"}[db_kind]
    assert f["errors"] == 0 and f["records"] >= bench_db.BATCH and f["records_per_s"] > 0
