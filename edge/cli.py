"""``ykt``: the one command, with a subcommand per job.

Each subcommand lives next to the code it drives and registers itself through its module's
``add_parser``; this module names those modules by path (so it imports none of them, the
simulator's included, until the command line is read) and is the one place that turns an error
into an exit status (:func:`sync.errors.exit_code`): 0 done, 1 the operation failed (message
on stderr), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sync.errors import YktError, exit_code

#: the modules that add the subcommands, in the order ``ykt --help`` lists them
COMMAND_MODULES = (
    "sync.server.cli",  # ykt server
    "edge.pos.cli",  # ykt pos
    "edge.kiosk.cli",  # ykt kiosk
    "sync.admin.cli",  # ykt admin
    "sim.cli",  # ykt sim
    "sim.demo",  # ykt demo
    "edge.verify_cli",  # ykt verify-code
    "edge.receipt_cli",  # ykt verify-receipt
    "sim.bench.cli",  # ykt bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ykt",
        description="Campus one-card (校园一卡通) terminal software: central server, POS agent, "
        "admin and simulator commands.",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default WARNING)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rc: int = args.func(args)
    except YktError as exc:
        print(f"ykt {args.command}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt as exc:
        return exit_code(exc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
