"""``ykt bench``: benchmarks that print figures (SPEC §5); they never fail on a timing."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="run the benchmarks and print figures (SPEC §5)")
    p.add_argument("--only", action="append", help="run only this benchmark (e.g. api)")
    p.add_argument("--seconds", type=float, default=5.0, help="load time per measurement")
    p.add_argument("--json", action="store_true", help="one JSON object per figure")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge import benchmarks

    return benchmarks.main(args)
