"""What the ``ykt`` subcommand modules share to declare their commands (argparse): a command
that runs a function, its ``--json`` option, a group of commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: what a command runs: the parsed arguments in, the exit status out
Run: TypeAlias = Callable[[argparse.Namespace], int]


def command(
    parent: Sub, name: str, run: Run, text: str, *, json: bool = True
) -> argparse.ArgumentParser:
    """The command ``name`` of ``parent`` that runs ``run``; ``text`` is its help and its
    description.  With ``json`` it takes :func:`json_option` (a command whose own options come
    first adds it itself)."""
    c = parent.add_parser(name, help=text, description=text)
    if json:
        json_option(c)
    c.set_defaults(func=run)
    return c


def json_option(c: argparse.ArgumentParser) -> None:
    c.add_argument("--json", action="store_true", help="print one JSON object")


def request_id(args: argparse.Namespace) -> dict[str, str]:
    """The ``--request-id`` a command got (an idempotency key: the server applies a retried
    request once) as the part of a request body it goes in; nothing without it."""
    return {"request_id": args.request_id} if args.request_id else {}


def group(parent: Sub, name: str, text: str, dest: str = "sub") -> Sub:
    """A command ``name`` that is a group of commands (``ykt admin account …``): its ``ACTION``."""
    return parent.add_parser(name, help=text).add_subparsers(
        dest=dest, metavar="ACTION", required=True
    )
