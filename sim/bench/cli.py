"""``ykt bench``: benchmarks that print figures (docs/benchmarks.md); they never fail on a timing."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.bench import MODULES, main

NAMES = tuple(MODULES)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmarks and print figures (docs/benchmarks.md)",
        description="Measure this machine: the SQLite commit floor, journal durable append "
        "(empty and with 1,000,000 queued records), server ingest over loopback, sale latency "
        "on the simulated reader, API requests/s with 1 and 2 server processes, QR frame to "
        "decision on rendered phone screens, a card tap through pcscd, ingest and API on SQLite "
        "and PostgreSQL, a loss report reaching the hotlist of 500 terminals, and a kiosk reissue from the holder's confirm to the card at the mouth.  Prints "
        "figures next to the docs/benchmarks.md budgets; the exit status never depends on a timing.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small counts (about a minute in all): a smoke test, not figures to quote",
    )
    p.add_argument(
        "--only",
        "--suite",
        dest="only",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(NAMES)}",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with all figures")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="api: load time per measurement; qr: 5 presentations per second; card: 8 taps per "
        "second (default 5 s; with --quick 1 s, and one presentation for qr)",
    )
    p.add_argument(
        "--pg-flush-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="peak_pg: a slower disk: every WAL flush of the benchmark's PostgreSQL waits MS "
        "milliseconds more (its commit_delay, at most 100), as on a disk whose flush takes that "
        "long (default 0: this machine's disk)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="put the benchmark databases in a fresh directory under DIR (default: under "
        "TMPDIR), removed afterwards; choose DIR on the disk you want to measure",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the large journal fixture is cached between runs (default: "
        "TMPDIR/ykt-bench-cache)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="build the large journal fixture afresh and do not keep it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return main(args)
