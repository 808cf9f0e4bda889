"""``ykt bench``: benchmarks that print figures (SPEC §5); they never fail on a timing.

Suites register in :data:`SUITES` (name → module with ``main(args) -> int``); ``--only NAME``
runs one.  The card path's suite is :mod:`edge.bench_card`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

#: name -> module path; a module that is not there (yet) is left out
SUITES = {
    "spine": "edge.benchmarks",
    "card": "edge.bench_card",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="run the benchmarks and print figures (SPEC §5)")
    p.add_argument("--only", choices=sorted(SUITES), help="run one suite")
    p.add_argument("--taps", type=int, default=40, help="card taps per mode (card suite)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rc = 0
    for name, module in SUITES.items():
        if args.only not in (None, name) or importlib.util.find_spec(module) is None:
            continue
        rc |= int(importlib.import_module(module).main(args))
    return rc
