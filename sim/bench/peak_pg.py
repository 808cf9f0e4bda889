"""``ykt bench --only peak_pg`` (also run by ``--only peak``): the lunch peak of
:mod:`sim.bench.peak` on PostgreSQL (a throwaway cluster) with two server processes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.bench import peak

if TYPE_CHECKING:
    from sim.bench import Options


def run(work: Path, opts: Options) -> dict[str, Any]:
    return peak.run_pg(work, opts)
