"""``ykt verify-receipt``: is a paper receipt genuine?

The receipt's QR code (:mod:`sync.receipt`) holds what the terminal printed and signed about
one of its journal records.  This command reads it (a picture, or the code's text), fetches the
terminal's public key from the server (``GET /v1/receipts/TERM/SEQ``, public), and answers:

- **genuine**: the terminal signed exactly these fields (and, once the record synced, the
  server holds the record whose hash the receipt names);
- **altered**: a field (amount, balance, time, seq, …) differs from what the terminal signed,
  or the record the server holds is another one;
- **unknown**: not a ykt receipt, or a terminal the server does not know.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge import stills
from edge.errors import VerifyError
from sync import receipt
from sync.client import ServerClient
from sync.clock import iso
from sync.crypto import VerifyKey
from sync.errors import ConfigError, ProtocolError, ServerRefused, SyncError
from sync.money import format_fen, parse_amount


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify-receipt",
        help="check a paper receipt's QR code: genuine, altered or unknown",
        description="Check a receipt printed by a POS: read its QR code, fetch the terminal's "
        "public key from the server and say whether the receipt is genuine, altered (a field "
        "differs from what the terminal signed) or unknown.  Exit status 0 once the check "
        "ran; with --strict, 3 unless genuine.",
    )
    p.add_argument("--server", required=True, help="central server URL")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--png", type=Path, help="picture of the receipt or its QR code")
    src.add_argument("--text", help="the QR code's text")
    p.add_argument(
        "--printed",
        type=Path,
        metavar="TEXT_FILE",
        help="the receipt's printed text (typed in, or as `ykt sim printer show` prints it): "
        "its terminal, seq, amount and balance lines are compared with what the terminal signed",
    )
    p.add_argument("--decoder", choices=["zxing", "zbar"], default="zxing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--strict", action="store_true", help="exit 3 unless the receipt is genuine")
    p.set_defaults(func=run)


def check(server: str, text: str) -> dict[str, Any]:
    """The verdict on a receipt's QR text."""
    try:
        facts, sig = receipt.parse(text)
    except ProtocolError as exc:
        return {"verdict": "unknown", "reason": str(exc)}
    shown = {
        "terminal": facts.term,
        "seq": facts.seq,
        "kind": facts.kind,
        "method": facts.method,
        "amount_fen": facts.amt,
        "balance_fen": facts.bal,
        "ts": facts.ts,
    }
    client = ServerClient(server)
    try:
        got = client.request("GET", f"/v1/receipts/{facts.term}/{facts.seq}", signed=False)
    except ServerRefused as exc:
        if exc.status in (404, 422):
            return {
                "verdict": "unknown",
                "reason": f"terminal {facts.term}: {exc.message}",
                "receipt": shown,
            }
        raise VerifyError(f"verification at {server} failed: {exc}") from exc
    except SyncError as exc:
        raise VerifyError(f"verification at {server} failed: {exc}") from exc
    finally:
        client.close()
    out: dict[str, Any] = {
        "receipt": shown,
        "synced": got["record_hash"] is not None,
        "terminal_status": got["terminal_status"],
    }
    try:
        key = VerifyKey.from_b64(got["public_key"])
    except ValueError:
        return {**out, "verdict": "unknown", "reason": "the server's key is not a key"}
    if not receipt.genuine(facts, sig, key):
        return {
            **out,
            "verdict": "altered",
            "reason": "the receipt differs from what terminal "
            f"{facts.term} signed (amount, balance, time, seq or kind changed)",
        }
    if got["record_hash"] is not None and not got["record_hash"].startswith(facts.hash):
        return {
            **out,
            "verdict": "altered",
            "reason": f"the server holds another record {facts.seq} of {facts.term}",
        }
    return {
        **out,
        "verdict": "genuine",
        "reason": "signed by the terminal"
        + (" and synced" if out["synced"] else " (its record has not synced yet)"),
    }


#: printed label -> the signed field it shows (edge/receipts.py prints these lines)
PRINTED = {"终端 Terminal:": "terminal", "流水 Seq:": "seq", "金额 Amount:": "amount_fen",
           "余额 Balance:": "balance_fen"}  # fmt: skip


def _printed_value(field: str, text: str) -> Any:
    text = text.strip().lstrip("￥¥")
    if field == "terminal":
        return text
    try:
        return parse_amount(text) if field.endswith("_fen") else int(text)
    except ValueError:
        return text


def compare_printed(out: dict[str, Any], printed: str) -> dict[str, Any]:
    """``out`` made altered when a printed field differs from the signed one."""
    signed = out.get("receipt")
    if out["verdict"] != "genuine" or signed is None:
        return out
    for line in printed.splitlines():
        for label, field in PRINTED.items():
            if line.strip().startswith(label):
                got = _printed_value(field, line.strip()[len(label) :])
                if got != signed[field]:
                    return {
                        **out,
                        "verdict": "altered",
                        "reason": f"the printed {field} ({line.strip()[len(label) :].strip()}) "
                        f"differs from what the terminal signed ({signed[field]})",
                    }
    return out


def run(args: argparse.Namespace) -> int:
    text = (
        args.text
        if args.text is not None
        else stills.code_in(args.png, args.decoder, receipt.PREFIX + "|")
    )
    out = check(args.server, text)
    if args.printed is not None:
        try:
            printed = args.printed.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {args.printed}: {exc}") from exc
        out = compare_printed(out, printed)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        r = out.get("receipt")
        what = ""
        if r:
            what = (
                f"{r['kind']} {format_fen(r['amount_fen'])} by {r['method']} at {r['terminal']}"
                f" seq {r['seq']}, {iso(r['ts'], 'UTC')[:19]}Z: "
            )
        print(f"{out['verdict'].upper()}: {what}{out['reason']}")
    return 3 if args.strict and out["verdict"] != "genuine" else 0
