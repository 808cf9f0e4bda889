"""The wire protocol shared by terminals and the server (documented in docs/protocol.md).

Journal records
    A record (:class:`sync.records.JournalRecord`, typed there) is a JSON object; its *body* is
    the canonical encoding (sorted keys, no spaces, UTF-8).  The terminal signs the body with
    its Ed25519 key.  Each body names the SHA-256 of the previous body (``prev``), the first one
    names :func:`genesis_hash` of its terminal, and sequence numbers are gapless from 1.  So a
    verified signature on the newest record authenticates every record behind it, and a
    deleted, altered or reordered record breaks the chain.

Phone-code sales (docs/codes.md)
    ``qr-forward``: ``cred`` is ``qr:<certificate serial>:<counter>`` and ``x.code`` the code's
    text, so the server re-checks the phone's signature and catches a code used twice.
    ``qr-reverse``: ``cred`` is ``qr-reverse:<order>``, ``x.order`` the order number and
    ``x.payment`` the server's payment id (``x.proof = "code"`` when the short code was keyed;
    ``acct`` is then 0): the money moved when the phone paid, the record moves none.

Signed requests
    Every terminal request carries ``X-Ykt-Terminal``, ``X-Ykt-Time`` (epoch ms),
    ``X-Ykt-Nonce`` and ``X-Ykt-Signature`` over :func:`request_message`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from sync.crypto import SigningKey, VerifyKey, b64d, b64e
from sync.errors import ProtocolError, SignatureError
from sync.records import KINDS, METHODS, PIN_FACTS, RECORD_VERSION, JournalRecord

__all__ = [
    "H_NONCE",
    "H_SIGNATURE",
    "H_TERMINAL",
    "H_TIME",
    "KINDS",
    "METHODS",
    "PIN_FACTS",
    "RECORD_FIELDS",
    "RECORD_VERSION",
    "JournalRecord",
    "canonical",
    "check_fields",
    "genesis_hash",
    "parse_body",
    "record_hash",
    "request_message",
    "seal",
    "sha256_hex",
    "sign_request",
    "verify_request",
    "wire_record",
]

#: The required fields of a record body (``x`` is optional): :class:`sync.records.JournalRecord`.
RECORD_FIELDS = tuple(f for f in JournalRecord.__struct_fields__ if f != "x")

H_TERMINAL = "X-Ykt-Terminal"
H_TIME = "X-Ykt-Time"
H_NONCE = "X-Ykt-Nonce"
H_SIGNATURE = "X-Ykt-Signature"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8 (one encoder for every call: it is on the ingest path);
    :class:`ProtocolError` for what UTF-8 cannot hold."""
    try:
        return _CANONICAL.encode(obj).encode()
    except UnicodeEncodeError as exc:
        raise ProtocolError("text that is not valid Unicode (a lone surrogate)") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def genesis_hash(terminal_id: str) -> str:
    """The ``prev`` of a terminal's first record."""
    return sha256_hex(b"ykt-genesis-v1:" + terminal_id.encode())


def record_hash(body: bytes) -> str:
    return sha256_hex(body)


def check_fields(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate decoded record fields; raise :class:`ProtocolError` with the problem found."""
    return JournalRecord.from_fields(rec).to_dict()


def parse_body(body: str | bytes) -> dict[str, Any]:
    """Decode and validate a record body received on the wire, as a dict (the typed form is
    :meth:`JournalRecord.parse`)."""
    return JournalRecord.parse(body).to_dict()


def seal(key: SigningKey, rec: JournalRecord | Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Validate, encode and sign a record: ``(body, signature)``."""
    typed = rec if isinstance(rec, JournalRecord) else JournalRecord.from_fields(rec)
    body = typed.checked_body()  # every field checked, on the very bytes that are signed
    return body, key.sign(body)


def wire_record(body: bytes, sig: bytes) -> dict[str, str]:
    return {"body": body.decode(), "sig": b64e(sig)}


# --- signed requests ---------------------------------------------------------------------------
def request_message(method: str, target: str, body: bytes, time_ms: int, nonce: str) -> bytes:
    """What a terminal signs: method, path with query, body digest, time, nonce."""
    return "\n".join(
        ["ykt-req-v1", method.upper(), target, sha256_hex(body), str(time_ms), nonce]
    ).encode()


def sign_request(
    key: SigningKey, terminal_id: str, method: str, target: str, body: bytes, time_ms: int
) -> dict[str, str]:
    nonce = secrets.token_hex(16)
    sig = key.sign(request_message(method, target, body, time_ms, nonce))
    return {H_TERMINAL: terminal_id, H_TIME: str(time_ms), H_NONCE: nonce, H_SIGNATURE: b64e(sig)}


def verify_request(
    key: VerifyKey, method: str, target: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, str]:
    """Check a request's signature; returns ``(time_ms, nonce)`` for the freshness checks."""
    try:
        time_ms = int(headers[H_TIME])
        nonce = headers[H_NONCE]
        sig = b64d(headers[H_SIGNATURE])
    except (KeyError, ValueError) as exc:
        raise SignatureError("request signature headers are missing or malformed") from exc
    if not 8 <= len(nonce) <= 64:
        raise SignatureError("request nonce must be 8 to 64 characters")
    key.verify(sig, request_message(method, target, body, time_ms, nonce))
    return time_ms, nonce
