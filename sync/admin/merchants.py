"""``ykt admin`` commands of merchants, their operators (cashiers, supervisors), shift reports
and the daily settlement report.  Registered by :mod:`sync.admin.cli`."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Any
from urllib.parse import quote, urlencode

from sync.admin.common import client_for, emit
from sync.cmdline import Sub, group
from sync.cmdline import command as cmd
from sync.errors import ConfigError
from sync.money import format_fen


def merchant_add(args: argparse.Namespace) -> int:
    data = client_for(args).call(
        "POST", "/v1/admin/merchants", {"code": args.code, "name": args.name}
    )
    return emit(args, data, lambda d: print(f"merchant {d['code']} ({d['name']}) added"))


def merchant_list(args: argparse.Namespace) -> int:
    data = client_for(args).call("GET", "/v1/admin/merchants")

    def show(d: dict[str, Any]) -> None:
        for m in d["merchants"]:
            print(
                f"{m['code']:<12} {m['name']:<16} balance {format_fen(m['balance_fen']):>12}  "
                f"{m['operators']} operators  terminals: {', '.join(m['terminals']) or '-'}"
            )

    return emit(args, data, show)


def _pin(args: argparse.Namespace) -> str:
    if args.pin is not None:
        return str(args.pin)
    if args.pin_stdin:
        return sys.stdin.readline().strip()
    raise ConfigError("give --pin or --pin-stdin")


def operator_add(args: argparse.Namespace) -> int:
    body = {
        "merchant": args.merchant,
        "number": args.number,
        "name": args.name,
        "role": args.role,
        "pin": _pin(args),
    }
    data = client_for(args).call("POST", "/v1/admin/operators", body)
    return emit(
        args,
        data,
        lambda d: print(f"{d['role']} {d['number']} ({d['name']}) of {d['merchant']} added"),
    )


def operator_list(args: argparse.Namespace) -> int:
    q = f"?{urlencode({'merchant': args.merchant})}" if args.merchant else ""
    data = client_for(args).call("GET", "/v1/admin/operators" + q)

    def show(d: dict[str, Any]) -> None:
        for o in d["operators"]:
            print(
                f"{o['number']:<10} {o['name']:<12} {o['role']:<10} {o['merchant']:<10} {o['status']}"
            )

    return emit(args, data, show)


def operator_disable(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", f"/v1/admin/operators/{quote(args.number)}/disable")
    return emit(args, data, lambda d: print(f"operator {d['number']} {d['status']}"))


CSV_COLUMNS = (
    "date",
    "merchant",
    "terminal",
    "method",
    "mode",
    "sales_count",
    "sales_fen",
    "refunds_count",
    "refunds_fen",
    "reversals_count",
    "reversals_fen",
    "net_fen",
)


def settlement_csv(data: dict[str, Any]) -> str:
    """One line per merchant, terminal, method and online/offline."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in data["rows"]:
        w.writerow([data["date"], *(r[c] for c in CSV_COLUMNS[1:])])
    return out.getvalue()


def report_settlement(args: argparse.Namespace) -> int:
    params = {"date": args.date, **({"merchant": args.merchant} if args.merchant else {})}
    data = client_for(args).call("GET", f"/v1/admin/reports/settlement?{urlencode(params)}")
    if args.csv:
        sys.stdout.write(settlement_csv(data))
        return 0

    def show(d: dict[str, Any]) -> None:
        print(f"settlement of {d['date']} ({d['tz']})")
        for m in d["merchants"]:
            print(
                f"{m['code']} {m['name']}: sales {m['sales']['count']} "
                f"{format_fen(m['sales']['total_fen'])}, refunds {m['refunds']['count']} "
                f"{format_fen(m['refunds']['total_fen'])}, reversals {m['reversals']['count']} "
                f"{format_fen(m['reversals']['total_fen'])}, net {format_fen(m['net_fen'])} "
                f"(ledger {format_fen(m['ledger_net_fen'])}); unsynced records "
                f"{m['unsynced_records']}"
            )
            for t in m["terminals"]:
                methods = ", ".join(
                    f"{k} {format_fen(v['net_fen'])}" for k, v in sorted(t["by_method"].items())
                )
                print(
                    f"  {t['terminal_id']} {t['name']}: sales {t['sales']['count']} "
                    f"{format_fen(t['sales']['total_fen'])}, refunds {t['refunds']['count']} "
                    f"{format_fen(t['refunds']['total_fen'])}, net {format_fen(t['net_fen'])}"
                    f" [{methods or '-'}]; unsynced {t['unsynced_records']}"
                )

    return emit(args, data, show)


def report_shifts(args: argparse.Namespace) -> int:
    q = f"?{urlencode({'terminal': args.terminal})}" if args.terminal else ""
    data = client_for(args).call("GET", "/v1/admin/reports/shifts" + q)

    def show(d: dict[str, Any]) -> None:
        for s in d["shifts"]:
            print(
                f"{s['terminal_id']} shift {s['shift_no']} ({s['opened_by']}→{s['closed_by']}): "
                f"sales {s['sales']['count']} {format_fen(s['sales']['total_fen'])}, refunds "
                f"{s['refunds']['count']} {format_fen(s['refunds']['total_fen'])}, net "
                f"{format_fen(s['net_fen'])}, pending sync {s['pending_sync']['records']}"
            )

    return emit(args, data, show)


def add_commands(groups: Sub, report: Sub) -> None:
    """Add ``merchant``, ``operator`` and the ``report`` commands to ``ykt admin``."""
    mer = group(groups, "merchant", "merchants (a canteen and its windows)")
    c = cmd(mer, "add", merchant_add, "add a merchant; its terminals' sales credit its account")
    c.add_argument("--code", required=True, help="1-32 letters, digits, '_' or '-'")
    c.add_argument("--name", required=True)
    cmd(mer, "list", merchant_list, "list merchants, their terminals and ledger balance")

    op = group(groups, "operator", "operators at the till: cashiers and supervisors")
    c = cmd(op, "add", operator_add, "add a cashier or supervisor of a merchant")
    c.add_argument("--merchant", required=True)
    c.add_argument("--number", required=True, help="the operator's number (1-32 characters)")
    c.add_argument("--name", required=True)
    c.add_argument("--role", required=True, choices=["cashier", "supervisor"])
    pin = c.add_mutually_exclusive_group()
    pin.add_argument("--pin", help="6-12 digits")
    pin.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    c = cmd(op, "list", operator_list, "list operators")
    c.add_argument("--merchant")
    c = cmd(op, "disable", operator_disable, "disable an operator (terminals learn it by the feed)")
    c.add_argument("--number", required=True)

    c = cmd(
        report,
        "settlement",
        report_settlement,
        "a day's sales, refunds and net per merchant and terminal, by method and online/"
        "offline, with the records not yet synced",
        json=False,
    )
    c.add_argument("--date", required=True, help="campus day YYYY-MM-DD")
    c.add_argument("--merchant", help="one merchant's code")
    fmt = c.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--csv", action="store_true", help="print CSV, one line per cell")
    c = cmd(report, "shifts", report_shifts, "the shift (Z) reports terminals pushed")
    c.add_argument("--terminal")
