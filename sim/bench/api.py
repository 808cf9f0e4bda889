"""API requests/s of the central server on SQLite with 1 and 2 server processes: the
measurement lives in :mod:`sim.bench.api_load`; this module runs it for ``ykt bench``
(``--seconds`` of load per measurement, 1 s with ``--quick``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.bench import Options


def run(work: Path, opts: Options) -> dict[str, Any]:
    from sim.bench import api_load as bench_api

    seconds = opts.seconds if opts.seconds is not None else (1.0 if opts.quick else 5.0)
    return {"runs": [bench_api.measure(n, seconds) for n in (1, 2)]}
