"""``ykt bench``: benchmarks that print figures (SPEC §5); they never fail on a timing.

Suites are modules with ``add_arguments(parser)`` and ``main(args) -> int``, registered in
:data:`SUITES`; ``--suite NAME`` runs one (repeatable), the default runs them all.
"""

from __future__ import annotations

import argparse
import importlib

#: suite name -> module
SUITES: dict[str, str] = {
    "qr": "edge.bench_qr",  # phone codes: QR frame → decision (issue 4)
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="run the benchmarks and print figures (SPEC §5)")
    p.add_argument(
        "--suite",
        action="append",
        choices=sorted(SUITES),
        help="run only this suite (repeatable; default: all)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per suite")
    for module in SUITES.values():
        importlib.import_module(module).add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rc = 0
    for name in args.suite or list(SUITES):
        rc |= int(importlib.import_module(SUITES[name]).main(args))
    return rc
