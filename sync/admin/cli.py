"""``ykt admin``: the service desk and operator commands, over HTTP with the admin token."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sync.admin import desk, merchants, topups
from sync.admin.common import (
    AdminClient,
    account_path,
    amount_arg,
    client_for,
    emit,
    print_account,
)
from sync.card.desk import issue_on_reader, read_on_reader
from sync.card.keys import Keystore
from sync.cmdline import Sub, group, request_id
from sync.cmdline import command as cmd
from sync.errors import ConfigError
from sync.money import format_fen


# -- commands -----------------------------------------------------------------------------------
def account_add(args: argparse.Namespace) -> int:
    body = {"number": args.number, "name": args.name, "type": args.type, "id_card": args.id_card}
    if args.limit is not None:
        body["limit_fen"] = args.limit
    if args.expires:
        body["expires"] = args.expires
    return emit(args, client_for(args).call("POST", "/v1/admin/accounts", body), print_account)


def account_show(args: argparse.Namespace) -> int:
    return emit(args, client_for(args).call("GET", account_path(args.number)), print_account)


def account_status(args: argparse.Namespace) -> int:
    data = client_for(args).call(
        "POST", account_path(args.number) + "/status", {"action": args.action}
    )
    return emit(args, data, print_account)


def account_pin_reset(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", account_path(args.number) + "/pin-reset")
    return emit(args, data, print_account)


#: the most CSV text sent in one request (the server reads a body of at most 1 MiB)
ROSTER_PART_BYTES = 400_000


def roster_parts(text: str, part_bytes: int = ROSTER_PART_BYTES) -> list[tuple[int, str]]:
    """A roster CSV as parts the server takes in one request each: ``(offset, text)``, every
    part with the header line; a line number ``n`` the server reports for a part is line
    ``n + offset`` of the whole file.  Parts end between records, never inside a quoted
    field."""
    lines = text.splitlines(keepends=True)
    if len(text.encode()) <= part_bytes or len(lines) < 3:
        return [(0, text)]
    reader = csv.reader(io.StringIO(text))
    ends: list[int] = []  # the physical line each record ends on (1-based)
    try:
        for _row in reader:
            ends.append(reader.line_num)
    except csv.Error:
        return [(0, text)]  # the server says where and why
    header, parts = lines[: ends[0]], []
    start, size = ends[0], 0  # 0-based index of the part's first line
    prev = ends[0]
    for end in ends[1:]:
        chunk = sum(len(line.encode()) for line in lines[prev:end])
        if size and size + chunk > part_bytes:
            parts.append((start - len(header), "".join(header + lines[start:prev])))
            start, size = prev, 0
        size += chunk
        prev = end
    parts.append((start - len(header), "".join(header + lines[start:])))
    return parts


def roster_import(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read roster {args.file}: {exc}") from exc
    client = client_for(args)
    data: dict[str, Any] = {"added": 0, "errors": []}
    for offset, part in roster_parts(text):
        got = client.call("POST", "/v1/admin/roster", {"csv": part})
        data["added"] += got["added"]
        data["errors"] += [{**e, "line": e["line"] + offset} for e in got["errors"]]

    def show(d: dict[str, Any]) -> None:
        print(f"added {d['added']} accounts")
        for e in d["errors"]:
            print(f"  line {e['line']}: {e['error']}")

    return emit(args, data, show)


def _desk_keys(args: argparse.Namespace, client: AdminClient | None) -> Any:
    """The desk keystore: --keystore FILE, or fetched from the server (kept in memory only)."""
    if args.keystore:
        return Keystore.load(Path(args.keystore))
    client = client or client_for(args)
    return Keystore.from_dict(client.call("GET", "/v1/admin/keystore?role=desk"), "keystore")


def card_issue(args: argparse.Namespace) -> int:
    client = client_for(args)
    path = account_path(args.number) + "/cards"

    def show(d: dict[str, Any]) -> None:
        where = f" and written on the card on {d['reader']}" if d.get("written") else ""
        print(
            f"card {d['card_no']} (uid {d['uid']}, generation {d['generation']}) issued to "
            f"{d['number']}{where}"
        )

    if not args.reader:
        body = {"uid": args.uid} if args.uid else {}
        return emit(args, client.call("POST", path, body), show)
    keys = _desk_keys(args, client)
    data = issue_on_reader(
        args.reader, lambda uid: client.call("POST", path, {"uid": uid}), keys, args.wait
    )
    return emit(args, data, show)


def card_read(args: argparse.Namespace) -> int:
    keys = _desk_keys(args, None)
    data = read_on_reader(args.reader, keys, args.wait)

    def show(d: dict[str, Any]) -> None:
        if not d["ok"]:
            print(f"card {d['uid']}: {d['reason']}")
            return
        c = d["counters"]
        print(
            f"card {d['card_no']} (uid {d['uid']}, generation {d['generation']}, {d['type']}, "
            f"expires {d['expires'] or 'never'}): today's tracked amount "
            f"{format_fen(c['spent_fen'])} on {c['day'] or '-'}, {c['taps']} taps, "
            f"{c['pin_tries']} wrong passwords, {format_fen(c['offline_fen'])} spent offline "
            f"since its last online payment (counter record {c['version']})"
        )

    return emit(args, data, show)


def keys_export(args: argparse.Namespace) -> int:
    client = client_for(args)
    keys = Keystore.from_dict(
        client.call("GET", f"/v1/admin/keystore?role={args.role}"), "the server's keystore"
    )
    out = Path(args.out)
    keys.save(out)
    data = {"role": keys.role, "out": str(out), "keys": sorted(keys.masters), "mode": "0600"}
    return emit(
        args,
        data,
        lambda d: print(
            f"{d['role']} keystore written to {d['out']} (mode 0600): {', '.join(d['keys'])}"
        ),
    )


def topup(args: argparse.Namespace) -> int:
    body = {"amount_fen": args.amount, "channel": args.channel, **request_id(args)}
    data = client_for(args).call("POST", account_path(args.number) + "/topups", body)
    return emit(args, data, print_account)


def terminal_enroll(args: argparse.Namespace) -> int:
    body = {"role": args.role, "name": args.name, "simulated": args.simulated}
    if args.merchant:
        body["merchant"] = args.merchant
    data = client_for(args).call("POST", "/v1/admin/terminals/tokens", body)
    return emit(args, data, lambda d: print(d["token"]))


def terminal_list(args: argparse.Namespace) -> int:
    data = client_for(args).call("GET", "/v1/admin/terminals")

    def show(d: dict[str, Any]) -> None:
        for t in d["terminals"]:
            print(
                f"{t['id']}  {t['name']:<16} {t['role']:<6} {t['status']:<8} head {t['head_seq']}"
                f"  merchant {t['merchant']}"
            )

    return emit(args, data, show)


def _print_recovery(d: dict[str, Any]) -> None:
    if not d["recovering"]:
        print("not recovering: the server pays out and approves online as usual")
        return
    print(f"recovering since {d['since_ms']} ({d['reason']}; by {d['by']})")
    if not d["waiting"]:
        print("  every terminal has pushed: the state ends at the next push or feed request")
    for t in d["waiting"]:
        what = (
            f"head {t['head_seq']} of {t['reported_head']} reported"
            if t["head_seq"] < t["reported_head"]
            else f"head {t['head_seq']}, not heard from since the restore"
        )
        print(f"  waiting for {t['id']}  {t['name']:<16} {t['role']:<6} {what}")


def server_status(args: argparse.Namespace) -> int:
    return emit(args, client_for(args).call("GET", "/v1/admin/recovery"), _print_recovery)


def server_restored(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", "/v1/admin/recovery", {"reason": args.reason})
    return emit(args, data, _print_recovery)


def server_resume(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", "/v1/admin/recovery/end", {"force": args.force})
    return emit(args, data, _print_recovery)


def terminal_revoke(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", f"/v1/admin/terminals/{quote(args.terminal_id)}/revoke")
    return emit(args, data, lambda d: print(f"{d['terminal_id']} revoked"))


def ledger_check(args: argparse.Namespace) -> int:
    data = client_for(args).call("GET", "/v1/admin/ledger/check")
    emit(
        args,
        data,
        lambda d: print(
            f"ledger {'OK' if d['ok'] else 'NOT BALANCED'}: {d['transfers']} transfers, "
            f"sum {d['sum_fen']} fen, {len(d['mismatched'])} mismatched accounts"
        ),
    )
    return 0 if data["ok"] else 1


def alarms(args: argparse.Namespace) -> int:
    data = client_for(args).call("GET", "/v1/admin/alarms")

    def show(d: dict[str, Any]) -> None:
        for a in d["alarms"]:
            print(f"{a['ts_ms']}  {a['terminal_id'] or '-'}  {a['kind']}: {a['detail']}")

    return emit(args, data, show)


def policy_show(args: argparse.Namespace) -> int:
    return emit(args, client_for(args).call("GET", "/v1/admin/policy"))


def policy_set(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    for item in args.values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return emit(args, client_for(args).call("PUT", "/v1/admin/policy", {"values": values}))


def add_parser(sub: Sub) -> None:
    p = sub.add_parser(
        "admin",
        help="service-desk and operator commands against the central server",
        description="Talks to the server over HTTP with the admin token the server wrote "
        "to DATA/admin.token on its first start (the superuser), or with a staff token made "
        "by `ykt admin staff add` (what it may do depends on the staff role).",
    )
    p.add_argument("--server", help="server URL (or YKT_SERVER)")
    p.add_argument("--token-file", help="admin or staff token file (or YKT_ADMIN_TOKEN_FILE)")
    groups = p.add_subparsers(dest="admin_command", metavar="SUBJECT", required=True)

    acct = group(groups, "account", "card-holder accounts")
    c = cmd(acct, "add", account_add, "add one account (R1 type; R3 initial passwords)")
    c.add_argument(
        "--number", required=True, help="student/staff number (card number for temporary)"
    )
    c.add_argument("--name", required=True)
    c.add_argument("--type", required=True, choices=["temporary", "student", "staff", "consumer"])
    c.add_argument("--id-card", required=True, help="ID-card number (18 characters, GB 11643)")
    c.add_argument("--limit", type=amount_arg, help="daily limit in yuan (default 50.00, R6)")
    c.add_argument("--expires", help="card validity end, YYYY-MM-DD (R13)")
    c = cmd(
        acct, "show", account_show, "balance, transition balance, limit, status, bills, flow (R9)"
    )
    c.add_argument("--number", required=True)
    for action, text in (
        ("report-loss", "report the card lost: blocks card and phone codes (R10)"),
        ("unlock", "undo a loss report (R10)"),
        ("freeze", "freeze the account (R12)"),
        ("unfreeze", "unfreeze after checking (R12, desk only)"),
    ):
        c = cmd(acct, action, account_status, text)
        c.add_argument("--number", required=True)
        c.set_defaults(action=action)
    c = cmd(acct, "pin-reset", account_pin_reset, "clear a consumption-password lockout (R5)")
    c.add_argument("--number", required=True)
    desk.add_commands(groups, acct)  # the desk's business: reissue, extend, cancel, staff, …

    roster = group(groups, "roster", "roster CSV import")
    c = cmd(
        roster,
        "import",
        roster_import,
        "import accounts from a CSV with columns number,name,type,id_card[,limit][,expires]",
    )
    c.add_argument("file")

    card = group(groups, "card", "cards")
    c = cmd(
        card, "issue", card_issue, "issue a card; earlier cards of the account stop working (R11)"
    )
    c.add_argument("--number", required=True)
    c.add_argument(
        "--uid", help="the card's UID in hex (default: a generated one, for simulated cards)"
    )
    c.add_argument(
        "--reader",
        help="encode the blank card lying on this reader (pcsc:// or pcsc://NAME): the card's "
        "UID is recorded and the signed identity, keys and counters are written on it",
    )
    c.add_argument(
        "--keystore", help="desk keystore file (default: fetched from the server, kept in memory)"
    )
    c.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for a card on the reader"
    )
    c = cmd(card, "read", card_read, "read the campus card lying on a reader (identity, counters)")
    c.add_argument("--reader", required=True, help="pcsc:// or pcsc://NAME")
    c.add_argument("--keystore", help="keystore file (default: fetched from the server)")
    c.add_argument("--wait", type=float, default=10.0)

    keys = group(groups, "keys", "card keys")
    c = cmd(
        keys,
        "export",
        keys_export,
        "write a role-limited card keystore (mode 0600) for a terminal or a desk",
    )
    c.add_argument("--role", required=True, choices=["pos", "desk", "kiosk", "gate"])
    c.add_argument("--out", required=True, help="file to write (mode 0600)")

    c = cmd(
        groups,
        "topup",
        topup,
        "cash top-up at the desk (R7; the finance role): the other channels are orders paid "
        "at their payment provider (ykt sim wallet topup, ykt admin paygate)",
    )
    c.add_argument("--number", required=True)
    c.add_argument("--amount", required=True, type=amount_arg, help="yuan, e.g. 100.00")
    c.add_argument("--channel", default="cash", choices=["cash"], help="cash (the default)")
    c.add_argument("--request-id", help="idempotency key: a retried top-up with it applies once")
    report = topups.add_commands(groups)  # paygate set|list, report topups

    term = group(groups, "terminal", "terminals")
    c = cmd(term, "enroll", terminal_enroll, "create a one-time enrollment token (printed alone)")
    c.add_argument("--role", required=True, choices=["pos", "kiosk", "gate"])
    c.add_argument("--name", required=True)
    c.add_argument(
        "--simulated",
        action="store_true",
        help="a test or demo terminal with sim:// readers: it receives the cards' signed "
        "identities (with their consumption-password verifiers) to make simulated cards; "
        "never on a live campus",
    )
    c.add_argument(
        "--merchant", help="the merchant whose account its sales credit (default: DEFAULT)"
    )
    cmd(term, "list", terminal_list, "list terminals")
    c = cmd(term, "revoke", terminal_revoke, "revoke a terminal's key")
    c.add_argument("terminal_id")

    srv = group(groups, "server", "the server's recovering state after a restore from a backup")
    cmd(
        srv,
        "status",
        server_status,
        "whether the server is recovering from a restore, and the terminals still to push",
    )
    c = cmd(
        srv,
        "restored",
        server_restored,
        "the database was restored from a backup (pg_restore): refuse pay-outs and online "
        "approvals until every terminal has pushed again (ykt server restore does it for "
        "SQLite)",
    )
    c.add_argument("--reason", default="restored from a backup", help="kept in the alarm")
    c = cmd(
        srv,
        "resume",
        server_resume,
        "end the recovering state: when every terminal has pushed, or anyway with --force "
        "(audited)",
    )
    c.add_argument(
        "--force",
        action="store_true",
        help="although terminals are still to push: their sales since the backup are not "
        "known yet, so a pay-out may pay out money they spent",
    )

    led = group(groups, "ledger", "the ledger")
    cmd(led, "check", ledger_check, "check money conservation (exit 1 when it does not hold)")
    cmd(groups, "alarms", alarms, "tamper and integrity alarms raised by journal ingest")
    pol = group(groups, "policy", "terminal policy")
    cmd(pol, "show", policy_show, "show the policy terminals receive")
    c = cmd(pol, "set", policy_set, "set policy values, e.g. offline_max_purchase_fen=3000")
    c.add_argument("values", nargs="+", metavar="KEY=VALUE")
    merchants.add_commands(groups, report)  # merchant, operator, report settlement|shifts
