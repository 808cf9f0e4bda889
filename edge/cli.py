"""``ykt``: the one command, with a subcommand per job.

Each subcommand lives next to the code it drives and registers itself through its module's
``add_parser``; this module names those modules by path and imports only the one of the
subcommand the command line names (so ``ykt sim fleet`` does not import the server's web app,
nor ``ykt server`` the simulator) and is the one place that turns an error
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

#: the subcommands in the order ``ykt --help`` lists them: (name, the module whose
#: ``add_parser`` adds it, its one-line help as that module gives it; tests/unit/test_cli_lazy.py
#: checks the two agree)
COMMANDS = (
    (
        "server",
        "sync.server.cli",
        "run the central server (API, ledger, journal ingest, delta feed)",
    ),
    (
        "pos",
        "edge.pos.cli",
        "run a canteen POS agent (card reader, journal, sync, control API and screens)",
    ),
    (
        "kiosk",
        "edge.kiosk.cli",
        "run a self-service kiosk agent (holder's reader, encoder, card dispenser, touch screen)",
    ),
    ("admin", "sync.admin.cli", "service-desk and operator commands against the central server"),
    (
        "sim",
        "sim.cli",
        "simulated hardware and phone: tap cards, show codes, sell on a running agent",
    ),
    (
        "demo",
        "sim.demo",
        "run the server and a POS agent on simulated hardware, with demo accounts",
    ),
    (
        "verify-code",
        "edge.verify_cli",
        "verify an authentication code (R18): who it is and whether access is allowed",
    ),
    (
        "verify-receipt",
        "edge.receipt_cli",
        "check a paper receipt's QR code: genuine, altered or unknown",
    ),
    ("bench", "sim.bench.cli", "run the benchmarks and print figures (docs/benchmarks.md)"),
)
#: the modules that add the subcommands, in the order ``ykt --help`` lists them
COMMAND_MODULES = tuple(module for _name, module, _help in COMMANDS)
#: commands of a group built alone when the command line names them: (group, command) → (the
#: module and function that add the group, the module and function that add the command) —
#: the fleet simulator runs without importing the rest of ``ykt sim`` (a web app among them)
ALONE = {("sim", "fleet"): ("sim.group", "add_sim_group", "sim.fleet.cli", "add_fleet_parser")}
#: the options of ``ykt`` itself that take a value (before the command)
_VALUED = ("--log-level",)


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (its first word that is not an option of ``ykt`` itself
    or such an option's value), or None when it names none."""
    at = _command_at(argv)
    return None if at is None else argv[at]


def _command_at(argv: Sequence[str]) -> int | None:
    skip = False
    for i, word in enumerate(argv):
        if skip:
            skip = False
        elif word in _VALUED:
            skip = True
        elif word == "--" or not word.startswith("-"):
            return None if word == "--" else i
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ykt`` parser.  Without ``argv``, every subcommand's module is imported and adds
    its whole tree (the docs and the tests walk it).  With ``argv``, only the module of the
    subcommand it names is imported (starting the server or the simulator imports neither
    the other's code nor its libraries); the others are listed by name and help alone, which
    is all ``ykt --help`` shows of them."""
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
    at = None if argv is None else _command_at(argv)
    chosen = None if argv is None or at is None else argv[at]
    action = None if argv is None or at is None or at + 1 >= len(argv) else argv[at + 1]
    for name, module, text in COMMANDS:
        alone = ALONE.get((name, action or ""))
        if argv is not None and name == chosen and alone is not None:
            group_module, add_group, command_module, add_command = alone
            cmds = getattr(importlib.import_module(group_module), add_group)(sub)
            getattr(importlib.import_module(command_module), add_command)(cmds)
        elif argv is None or name == chosen:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
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
