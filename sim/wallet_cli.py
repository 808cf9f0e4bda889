"""``ykt sim wallet …``: the simulated phone app of a card holder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TypeAlias

from sim import wallet as wallet_mod
from sim import wallet_business_cli
from sim.wallet_codes_cli import add_code_commands
from sync.money import format_fen

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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


def add_wallet_parser(cmds: Sub) -> None:
    p = cmds.add_parser(
        "wallet",
        help="the simulated phone app of a card holder",
        description="The simulated phone app (学付宝): sign in, balance, loss/unlock, bills, "
        "flow, top-up, electricity, found cards, payment and authentication codes, scan "
        "(reverse scan).",
    )
    sub = p.add_subparsers(dest="wallet_command", metavar="ACTION", required=True)

    def cmd(
        name: str, fn: Any, help_text: str, needs_wallet: bool = True
    ) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text)
        c.add_argument("--wallet", type=Path, required=True, help="wallet file (JSON, 0600)")
        c.add_argument("--json", action="store_true", help="print one JSON object")
        c.set_defaults(func=fn)
        return c

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
    wallet_business_cli.add_commands(sub, cmd)  # loss/unlock, bills, flow, electricity, …
    add_code_commands(cmd)  # pay-code, auth-code, scan (sim/wallet_codes_cli.py)
