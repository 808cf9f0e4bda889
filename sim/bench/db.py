"""Ingest records/s and API requests/s on SQLite and PostgreSQL, with 1 and 2 server
processes: the measurement lives in :mod:`sim.bench.db_load`; this module runs it for
``ykt bench`` (``--seconds`` of load per measurement, default 5).  ``--quick`` measures only a
short SQLite ingest with one server process (no PostgreSQL cluster to start)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.bench import Options


def run(work: Path, opts: Options) -> dict[str, Any]:
    from sim.bench import db_load as bench_db

    if opts.quick and opts.seconds is None:
        return {"figures": [bench_db.measure_ingest(1, 1.0, None)]}
    return {"figures": bench_db.measure_all(opts.seconds or 5.0)}
