"""``ykt admin paygate …`` and ``ykt admin report topups``: the payment providers of R7
top-ups and their daily reconciliation.  Registered by :mod:`sync.admin.cli`."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sync.admin.common import client_for, emit
from sync.clock import iso
from sync.cmdline import Sub, group
from sync.cmdline import command as cmd
from sync.errors import ConfigError
from sync.money import format_fen


def paygate_set(args: argparse.Namespace) -> int:
    try:
        key = Path(args.public_key).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the provider's public key: {exc}") from exc
    client = client_for(args)
    notify = args.notify_url or (
        f"{client.base_url.rstrip('/')}/v1/paygate/{quote(args.channel)}/notify"
    )
    body = {"url": args.url, "public_key": key, "notify_url": notify}
    data = client.call("PUT", f"/v1/admin/paygates/{quote(args.channel)}", body)
    return emit(
        args,
        data,
        lambda d: print(
            f"{d['channel']}: payment provider {d['url']} registered; it notifies {d['notify_url']}"
        ),
    )


def paygate_list(args: argparse.Namespace) -> int:
    data = client_for(args).call("GET", "/v1/admin/paygates")

    def show(d: dict[str, Any]) -> None:
        for g in d["paygates"] or [{"channel": "(none)", "url": "", "public_key": ""}]:
            print(f"{g['channel']:<8} {g['url']}  key {g['public_key']}")

    return emit(args, data, show)


def report_topups(args: argparse.Namespace) -> int:
    date = args.date or dt.date.today().isoformat()
    data = client_for(args).call("GET", f"/v1/admin/reports/topups?date={quote(date)}")

    def show(d: dict[str, Any]) -> None:
        print(f"top-ups of {d['date']}: {'OK' if d['ok'] else 'DIFFERENCES'}")
        for s in d["channels"]:
            src = "its statement" if s["source"] == "provider" else f"notified ({s['error']})"
            print(
                f"  {s['channel']:<7} paid {s['paid_count']} {format_fen(s['paid_fen'])} "
                f"(provider: {src}), credited {s['credited_count']} "
                f"{format_fen(s['credited_fen'])}"
            )
        for o in d["orders"]:
            if o["problem"]:
                paid = ", ".join(f"{p['txn_id']} {format_fen(p['amount_fen'])}" for p in o["paid"])
                got = o["credited"]
                credited = f"{got['txn_id']} {format_fen(got['amount_fen'])}" if got else "-"
                print(
                    f"  ! {o['order_id']} ({o['channel']}, {o['number']}): {o['problem']}: "
                    f"paid {paid or '-'}; credited {credited}"
                )
        for t in d["credited_without_order"]:
            print(
                f"  ! {t['transfer_id']} {format_fen(t['amount_fen'])} on {t['channel']} at "
                f"{iso(t['ts_ms'])}: credited without an order"
            )

    emit(args, data, show)
    return 0 if data["ok"] else 1


def add_commands(groups: Sub) -> Sub:
    """Add ``paygate`` and ``report`` to ``ykt admin``; returns the ``report`` group (other
    reports join it)."""
    gates = group(groups, "paygate", "payment providers of top-ups (R7)")
    c = cmd(
        gates,
        "set",
        paygate_set,
        "register (or replace) the payment provider of a channel: its URL and public key "
        "(staff permission paygate: the operator role)",
    )
    c.add_argument("--channel", required=True, choices=["app", "wechat", "alipay", "bank"])
    c.add_argument("--url", required=True, help="the provider, e.g. http://127.0.0.1:8790")
    c.add_argument(
        "--public-key",
        required=True,
        metavar="FILE",
        help="file holding the provider's Ed25519 public key, base64 (DIR/provider.pub)",
    )
    c.add_argument(
        "--notify-url",
        help="where the provider delivers notifications (default: SERVER/v1/paygate/"
        "CHANNEL/notify with the --server URL)",
    )
    cmd(gates, "list", paygate_list, "the registered payment providers")
    report = group(groups, "report", "reports")
    c = cmd(
        report,
        "topups",
        report_topups,
        "reconcile a day's top-ups: orders paid at each provider versus credited, every "
        "difference flagged (exit 1 when there is one)",
    )
    c.add_argument("--date", help="campus day YYYY-MM-DD (default today)")
    return report
