"""``ykt sim``: drive simulated hardware on a running agent."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypeAlias

from edge.money import format_fen, parse_amount
from sim.control import AgentControl
from sim.errors import SimError
from sim.wallet_cli import add_wallet_parser

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _amount(text: str) -> int:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _print_outcome(o: dict[str, Any]) -> None:
    who = o["account"].get("name") or o["account"].get("number") or ""
    if o["approved"]:
        line = f"APPROVED {format_fen(o['amount_fen'] or 0)}"
    elif o["needs_pin"]:
        line = "NEEDS PIN: " + str(o["reason"])
    else:
        line = f"DECLINED: {o['reason']}"
    extras = []
    if o["balance_fen"] is not None:
        extras.append(f"balance {format_fen(o['balance_fen'])}")
    if o["offline"]:
        extras.append("offline")
    if who:
        extras.append(who)
    print(line + (f"  ({', '.join(extras)})" if extras else ""))


def sale(args: argparse.Namespace) -> int:
    ctl = AgentControl(args.agent, timeout=args.timeout)
    out = ctl.sale(args.amount, args.card, uid=args.uid, pin=args.pin)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        _print_outcome(out)
    return 0


def tap(args: argparse.Namespace) -> int:
    out = AgentControl(args.agent).present(args.card, args.uid)
    print(
        json.dumps(out, ensure_ascii=False) if args.json else f"card {out['presented']} presented"
    )
    return 0


def state(args: argparse.Namespace) -> int:
    ctl = AgentControl(args.agent)
    out = {"screen": ctl.state(), "status": ctl.status()}
    print(json.dumps(out, ensure_ascii=False, indent=None if args.json else 2))
    return 0


def add_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "sim",
        help="simulated hardware: tap cards and sell on a running agent",
        description="Drive the simulated devices of a running agent through its control API.",
    )
    cmds = p.add_subparsers(dest="sim_command", metavar="ACTION", required=True)

    def cmd(name: str, fn: Any, help_text: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = cmds.add_parser(name, help=help_text, description=help_text)
        c.add_argument(
            "--agent", required=True, help="agent control URL, e.g. http://127.0.0.1:8701"
        )
        c.add_argument("--json", action="store_true", help="print one JSON object")
        c.set_defaults(func=lambda a: _wrap(fn, a))
        return c

    c = cmd(
        "sale", sale, "key an amount, tap a card (and key the PIN when asked); print the outcome"
    )
    c.add_argument("--amount", required=True, type=_amount, help="yuan, e.g. 12.50")
    c.add_argument("--card", required=True, help="card number of the simulated card to tap")
    c.add_argument("--uid", help="UID the simulated card reports (default: the issued UID)")
    c.add_argument("--pin", help="consumption password to key if the sale asks for it (R6)")
    c.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the outcome")
    c = cmd("tap", tap, "put a simulated card on the agent's reader")
    c.add_argument("--card", required=True)
    c.add_argument("--uid")
    cmd("state", state, "print the agent's screen and status")
    add_wallet_parser(cmds)
    from sim.idp import add_idp_parser

    add_idp_parser(cmds)


def _wrap(fn: Any, args: argparse.Namespace) -> int:
    try:
        rc: int = fn(args)
        return rc
    except SimError as exc:
        print(f"ykt sim: {exc}", file=sys.stderr)
        return 1
