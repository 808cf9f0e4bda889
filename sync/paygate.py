"""The wire protocol between the central server and a payment provider (R7 top-ups by the app,
WeChat, Alipay or the bank app; docs/api.md "Top-ups: orders and payment providers").

Money enters the ledger only from a payer: the server makes a top-up **order** (no money
moves), the holder pays it at the provider, and the provider tells the server with a **signed
payment notification**, delivered over HTTP to the server's notify URL and delivered again
until the server acknowledges it (as WeChat Pay and Alipay do).  ``ykt sim paygate`` is a
provider for tests and demos (:mod:`sim.paygate`).

Signatures (Ed25519, the provider's own key; the server knows its public key from
``ykt admin paygate set``) cover :func:`signed_message`: a version tag, the time, a nonce and
the exact body bytes, carried in the headers ``X-Paygate-Timestamp`` (epoch ms),
``X-Paygate-Nonce`` and ``X-Paygate-Signature`` (base64) — the shape of WeChat Pay v3.  The
same signature authenticates the provider's statements (:class:`Statement`, what it was paid
over a time range), which the daily reconciliation compares with the ledger.

The provider answers a delivered notification's acknowledgement ``{"code": "SUCCESS"}`` (200);
anything else is a failure and the provider delivers again later.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from sync.bounds import Fen, Ts
from sync.crypto import SigningKey, VerifyKey, b64d, b64e
from sync.errors import ProtocolError, SignatureError

__all__ = [
    "CURRENCY",
    "H_NONCE",
    "H_SIGNATURE",
    "H_TIMESTAMP",
    "MAX_SKEW_MS",
    "Notification",
    "PayOrder",
    "Statement",
    "StatementLine",
    "decode",
    "encode",
    "sign",
    "signed_message",
    "verify",
]

#: top-ups are in yuan (fen on the wire)
CURRENCY = "CNY"
H_TIMESTAMP = "X-Paygate-Timestamp"
H_NONCE = "X-Paygate-Nonce"
H_SIGNATURE = "X-Paygate-Signature"
#: a signed message older or newer than this is stale (a redelivery is signed afresh)
MAX_SKEW_MS = 300_000

#: ids of orders (the server's) and transactions (the provider's)
RefId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
Channel = Literal["app", "wechat", "alipay", "bank"]
Text = Annotated[str, Meta(max_length=200)]


class PayOrder(Struct, frozen=True, forbid_unknown_fields=True):
    """What the holder's app hands the provider to pay an order: the server's order as the
    server answered it (a holder who alters it pays for an order that will not be credited)."""

    order_id: RefId
    channel: Channel
    amount_fen: Fen
    currency: Text
    notify_url: Annotated[str, Meta(pattern=r"^https?://", max_length=500)]
    attach: Text
    expires_ms: Ts


class Notification(Struct, frozen=True, forbid_unknown_fields=True):
    """The provider's payment notification (the signed body)."""

    id: RefId  # the notification's own id: the same in every delivery of it
    event: Literal["payment.succeeded"]
    order_id: RefId
    txn_id: RefId  # the provider's transaction id: a top-up is credited once per txn_id
    channel: Channel
    amount_fen: Fen
    currency: Text
    paid_ms: Ts
    attach: Text  # what the order asked the provider to echo: the account's number


class StatementLine(Struct, frozen=True, forbid_unknown_fields=True):
    order_id: RefId
    txn_id: RefId
    channel: Channel
    amount_fen: Fen
    currency: Text
    paid_ms: Ts


class Statement(Struct, frozen=True, forbid_unknown_fields=True):
    """What the provider was paid from ``from_ms`` (inclusive) to ``to_ms`` (exclusive): its
    records, for the reconciliation (like the providers' downloadable daily bill)."""

    from_ms: Ts
    to_ms: Ts
    channel: Channel
    lines: list[StatementLine]


def encode(value: Struct) -> bytes:
    """The canonical body of a message (sorted keys, no spaces)."""
    return msgspec.json.encode(msgspec.to_builtins(value, order="sorted"))


def decode(body: bytes, kind: type[msgspec.Struct]) -> msgspec.Struct:
    """A signed body as ``kind``; :class:`ProtocolError` when it is not one."""
    try:
        return msgspec.json.decode(body, type=kind, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(f"not a valid {kind.__name__}: {exc}") from None


def signed_message(timestamp_ms: int, nonce: str, body: bytes) -> bytes:
    return b"ykt-paygate-v1\n%d\n%s\n" % (timestamp_ms, nonce.encode()) + body


def sign(key: SigningKey, body: bytes, now_ms: int) -> dict[str, str]:
    """The signature headers of ``body``."""
    nonce = secrets.token_hex(16)
    sig = key.sign(signed_message(now_ms, nonce, body))
    return {H_TIMESTAMP: str(now_ms), H_NONCE: nonce, H_SIGNATURE: b64e(sig)}


def verify(key: VerifyKey, body: bytes, headers: Mapping[str, str], now_ms: int) -> None:
    """Raise :class:`SignatureError` unless the headers sign ``body`` with ``key`` and the
    signature is fresh (within :data:`MAX_SKEW_MS` of ``now_ms``)."""
    h = {k.lower(): v for k, v in headers.items()}  # HTTP header names are case-blind
    try:
        ts = int(h.get(H_TIMESTAMP.lower(), ""))
        nonce = h.get(H_NONCE.lower(), "")
        sig = b64d(h.get(H_SIGNATURE.lower(), ""))
    except (ValueError, ProtocolError) as exc:
        raise SignatureError("the payment signature headers are missing or malformed") from exc
    if not 8 <= len(nonce) <= 64 or len(sig) != 64:
        raise SignatureError("the payment signature headers are missing or malformed")
    key.verify(sig, signed_message(ts, nonce, body))
    if abs(now_ms - ts) > MAX_SKEW_MS:
        raise SignatureError("the payment signature is stale (its time is too far from ours)")
