"""The benchmarks ``ykt bench`` runs (SPEC §5): each one lives in its own module and is listed
in :data:`BENCHMARKS` by name; each prints figures and never fails on a timing."""

from __future__ import annotations

import argparse
import importlib

#: name -> module with ``run(seconds: float, as_json: bool)``
BENCHMARKS: dict[str, str] = {
    "api": "sync.server.bench_api",  # API requests/s on SQLite, 1 and 2 server processes
    "qr": "edge.bench_qr",  # phone codes: QR frame → decision on rendered phone screens
    "card": "edge.bench_card",  # a tap through pcscd: latency split, detection delay
    "db": "sync.server.bench_db",  # ingest records/s and API requests/s, SQLite and PostgreSQL
}


def main(args: argparse.Namespace) -> int:
    names = getattr(args, "only", None) or list(BENCHMARKS)
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        module.run(seconds=getattr(args, "seconds", 5.0), as_json=getattr(args, "json", False))
    return 0
