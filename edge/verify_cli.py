"""``ykt verify-code``: check an authentication code (R18) as a gate does, and say who it is
and whether access is allowed.

The picture is decoded here (OpenCV + the QR decoder); the server runs the one verification
path (:class:`sync.codes.CodeVerifier`: format, campus, window, certificate chain, signature)
plus the account's state (R2) and its seen-set (a code is admitted once).  Only an enrolled
gate may ask (the answer names the holder, and asking uses the code up): the command signs its
request with a gate identity kept in ``--data`` (enrolled on first use with ``--enroll``, as
``ykt pos`` is).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge import identity, stills
from edge.errors import VerifyError
from sync.client import ServerClient
from sync.errors import SyncError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify-code",
        help="verify an authentication code (R18): who it is and whether access is allowed",
        description="Verify a phone's authentication code (认证码) as a gate does: decode the "
        "picture, check the code at the server, print who it is and whether access is "
        "allowed (exit status 0 once the check ran; with --strict, 3 when refused).",
    )
    p.add_argument("--server", required=True, help="central server URL")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the gate's state directory (its identity and key: DATA/terminal.json, "
        "DATA/terminal.key)",
    )
    p.add_argument(
        "--enroll",
        metavar="TOKEN",
        help="one-time enrollment token of a gate (first use: ykt admin terminal enroll "
        "--role gate --name NAME)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--png", type=Path, help="picture of the code (PNG, JPEG, a camera frame)")
    src.add_argument("--text", help="the code's text")
    p.add_argument("--decoder", choices=["zxing", "zbar"], default="zxing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--strict", action="store_true", help="exit 3 when access is refused")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = args.text if args.text is not None else stills.code_in(args.png, args.decoder)
    ident, key = identity.load_or_enroll(args.data, args.server, args.enroll, "gate")
    client = ServerClient(args.server, terminal_id=ident.terminal_id, key=key)
    try:
        out = client.request("POST", "/v1/codes/verify", body={"text": text})
    except SyncError as exc:
        raise VerifyError(f"verification at {args.server} failed: {exc}") from exc
    finally:
        client.close()
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        who = out.get("account") or {}
        name = f"{who.get('number', '?')} {who.get('name', '')} ({who.get('type', '?')})"
        if out.get("allowed"):
            print(f"ALLOWED: {name}")
        elif out.get("valid"):
            print(f"REFUSED: {name}: {out['reason']}")
        else:
            print(f"REFUSED: {out['reason']}")
    return 3 if args.strict and not out.get("allowed") else 0
