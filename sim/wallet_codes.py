"""The simulated phone's codes (R8, R18; docs/codes.md): payment and authentication codes
signed with the phone's own key, and the scan (扫一扫) of a terminal's payment request.

The wallet file keeps, under ``extra["codes"]``, the phone key (never sent anywhere), the
server's certificate for it, and the counter; the counter is saved *before* a code is shown,
so no two codes of a phone ever share a counter.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from sim.errors import SimUsageError
from sim.wallet import Wallet
from sync import codes
from sync.clock import Clock, SystemClock
from sync.crypto import SigningKey
from sync.errors import CodeError


def _state(w: Wallet) -> dict[str, Any]:
    st = w.extra.get("codes")
    if not isinstance(st, dict) or "phone_key" not in st or "cert" not in st:
        raise SimUsageError(
            "this wallet has no phone key and certificate: sign in again with "
            "`ykt sim wallet login`"
        )
    return st


def make_code(
    w: Wallet,
    path: Path,
    kind: codes.Kind,
    *,
    confirm_password: str | None = None,
    embed_cert: bool = False,
    clock: Clock | None = None,
    offset_s: int = 0,
) -> dict[str, Any]:
    """Show a payment or authentication code: returns its text and facts.

    ``confirm_password`` (payment codes, R6): the server checks the query password first and
    keeps a grant for this very code (its serial and counter), which online authorization over
    the daily limit spends; the code carries the "confirmed" flag an offline terminal goes by."""
    st = _state(w)
    confirmed = False
    if confirm_password is not None:
        if kind is not codes.Kind.PAY:
            raise SimUsageError("only a payment code is confirmed with the query password")
        got = w.call(
            "POST",
            "/v1/app/codes/confirm",
            {
                "password": confirm_password,
                "serial": int(st["serial"]),
                "counter": int(st.get("counter", 0)) + 1,
            },
        )
        confirmed = True
        st["grant"], st["grant_expires_ms"] = got.get("grant"), got.get("expires_ms")
    st["counter"] = int(st.get("counter", 0)) + 1
    w.save(path)  # the counter is spent before the code exists
    now_s = (clock or SystemClock()).now_ms() // 1000 + offset_s
    cert = base64.b64decode(st["cert"])
    raw = codes.make_code(
        SigningKey.from_seed(base64.b64decode(st["phone_key"])),
        kind,
        int(st["campus_tag"]),
        int(st["serial"]),
        now_s,
        st["counter"],
        confirmed=confirmed,
        cert=cert if embed_cert else None,
    )
    text = codes.to_text(raw)
    return {
        "text": text,
        "kind": "payment" if kind is codes.Kind.PAY else "authentication",
        "cert": st["serial"],
        "counter": st["counter"],
        "confirmed": confirmed,
        "bytes": len(raw),
        "time_ms": now_s * 1000,
        "valid_until_ms": (now_s + int(st.get("code_valid_s", 60))) * 1000,
    }


def scan(
    w: Wallet,
    text: str,
    confirm_password: str | None = None,
    path: Path | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """扫一扫: pay a terminal's payment request (reverse scan) online; returns the proof.

    Over the daily limit the server wants the query password (R6): ``confirm_password``, or a
    confirmation the phone made in the last minutes (``pay-code --confirm-password``)."""
    now_ms = (clock or SystemClock()).now_ms()
    text = text.strip("\r\n\t")
    try:
        req = codes.parse_request(codes.unpack_text(text))
    except CodeError as exc:
        raise SimUsageError(f"not a payment request: {exc.message}") from exc
    body: dict[str, Any] = {"request": text}
    st = w.extra.get("codes") or {}
    if confirm_password is not None:
        body["password"] = confirm_password
    elif st.get("grant") and int(st.get("grant_expires_ms") or 0) > now_ms:
        body["grant"] = st["grant"]  # a recent confirmation with the query password (R6)
    out = w.call("POST", "/v1/app/reverse/pay", body)
    if "grant" in body and out.get("confirmed") and path is not None:
        st.pop("grant", None)  # the server spent it on this payment
        w.save(path)
    return {**out, "scanned": {"terminal_id": req.terminal_id, "order": req.order}}
