"""``ykt sim``: drive simulated hardware.

- on a running agent, through its control API: ``sale``, ``tap``, ``state``, and the till's
  ``cashier sign-in|sign-out``, ``shift open|close``, ``refund``;
- virtual PC/SC readers in a private pcscd: ``reader start|stop|restart|status``;
- simulated MIFARE Classic 1K cards as image files: ``card new|present|remove|tear|dump``;
- a simulated card dispenser on a pseudo-terminal: ``dispenser start|status|fault|take|stop``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sim import cardcli, periph_cli, till_cli
from sim.chaos.cli import add_chaos_parser
from sim.control import AgentControl, token_file_option
from sim.dispenser import cli as dispenser_cli
from sim.errors import SimUsageError
from sim.fleet.cli import add_fleet_parser
from sim.group import add_sim_group
from sim.idp import add_idp_parser
from sim.kiosk_cli import add_parser as add_kiosk_parser
from sim.paygate import add_paygate_parser
from sim.phone_screen import qr_png
from sim.wallet_cli import add_wallet_parser
from sync.cmdline import Run, Sub, command, json_option
from sync.money import format_fen, parse_amount


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


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SimUsageError(f"cannot read {path}: {exc}") from exc


def sale(args: argparse.Namespace) -> int:
    ctl = AgentControl(args.agent, timeout=args.timeout, token_file=args.token_file)
    if args.reverse:
        return _reverse(args, ctl)
    if args.qr is not None:
        out = ctl.sale_qr(args.amount, _read_file(args.qr))
    else:
        if args.card is None:
            reader = str(ctl.status().get("reader", ""))
            if reader.startswith("sim://"):
                print(
                    f"ykt sim: --card CARD_NO is needed: this agent reads {reader}, a "
                    "simulated reader only --card puts a card on (on a pcsc:// reader the card "
                    "lying on it pays without --card)",
                    file=sys.stderr,
                )
                return 2
        out = ctl.sale(args.amount, args.card, uid=args.uid, pin=args.pin)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        _print_outcome(out)
    return 0


def _reverse(args: argparse.Namespace, ctl: AgentControl) -> int:
    """Reverse scan: key the amount, show the payment request; the agent then waits for the
    proof (``ykt sim proof``)."""
    s = ctl.reverse(args.amount)
    out = {
        "request_text": s["request_text"],
        "order": s["order"],
        "amount_fen": s["amount_fen"],
        "state": s["state"],
    }
    if args.png:
        qr_png(s["request_text"], args.png)
        out["png"] = str(args.png)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(f"payment request for {format_fen(s['amount_fen'])} (order {s['order']}):")
        print(s["request_text"])
        print("the agent waits for the proof: ykt sim proof --agent … --qr PROOF.png | --code N")
    return 0


def proof(args: argparse.Namespace) -> int:
    ctl = AgentControl(args.agent, timeout=args.timeout, token_file=args.token_file)
    out = ctl.proof_image(_read_file(args.qr)) if args.qr else ctl.proof_code(args.code)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    elif out["state"] == "wait_proof":
        print(f"PROOF REFUSED: {out['reason']}  (the request is still shown)")
    else:
        _print_outcome(out)
    return 0


def tap(args: argparse.Namespace) -> int:
    out = AgentControl(args.agent, token_file=args.token_file).present(args.card, args.uid)
    print(
        json.dumps(out, ensure_ascii=False) if args.json else f"card {out['presented']} presented"
    )
    return 0


def state(args: argparse.Namespace) -> int:
    ctl = AgentControl(args.agent, token_file=args.token_file)
    out = {"screen": ctl.state(), "status": ctl.status()}
    print(json.dumps(out, ensure_ascii=False, indent=None if args.json else 2))
    return 0


def add_parser(sub: Sub) -> None:
    cmds = add_sim_group(sub)

    def cmd(name: str, fn: Run, help_text: str) -> argparse.ArgumentParser:
        c = command(cmds, name, fn, help_text, json=False)
        c.add_argument(
            "--agent", required=True, help="agent control URL, e.g. http://127.0.0.1:8701"
        )
        token_file_option(c)
        json_option(c)
        return c

    c = cmd(
        "sale",
        sale,
        "key an amount, then tap a card (and key the PIN when asked), or show a payment code "
        "picture to the camera (--qr), or start a reverse scan (--reverse); print the outcome",
    )
    c.add_argument("--amount", required=True, type=_amount, help="yuan, e.g. 12.50")
    how = c.add_mutually_exclusive_group()
    how.add_argument(
        "--card",
        help="card number of the simulated card to tap (sim:// readers); with none of --card, "
        "--qr, --reverse the card lying on the agent's pcsc:// reader pays "
        "(ykt sim card present …)",
    )
    how.add_argument(
        "--qr",
        type=Path,
        metavar="PNG",
        help="picture of a payment code: shown to the agent's sim:// camera (other cameras: "
        "decoded here and handed over as a scanner would)",
    )
    how.add_argument(
        "--reverse",
        action="store_true",
        help="reverse scan (offline only, R8): print the payment request {request_text, …} "
        "and leave the agent waiting for the proof (ykt sim proof)",
    )
    c.add_argument("--png", type=Path, help="with --reverse: also write the request's QR here")
    c.add_argument("--uid", help="UID the simulated card reports (default: the issued UID)")
    c.add_argument("--pin", help="consumption password to key if the sale asks for it (R6)")
    c.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the outcome")
    c = cmd(
        "proof",
        proof,
        "complete a reverse-scan sale: show the phone's proof picture to the camera (--qr) or "
        "key its short code on the PIN pad (--code)",
    )
    how = c.add_mutually_exclusive_group(required=True)
    how.add_argument("--qr", type=Path, metavar="PNG", help="picture of the payment proof")
    how.add_argument("--code", metavar="DIGITS", help="the proof's 8-digit code")
    c.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the outcome")
    c = cmd("tap", tap, "put a simulated card on the agent's reader")
    c.add_argument("--card", required=True)
    c.add_argument("--uid")
    cmd("state", state, "print the agent's screen and status")
    till_cli.add_parsers(cmds)  # cashier sign-in|sign-out, shift open|close, refund
    add_wallet_parser(cmds)

    add_idp_parser(cmds)
    add_paygate_parser(cmds)
    add_chaos_parser(cmds)
    add_fleet_parser(cmds)

    cardcli.add_parsers(cmds)
    periph_cli.add_parsers(cmds)
    dispenser_cli.add_parsers(cmds)
    add_kiosk_parser(cmds)
