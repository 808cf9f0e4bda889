"""``ykt sim cashier sign-in|sign-out``, ``ykt sim shift open|close``, ``ykt sim refund``: the
till of a running POS agent, through its control API (edge.pos.till)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from sim.control import AgentControl
from sync.cmdline import Run, Sub, command, group, json_option
from sync.money import format_fen, parse_amount


def _amount(text: str) -> int:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _emit(
    args: argparse.Namespace, data: dict[str, Any], text: Callable[[dict[str, Any]], str]
) -> int:
    print(json.dumps(data, ensure_ascii=False) if args.json else text(data))
    return 0


def _till_text(d: dict[str, Any]) -> str:
    who = d["cashier"]
    shift = d["shift"]
    return (
        f"signed in: {who['number']} {who['name']} ({who['role']})" if who else "nobody signed in"
    ) + (f"; shift {shift['shift_no']} open" if shift else "; no shift open")


def sign_in(args: argparse.Namespace) -> int:
    return _emit(args, AgentControl(args.agent).sign_in(args.number, args.pin), _till_text)


def sign_out(args: argparse.Namespace) -> int:
    return _emit(args, AgentControl(args.agent).sign_out(), _till_text)


def _report_text(r: dict[str, Any]) -> str:
    lines = [
        f"shift {r['shift_no']} of {r['terminal_id']} closed by {r['closed_by'] or '-'}",
        f"  sales {r['sales']['count']} {format_fen(r['sales']['total_fen'])} "
        f"(offline {r['offline_sales']['count']} {format_fen(r['offline_sales']['total_fen'])})",
    ]
    for m, t in r["sales_by_method"].items():
        if t["count"]:
            lines.append(f"    {m}: {t['count']} {format_fen(t['total_fen'])}")
    lines.append(f"  refunds {r['refunds']['count']} {format_fen(r['refunds']['total_fen'])}")
    lines.append(f"  net {format_fen(r['net_fen'])}")
    p = r["pending_sync"]
    lines.append(f"  not synced: {p['records']} records, offline {format_fen(p['offline_fen'])}")
    return "\n".join(lines)


def shift_open(args: argparse.Namespace) -> int:
    return _emit(args, AgentControl(args.agent).shift_open(), _till_text)


def shift_close(args: argparse.Namespace) -> int:
    return _emit(args, AgentControl(args.agent).shift_close(), _report_text)


def refund(args: argparse.Namespace) -> int:
    ctl = AgentControl(args.agent)
    if not (args.card or args.tapped):
        out = ctl.refund(args.seq, args.supervisor, args.supervisor_pin, args.amount)
    else:
        out = ctl.refund_by_tap(args.supervisor, args.supervisor_pin, args.amount, args.card)
    return _emit(
        args,
        out,
        lambda d: (
            f"REFUNDED {format_fen(d['amount_fen'])} of sale {d['sale_seq']} as record "
            f"{d['seq']}" + (" (offline)" if d["offline"] else "") + f"; server: {d['server']}"
        ),
    )


def add_parsers(cmds: Sub) -> None:
    """Add ``cashier``, ``shift`` and ``refund`` to ``ykt sim``."""

    def cmd(parent: Sub, name: str, fn: Run, text: str) -> argparse.ArgumentParser:
        c = command(parent, name, fn, text, json=False)
        c.add_argument(
            "--agent", required=True, help="agent control URL, e.g. http://127.0.0.1:8701"
        )
        json_option(c)
        return c

    cashier = group(cmds, "cashier", "operators at the till of a running POS agent")
    c = cmd(cashier, "sign-in", sign_in, "an operator signs in (opens a shift if none is open)")
    c.add_argument("--number", required=True)
    c.add_argument("--pin", required=True)
    cmd(cashier, "sign-out", sign_out, "the operator signs out")

    shift = group(cmds, "shift", "shifts of a running POS agent")
    cmd(shift, "open", shift_open, "open a shift (a cashier signed in, when the merchant has any)")
    cmd(shift, "close", shift_close, "close the shift: print its Z report (pushed to the server)")

    c = cmd(
        cmds,
        "refund",
        refund,
        "refund a sale of today of this terminal, with a supervisor's PIN (online or offline)",
    )
    which = c.add_mutually_exclusive_group(required=True)
    which.add_argument("--seq", help="the sale's journal sequence number (or TERMINAL:SEQ)")
    which.add_argument(
        "--card",
        help="tap this simulated card (sim:// reader): its newest sale of today is refunded",
    )
    which.add_argument(
        "--tapped",
        action="store_true",
        help="the card lying on the agent's reader: its newest sale of today is refunded",
    )
    c.add_argument("--supervisor", required=True, help="the supervisor's operator number")
    c.add_argument("--supervisor-pin", required=True)
    c.add_argument("--amount", type=_amount, help="yuan (default: the whole sale)")
