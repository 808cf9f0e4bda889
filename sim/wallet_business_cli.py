"""``ykt sim wallet …`` for the card holder's business in the app: loss and unlock (R10), bills
and flow (R9), query password (R4), top-up (R7), electricity (R15), found cards (R17), and
sign-in by campus single sign-on (R16).  Registered by :mod:`sim.wallet_cli`."""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from typing import Any, TypeAlias
from urllib.parse import parse_qs, quote, urlencode, urlparse

import requests

from sim.errors import SimError
from sim.wallet import Wallet
from sync.client import ServerClient
from sync.cmdline import Run, Sub, request_id
from sync.errors import SyncError
from sync.money import format_fen, parse_amount

Cmd: TypeAlias = Callable[[Sub, str, Run, str], argparse.ArgumentParser]


def _amount(text: str) -> int:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, ensure_ascii=False) if args.json else text)
    return 0


def _w(args: argparse.Namespace) -> Wallet:
    return Wallet.load(args.wallet)


# -- R10 loss and unlock ------------------------------------------------------------------------
def report_loss(args: argparse.Namespace) -> int:
    out = _w(args).call("POST", "/v1/app/report-loss")
    return _emit(args, out, f"{out['number']}: card reported lost; card and phone codes blocked")


def unlock(args: argparse.Namespace) -> int:
    out = _w(args).call("POST", "/v1/app/unlock")
    return _emit(args, out, f"{out['number']}: loss unlocked; card and phone codes work again")


# -- R9 bills and flow ----------------------------------------------------------------------------
def _pages(args: argparse.Namespace, which: str) -> dict[str, Any]:
    w = _w(args)
    params: dict[str, Any] = {"limit": args.limit}
    if args.from_date:
        params["from_date"] = args.from_date
    if args.to_date:
        params["to_date"] = args.to_date
    if args.cursor:
        params["cursor"] = args.cursor
    items: list[dict[str, Any]] = []
    while True:
        page = w.call("GET", f"/v1/app/{which}?{urlencode(params)}")
        items += page["items"]
        if not args.all or not page["next_cursor"]:
            return {"items": items, "next_cursor": page["next_cursor"]}
        params["cursor"] = page["next_cursor"]


def _lines(data: dict[str, Any]) -> str:
    rows = []
    for i in data["items"]:
        money = "" if i["amount_fen"] is None else format_fen(i["amount_fen"])
        rows.append(f"{i['time']}  {i['kind']:<14} {money:>10}  {i['memo']}")
    if data["next_cursor"]:
        rows.append(f"(more: --cursor {data['next_cursor']})")
    return "\n".join(rows) or "(nothing)"


def bills(args: argparse.Namespace) -> int:
    data = _pages(args, "bills")
    return _emit(args, data, _lines(data))


def flow(args: argparse.Namespace) -> int:
    data = _pages(args, "flow")
    return _emit(args, data, _lines(data))


# -- R4, R7, R15 ----------------------------------------------------------------------------------
def change_password(args: argparse.Namespace) -> int:
    out = _w(args).call(
        "POST", "/v1/app/password", {"old_password": args.old, "new_password": args.new}
    )
    return _emit(args, out, "query password changed")


def topup(args: argparse.Namespace) -> int:
    """R7: make a top-up order at the server, pay it at the channel's payment provider (as
    the phone hands the payment over to WeChat Pay or Alipay), then wait for the server to
    credit it, which it does when the provider's signed notification arrives.  Exit 0 once
    credited; 1 when it is not (with why)."""
    w = _w(args)
    body = {"amount_fen": args.amount, "channel": args.channel, "password": args.password}
    order = w.call("POST", "/v1/app/topups", {**body, **request_id(args)})
    out: dict[str, Any] = {"order_id": order["order_id"], "status": order["status"]}
    if order["status"] == "open" and order.get("pay"):
        try:
            paid = pay_at_provider(order["pay"])
            out["txn_id"] = paid.get("txn_id")
            order = w.call(
                "GET",
                f"/v1/app/topups/{quote(order['order_id'])}?wait={min(args.timeout, 30):g}",
            )
        except SimError as exc:
            out["reason"] = str(exc)
    out.update(
        status=order["status"],
        amount_fen=order["amount_fen"],
        channel=order["channel"],
        balance_fen=order["balance_fen"],
        transition_fen=order["transition_fen"],
    )
    if order["status"] != "credited":
        out.setdefault(
            "reason",
            order.get("problem")
            or f"the provider's notification did not arrive within {args.timeout:g} s",
        )
    text = (
        f"order {out['order_id']}: topped up {format_fen(args.amount)} by {args.channel}; "
        f"balance {format_fen(out['balance_fen'])}, transition {format_fen(out['transition_fen'])}"
        if out["status"] == "credited"
        else f"order {out['order_id']} {out['status']}, not credited: {out['reason']}"
    )
    _emit(args, out, text)
    return 0 if out["status"] == "credited" else 1


def pay_at_provider(pay: dict[str, Any]) -> dict[str, Any]:
    """Pay an order at its provider (the simulated payer always pays)."""
    try:
        resp = requests.post(pay["provider_url"] + "/v1/pay", json=pay["order"], timeout=10)
    except requests.RequestException as exc:
        raise SimError(f"the payment provider cannot be reached: {exc}") from exc
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if resp.status_code != 200:
        msg = (data.get("error") or {}).get("message") if isinstance(data, dict) else None
        raise SimError(f"the payment provider refused: {msg or resp.status_code}")
    return dict(data)


def electricity(args: argparse.Namespace) -> int:
    body = {"building": args.building, "room": args.room, "amount_fen": args.amount}
    out = _w(args).call("POST", "/v1/app/electricity", {**body, **request_id(args)})
    return _emit(
        args,
        out,
        f"{format_fen(out['amount_fen'])} to the electricity of {out['building']}-{out['room']};"
        f" balance {format_fen(out['balance_fen'])}",
    )


def buildings(args: argparse.Namespace) -> int:
    w = _w(args)
    if args.building:
        out = w.call("GET", f"/v1/app/electricity/buildings/{quote(args.building)}")
        return _emit(args, out, f"{out['building']}: {' '.join(out['rooms'])}")
    out = w.call("GET", "/v1/app/electricity/buildings")
    text = "\n".join(f"{b['code']:<8} {b['name']} ({b['rooms']} rooms)" for b in out["buildings"])
    return _emit(args, out, text or "(no buildings registered)")


# -- R17 found cards --------------------------------------------------------------------------------
def found_register(args: argparse.Namespace) -> int:
    body = {"card_no": args.card_no, "place": args.place, "note": args.note or ""}
    out = _w(args).call("POST", "/v1/app/found-cards", body)
    return _emit(args, out, f"found card {out['card_no']} registered; thank you")


def found_lookup(args: argparse.Namespace) -> int:
    out = _w(args).call("GET", "/v1/app/found-cards")
    text = "\n".join(
        f"card {f['card_no']} found {f['time']}: {f['place']} {f['note']}".rstrip()
        for f in out["found"]
    )
    return _emit(args, out, text or "no one has registered your card yet")


# -- R16 campus single sign-on ----------------------------------------------------------------------
def sso_login(server: str, user: str, redirect_uri: str) -> Wallet:
    """Sign in through the campus identity provider (the stand-in ``ykt sim idp`` signs in
    the user named by ``login_hint`` without a form)."""
    client = ServerClient(server)
    try:
        start = client.request(
            "GET",
            "/v1/app/sso/start",
            params={"redirect_uri": redirect_uri},
            signed=False,
        )
        url = start["authorization_url"] + "&" + urlencode({"login_hint": user})
        try:
            resp = requests.get(url, allow_redirects=False, timeout=10)
        except requests.RequestException as exc:
            raise SimError(f"identity provider unreachable: {exc}") from exc
        location = resp.headers.get("location", "")
        if resp.status_code not in (302, 303) or not location.startswith(redirect_uri):
            raise SimError(f"identity provider did not sign in {user}: {resp.status_code}")
        query = parse_qs(urlparse(location).query)
        code, state = query.get("code", [""])[0], query.get("state", [""])[0]
        if state != start["state"]:
            raise SimError("identity provider returned another state")
        out = client.request(
            "POST", "/v1/app/sso/finish", body={"state": state, "code": code}, signed=False
        )
    except SyncError as exc:
        raise SimError(f"single sign-on failed: {exc}") from exc
    finally:
        client.close()
    return Wallet(
        server=server.rstrip("/"),
        number=out["account"]["number"],
        token=out["token"],
        account=out["account"],
    )


def sso(args: argparse.Namespace) -> int:
    w = sso_login(args.server, args.user, args.redirect_uri)
    w.save(args.wallet)
    a = w.account
    return _emit(
        args,
        {"wallet": str(args.wallet), "account": a},
        f"signed in by single sign-on as {a['number']} {a['name']}; wallet {args.wallet}",
    )


def add_commands(sub: Sub, command: Cmd) -> None:
    """Add the business commands to ``ykt sim wallet`` (``command``: how a wallet command is
    made, :func:`sim.wallet_cli.wallet_command`)."""
    cmd = functools.partial(command, sub)
    cmd("report-loss", report_loss, "report the card lost (R10): card and phone codes stop")
    cmd("unlock", unlock, "undo a loss report (R10)")
    for name, fn, text in (
        ("bills", bills, "bills (R9): top-ups and purchases, newest first"),
        ("flow", flow, "transaction flow (R9): account operations, top-ups and purchases"),
    ):
        c = cmd(name, fn, text)
        c.add_argument("--from", dest="from_date", help="first campus day, YYYY-MM-DD")
        c.add_argument("--to", dest="to_date", help="last campus day, YYYY-MM-DD")
        c.add_argument("--limit", type=int, default=50, help="lines per page (1-200)")
        c.add_argument("--cursor", help="continue after a previous page")
        c.add_argument("--all", action="store_true", help="fetch every page")
    c = cmd("change-password", change_password, "change the query password (R4)")
    c.add_argument("--old", required=True, help="current query password")
    c.add_argument("--new", required=True, help="new query password (six digits)")
    c = cmd(
        "topup",
        topup,
        "top up by app/wechat/alipay/bank (R7): an order at the server, paid at the channel's "
        "payment provider, credited when its signed notification arrives (alipay: transition "
        "balance); prints {order_id, status} once credited, or why not (exit 1)",
    )
    c.add_argument("--amount", required=True, type=_amount, help="yuan, e.g. 20.00")
    c.add_argument("--channel", required=True, choices=["app", "wechat", "alipay", "bank"])
    c.add_argument("--password", required=True, help="query password confirms the top-up")
    c.add_argument("--request-id", help="idempotency key: a retry names the same order")
    c.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        help="seconds to wait for the order to be credited (default 15, at most 30)",
    )
    c = cmd("electricity", electricity, "pay a dorm room's electricity (R15)")
    c.add_argument("--building", required=True, help="building code (see `buildings`)")
    c.add_argument("--room", required=True, help="room number")
    c.add_argument("--amount", required=True, type=_amount, help="yuan, e.g. 30.00")
    c.add_argument("--request-id", help="idempotency key")
    c = cmd("buildings", buildings, "the dorm buildings, or the rooms of one (R15)")
    c.add_argument("--building", help="list this building's rooms")

    found = sub.add_parser(
        "found-card",
        help="found cards (R17): register one you found, look up yours",
        description="Found cards (R17).",
    )
    fsub = found.add_subparsers(dest="found_command", metavar="ACTION", required=True)
    fcmd = functools.partial(command, fsub)
    c = fcmd("register", found_register, "register a card you found")
    c.add_argument("--card-no", required=True, help="the number printed on the card")
    c.add_argument("--place", required=True, help="where the card is now, e.g. 'library desk'")
    c.add_argument("--note", help="a note for the owner")
    fcmd("lookup", found_lookup, "look up your found card (after reporting it lost)")

    c = cmd("sso-login", sso, "sign in by campus single sign-on (R16) into a new wallet file")
    c.add_argument("--server", required=True, help="central server URL")
    c.add_argument("--user", required=True, help="the staff/student number to sign in as")
    c.add_argument(
        "--redirect-uri",
        default="http://127.0.0.1/ykt-sso-callback",
        help="redirect URI registered with the identity provider",
    )
