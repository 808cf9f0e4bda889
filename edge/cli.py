"""``ykt``: the one command, with a subcommand per job.

Each subcommand lives next to the code it drives and registers itself here through
``add_parser``; this module only assembles them and turns errors into exit codes:
0 done, 1 the operation failed (message on stderr), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edge.errors import ConfigError, EdgeError


def build_parser() -> argparse.ArgumentParser:
    from edge import bench, demo, verify_cli
    from edge.pos import cli as pos_cli
    from sim import cli as sim_cli
    from sync import admin_cli
    from sync.server import cli as server_cli

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
    server_cli.add_parser(sub)
    pos_cli.add_parser(sub)
    admin_cli.add_parser(sub)
    sim_cli.add_parser(sub)
    demo.add_parser(sub)
    verify_cli.add_parser(sub)
    bench.add_parser(sub)
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
    except ConfigError as exc:
        print(f"ykt {args.command}: {exc}", file=sys.stderr)
        return 2
    except EdgeError as exc:
        print(f"ykt {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
