"""``ykt sim wallet …``: the simulated phone app of a card holder."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from sim import wallet as wallet_mod
from sim import wallet_business_cli
from sim.wallet_codes_cli import add_code_commands
from sync.cmdline import Run, Sub, command, json_option
from sync.money import format_fen


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, ensure_ascii=False) if args.json else text)
    return 0


def login(args: argparse.Namespace) -> int:
    w = wallet_mod.login(args.server, args.number, args.password)
    w.save(args.wallet)
    a = w.account
    return _emit(
        args,
        {"wallet": str(args.wallet), "account": a},
        f"signed in as {a['number']} {a['name']} ({a['type']}); wallet {args.wallet}",
    )


def balance(args: argparse.Namespace) -> int:
    me = wallet_mod.Wallet.load(args.wallet).call("GET", "/v1/app/me")
    return _emit(
        args,
        me,
        f"{me['number']} {me['name']}: balance {format_fen(me['balance_fen'])}"
        f", transition {format_fen(me['transition_fen'])}, status {me['status']}",
    )


def logout(args: argparse.Namespace) -> int:
    w = wallet_mod.Wallet.load(args.wallet)
    out = w.call("POST", "/v1/app/logout")
    return _emit(args, out, "signed out")


def wallet_command(parent: Sub, name: str, run: Run, text: str) -> argparse.ArgumentParser:
    """A command of ``ykt sim wallet``: it takes the wallet file, and ``--json``."""
    c = command(parent, name, run, text, json=False)
    c.add_argument("--wallet", type=Path, required=True, help="wallet file (JSON, 0600)")
    json_option(c)
    return c


def add_wallet_parser(cmds: Sub) -> None:
    p = cmds.add_parser(
        "wallet",
        help="the simulated phone app of a card holder",
        description="The simulated phone app (学付宝): sign in, balance, loss/unlock, bills, "
        "flow, top-up, electricity, found cards, payment and authentication codes, scan "
        "(reverse scan).",
    )
    sub = p.add_subparsers(dest="wallet_command", metavar="ACTION", required=True)

    cmd = functools.partial(wallet_command, sub)
    c = cmd("login", login, "sign in with number + query password (R16) into a new wallet file")
    c.add_argument("--server", required=True, help="central server URL")
    c.add_argument(
        "--number",
        required=True,
        help="staff/student number; card number for temporary and consumer cards",
    )
    c.add_argument("--password", required=True, help="query password (R4)")
    cmd("balance", balance, "balance, transition balance and status of the signed-in account")
    cmd("logout", logout, "end the wallet's session")
    wallet_business_cli.add_commands(
        sub, wallet_command
    )  # loss/unlock, bills, flow, electricity, …
    add_code_commands(cmd)  # pay-code, auth-code, scan (sim/wallet_codes_cli.py)
