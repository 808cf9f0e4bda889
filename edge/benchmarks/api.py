"""API requests/s of the central server on SQLite with 1 and 2 server processes: the
measurement lives in :mod:`sync.server.bench_api`; this module runs it for ``ykt bench``
(``--seconds`` of load per measurement, 1 s with ``--quick``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.benchmarks import Options


def run(work: Path, opts: Options) -> dict[str, Any]:
    from sync.server import bench_api

    seconds = opts.seconds if opts.seconds is not None else (1.0 if opts.quick else 5.0)
    return {"runs": [bench_api.measure(n, seconds) for n in (1, 2)]}
