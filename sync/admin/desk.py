"""``ykt admin`` commands of the service desk beyond the account basics: reissue (R11),
extension (R13), cancellation (R14), refunds, found cards (R17), the electricity registry (R15),
staff accounts with roles, and the audit log.  Registered by :mod:`sync.admin.cli`."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from sync.admin.common import account_path, amount_arg, client_for, emit, print_account
from sync.cmdline import Sub, group, request_id
from sync.cmdline import command as cmd
from sync.errors import ConfigError
from sync.money import format_fen
from sync.server.electricity import expand_rooms
from sync.server.errors import Invalid


# -- commands -------------------------------------------------------------------------------------
def reissue(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"charge_fee": not args.no_fee}
    if args.uid:
        body["uid"] = args.uid
    if args.order_id:
        body["order_id"] = args.order_id
    data = client_for(args).call("POST", account_path(args.number) + "/reissue", body)

    def show(d: dict[str, Any]) -> None:
        c = d["card"]
        print(
            f"card {c['card_no']} (uid {c['uid']}, generation {c['generation']}) reissued to "
            f"{c['number']}; fee {format_fen(d['fee_fen'])}, balance {format_fen(d['balance_fen'])}"
        )
        print(f"  write onto the card: tag {c['tag']}, expires {c['expires'] or '-'}")

    return emit(args, data, show)


def extend(args: argparse.Namespace) -> int:
    data = client_for(args).call(
        "POST", account_path(args.number) + "/extend", {"expires": args.expires}
    )
    return emit(args, data, print_account)


def cancel(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", account_path(args.number) + "/cancel")

    def show(d: dict[str, Any]) -> None:
        print(f"{d['number']} cancelled (R14); pay out {format_fen(d['paid_out_fen'])} in cash")

    return emit(args, data, show)


def found_cards(args: argparse.Namespace) -> int:
    data = client_for(args).call("GET", account_path(args.number) + "/found-cards")

    def show(d: dict[str, Any]) -> None:
        for f in d["found"] or [
            {"id": "-", "card_no": "(none)", "place": "", "time": "", "status": ""}
        ]:
            print(f"{f['id']}  card {f['card_no']}  {f['time']}  {f['status']}  {f['place']}")

    return emit(args, data, show)


def found_close(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", f"/v1/admin/found-cards/{args.id}/close")
    return emit(args, data, lambda d: print(f"found-card registration {d['id']} closed"))


def refund(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"transfer_id": args.transfer, "reason": args.reason, **request_id(args)}
    if args.amount is not None:
        body["amount_fen"] = args.amount
    data = client_for(args).call("POST", "/v1/admin/refunds", body)
    return emit(
        args,
        data,
        lambda d: print(
            f"refund {d['transfer_id']}: {format_fen(d['amount_fen'])} back to {d['number']}"
            f" (balance {format_fen(d['balance_fen'])})"
        ),
    )


def staff_add(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", "/v1/admin/staff", {"name": args.name, "role": args.role})
    return emit(args, data, lambda d: print(d["token"]))


def staff_list(args: argparse.Namespace) -> int:
    data = client_for(args).call("GET", "/v1/admin/staff")

    def show(d: dict[str, Any]) -> None:
        for s in d["staff"]:
            print(f"{s['name']:<16} {s['role']:<10} {s['status']}")

    return emit(args, data, show)


def staff_status(args: argparse.Namespace) -> int:
    data = client_for(args).call("POST", f"/v1/admin/staff/{quote(args.name)}/{args.action}")
    return emit(args, data, lambda d: print(f"{d['name']} {d['status']}"))


def audit(args: argparse.Namespace) -> int:
    path = f"/v1/admin/audit?limit={args.limit}"
    if args.actor:
        path += f"&who={quote(args.actor)}"
    data = client_for(args).call("GET", path)

    def show(d: dict[str, Any]) -> None:
        for e in reversed(d["entries"]):
            print(
                f"{e['id']:>6} {e['ts_ms']} {e['actor']:<12} {e['action']:<22} "
                f"{e['target']:<12} {e['outcome']}  {e['detail']}"
            )

    return emit(args, data, show)


def building_add(args: argparse.Namespace) -> int:
    try:
        rooms = expand_rooms(args.rooms or "")
    except Invalid as exc:
        raise ConfigError(exc.message) from exc
    body = {"code": args.code, "name": args.name, "rooms": rooms}
    data = client_for(args).call("POST", "/v1/admin/electricity/buildings", body)
    return emit(
        args, data, lambda d: print(f"building {d['code']} {d['name']}: {d['rooms']} rooms")
    )


def building_list(args: argparse.Namespace) -> int:
    data = client_for(args).call("GET", "/v1/admin/electricity/buildings")

    def show(d: dict[str, Any]) -> None:
        for b in d["buildings"]:
            print(f"{b['code']:<8} {b['name']}  {b['rooms']} rooms")

    return emit(args, data, show)


def room_show(args: argparse.Namespace) -> int:
    data = client_for(args).call(
        "GET",
        f"/v1/admin/electricity/buildings/{quote(args.building)}/rooms/{quote(args.room)}",
    )
    return emit(
        args,
        data,
        lambda d: print(
            f"{d['building']}-{d['room']}: electricity account {format_fen(d['balance_fen'])}"
        ),
    )


# -- registration -----------------------------------------------------------------------------------
def add_commands(groups: Sub, account: Sub) -> None:
    """Add the desk commands to ``ykt admin`` (``groups``) and ``ykt admin account``."""
    c = cmd(
        account, "reissue", reissue, "reissue a card of any type; the fee from the balance (R11)"
    )
    c.add_argument("--number", required=True)
    c.add_argument("--uid", help="UID of the blank card (default: a generated one)")
    c.add_argument("--order-id", help="idempotency key: a retried reissue never charges twice")
    c.add_argument("--no-fee", action="store_true", help="waive the reissue fee")
    c = cmd(account, "extend", extend, "extend the card's validity; the virtual card follows (R13)")
    c.add_argument("--number", required=True)
    c.add_argument("--expires", required=True, help="new end of validity, YYYY-MM-DD")
    c = cmd(
        account,
        "cancel",
        cancel,
        "cancel on leaving (R14): the remaining balance is paid out in cash",
    )
    c.add_argument("--number", required=True)
    c = cmd(account, "found-cards", found_cards, "found-card registrations of an account (R17)")
    c.add_argument("--number", required=True)

    c = cmd(groups, "refund", refund, "refund (part of) a transfer: a correcting transfer")
    c.add_argument("--transfer", required=True, help="id of the sale/top-up/… to refund")
    c.add_argument("--amount", type=amount_arg, help="yuan (default: all that is left)")
    c.add_argument("--reason", required=True)
    c.add_argument("--request-id", help="idempotency key")

    found = group(groups, "found-card", "found cards (R17)")
    c = cmd(found, "close", found_close, "close a registration: the card went back")
    c.add_argument("id", type=int)

    st = group(groups, "staff", "staff accounts with roles")
    c = cmd(st, "add", staff_add, "add a staff member; prints their token (shown once)")
    c.add_argument("--name", required=True, help="2-32 lower-case letters, digits, . _ -")
    c.add_argument(
        "--role", required=True, choices=["superuser", "operator", "desk", "finance", "auditor"]
    )
    cmd(st, "list", staff_list, "list staff")
    for action in ("disable", "enable"):
        c = cmd(st, action, staff_status, f"{action} a staff account")
        c.add_argument("name")
        c.set_defaults(action=action)

    c = cmd(groups, "audit", audit, "the audit log of staff actions (newest last)")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--actor", help="only this staff member")

    el = group(groups, "electricity", "dorm buildings and rooms (R15)")
    c = cmd(el, "add-building", building_add, "add (or rename) a building and add rooms")
    c.add_argument("--code", required=True, help="building code, e.g. B1")
    c.add_argument("--name", required=True, help="building name, e.g. 一号公寓")
    c.add_argument("--rooms", help="rooms, e.g. 101-130,201-230")
    cmd(el, "list", building_list, "list buildings")
    c = cmd(el, "room", room_show, "a room's electricity account balance")
    c.add_argument("--building", required=True)
    c.add_argument("--room", required=True)
