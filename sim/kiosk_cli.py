"""``ykt sim kiosk --agent URL ACTION …``: do what a holder does at a kiosk, through the same
local control API the kiosk's touch screen uses (:mod:`edge.kiosk.control`).

Card-present actions use the card on the kiosk's reader (put it there with
``ykt sim card present``, or ``ykt sim tap`` on a ``sim://`` reader).  Each action prints its
outcome (``--json``: one JSON object) and exits 0, or prints the kiosk's refusal in its plain
words and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any

from drivers.errors import DriverError
from drivers.qr.decoders import decode_image_bytes, get_decoder
from sim.control import AgentControl, token_file_option
from sim.errors import SimError, SimUsageError
from sync.cmdline import Sub, json_option
from sync.money import format_fen, parse_amount


class KioskRefused(SimError):
    """The kiosk refused the action (its message, Chinese first, is printed)."""


def _amount(text: str) -> int:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _call(args: argparse.Namespace, path: str, body: dict[str, Any] | None = None) -> Any:
    ctl = AgentControl(args.agent, timeout=args.timeout, token_file=args.token_file)
    try:
        return ctl._call("POST", path, body, timeout=args.timeout)
    except SimUsageError as exc:
        raise KioskRefused(str(exc).replace(f"agent refused {path}: ", "")) from exc


def _print(args: argparse.Namespace, out: dict[str, Any], text: str) -> int:
    print(json.dumps(out, ensure_ascii=False) if args.json else text)
    return 0


def balance(args: argparse.Namespace) -> int:
    a = _call(args, "/control/card/read")
    return _print(
        args,
        a,
        f"{a['name']} {a['number']} card {a['card_no']}: balance {format_fen(a['balance_fen'])}, "
        f"transition {format_fen(a['transition_fen'])}, limit {format_fen(a['limit_fen'])}, "
        f"{a['status']}",
    )


def change_query(args: argparse.Namespace) -> int:
    out = _call(args, "/control/card/query-password", {"old": args.old, "new": args.new})
    return _print(args, out, "query password changed")


def change_consume(args: argparse.Namespace) -> int:
    out = _call(args, "/control/card/consume-password", {"old": args.old, "new": args.new})
    return _print(args, out, f"consumption password changed on card {out['card_no']}")


def set_limit(args: argparse.Namespace) -> int:
    out = _call(args, "/control/card/limit", {"amount_fen": args.amount, "pin": args.pin})
    return _print(args, out, f"daily limit {format_fen(out['limit_fen'])}")


def pull_transition(args: argparse.Namespace) -> int:
    out = _call(args, "/control/card/transition")
    return _print(
        args,
        out,
        f"moved {format_fen(out['moved_fen'])}: balance {format_fen(out['balance_fen'])}",
    )


def correct(args: argparse.Namespace) -> int:
    out = _call(args, "/control/card/correct")
    return _print(args, out, f"card {out['card_no']} corrected")


def holder(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        body = {"number": args.number, "password": args.password}
        out = _call(args, f"/control/holder/{action}", body)
        return _print(args, out, json.dumps(out, ensure_ascii=False))

    return run


def electricity(args: argparse.Namespace) -> int:
    body = {
        "building": args.building,
        "room": args.room,
        "amount_fen": args.amount,
        "password": args.password,
    }
    out = _call(args, "/control/card/electricity", body)
    return _print(args, out, f"{format_fen(args.amount)} to {args.building}-{args.room}")


def reissue(args: argparse.Namespace) -> int:
    if args.auth_code is not None and _sim_camera(args):
        # shown to the kiosk's simulated camera, read and decoded there as a phone would be
        picture = base64.b64encode(_read(args.auth_code)).decode()
        _call(args, "/control/sim/frame", {"image_b64": picture, "wait": 0})
        _call(args, "/control/reissue/scan")
        out = _call(args, "/control/reissue/confirm")
        return _print(args, out, _issued(out))
    if args.auth_code is not None:  # another camera, or none: decoded here, as a scanner would
        try:
            image = decode_image_bytes(args.auth_code.read_bytes(), str(args.auth_code))
            texts = get_decoder().decode_still(image)
        except (OSError, ValueError, DriverError) as exc:
            raise SimUsageError(f"--auth-code {args.auth_code}: {exc}") from exc
        if not texts:
            raise SimUsageError(f"--auth-code {args.auth_code}: no code in the picture")
        ident: dict[str, Any] = {"auth_code": texts[0]}
    else:
        if not args.number or not args.id_card:
            raise SimUsageError("give --number and --id-card, or --auth-code PNG")
        ident = {"number": args.number, "id_card": args.id_card}
    _call(args, "/control/reissue/quote", ident)
    out = _call(args, "/control/reissue/confirm")
    return _print(args, out, _issued(out))


def _issued(out: dict[str, Any]) -> str:
    return (
        f"order {out['order_id']}: card {out['card_no']} (UID {out['uid']}) at the mouth; fee "
        f"{format_fen(out['fee_fen'])}, balance {format_fen(out['balance_fen'])}"
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SimUsageError(f"--auth-code {path}: {exc}") from exc


def _sim_camera(args: argparse.Namespace) -> bool:
    ctl = AgentControl(args.agent, timeout=args.timeout, token_file=args.token_file)
    return str(ctl.status().get("camera") or "").startswith("sim://")


def add_parser(cmds: Sub) -> None:
    p = cmds.add_parser(
        "kiosk",
        help="do what a card holder does at a kiosk (balance, passwords, limit, loss, reissue…)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--agent", required=True, help="kiosk control URL (http://127.0.0.1:8702)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (60)")
    token_file_option(p)
    actions = p.add_subparsers(dest="kiosk_action", metavar="ACTION", required=True)

    def act(name: str, fn: Any, text: str) -> argparse.ArgumentParser:
        c = actions.add_parser(name, help=text, description=text)
        json_option(c)
        c.set_defaults(func=fn)
        return c

    act("balance", balance, "balance, transition balance and limit of the card on the reader")
    c = act("change-query-password", change_query, "R4 with the card: old and new query password")
    c.add_argument("--old", required=True)
    c.add_argument("--new", required=True)
    c = act(
        "change-consume-password",
        change_consume,
        "R5: change the consumption password, written onto the card on the reader",
    )
    c.add_argument("--old", required=True, help="the current consumption password")
    c.add_argument("--new", required=True)
    c = act("set-limit", set_limit, "R6: the daily limit, confirmed by the consumption password")
    c.add_argument("--amount", required=True, type=_amount, help="yuan, e.g. 80.00")
    c.add_argument("--pin", required=True, help="the consumption password")
    act("correct", correct, "R20 card correction: rewrite the card's data from the server")
    act(
        "pull-transition",
        pull_transition,
        "R7: move the transition balance of the card on the reader onto the account",
    )
    for name, action, text in (
        ("report-loss", "report-loss", "R10: report the card lost (no card needed)"),
        ("unlock", "unlock", "R10: undo a loss report (no card needed)"),
        ("found-card", "found-cards", "R17: has someone handed in my card? (no card needed)"),
    ):
        c = act(name, holder(action), text)
        c.add_argument("--number", required=True, help="number (card number: temporary cards)")
        c.add_argument("--password", required=True, help="query password")
    c = act("electricity", electricity, "R15: pay for a dorm room's electricity (card on reader)")
    c.add_argument("--building", required=True)
    c.add_argument("--room", required=True)
    c.add_argument("--amount", required=True, type=_amount, help="yuan")
    c.add_argument("--password", required=True, help="query password")
    c = act(
        "reissue",
        reissue,
        "R11: reissue a student or staff card; prints {order_id, fee_fen, card_no, uid, "
        "balance_fen}",
    )
    c.add_argument("--number")
    c.add_argument("--id-card")
    c.add_argument("--auth-code", type=Path, metavar="PNG", help="picture of the app's code")
