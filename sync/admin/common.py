"""What the ``ykt admin`` commands share: the staff client of the server's HTTP API, the
options every command takes, and how an answer is printed (text, or ``--json``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sync.client import ServerClient
from sync.errors import ConfigError
from sync.money import format_fen, parse_amount


class AdminClient(ServerClient):
    def __init__(self, base_url: str, token: str) -> None:
        super().__init__(base_url, headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return self.request(method, path, body=body, signed=False, timeout=(3.0, 300.0))


def client_for(args: argparse.Namespace) -> AdminClient:
    server = args.server or os.environ.get("YKT_SERVER")
    token_file = args.token_file or os.environ.get("YKT_ADMIN_TOKEN_FILE")
    if not server:
        raise ConfigError("--server URL is required (or YKT_SERVER)")
    if not token_file:
        raise ConfigError("--token-file FILE is required (or YKT_ADMIN_TOKEN_FILE)")
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the admin token: {exc}") from exc
    return AdminClient(server, token)


def amount_arg(text: str) -> int:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def account_path(number: str) -> str:
    return f"/v1/admin/accounts/{quote(number, safe='')}"


def print_account(a: dict[str, Any]) -> None:
    print(f"{a['number']}  {a['name']}  ({a['type']})  status {a['status']}")
    print(
        f"  balance {format_fen(a['balance_fen'])}  transition {format_fen(a['transition_fen'])}"
        f"  limit {format_fen(a['limit_fen'])}/day  spent today {format_fen(a['spent_today_fen'])}"
    )
    if a.get("pin_locked"):
        print("  consumption password LOCKED (desk: ykt admin account pin-reset)")
    for c in a.get("cards", []):
        print(f"  card {c['card_no']}  uid {c['uid']}  generation {c['generation']}  {c['status']}")
    if "bills" in a:
        print("  bills (账单):")
        for b in a["bills"] or [{"time": "", "kind": "(none)", "amount_fen": 0, "memo": ""}]:
            print(f"    {b['time']}  {b['kind']:<8} {format_fen(b['amount_fen']):>10}  {b['memo']}")
    if "flow" in a:
        print("  transaction flow (交易流水):")
        for f in a["flow"]:
            money = "" if f.get("amount_fen") is None else format_fen(f["amount_fen"])
            print(
                f"    {f['time']}  {f['kind']:<10} {money:>10}  {f.get('memo') or f.get('detail', '')}"
            )


def emit(args: argparse.Namespace, data: dict[str, Any], text: Any = None) -> int:
    if getattr(args, "json", False) or text is None:
        print(json.dumps(data, ensure_ascii=False, indent=None if args.json else 2))
    else:
        text(data)
    return 0
