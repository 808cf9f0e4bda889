"""The wire protocol shared by terminals and the server (documented in docs/protocol.md).

Journal records
    A record is a JSON object; its *body* is the canonical encoding (sorted keys, no spaces,
    UTF-8).  The terminal signs the body with its Ed25519 key.  Each body names the SHA-256 of
    the previous body (``prev``), the first one names :func:`genesis_hash` of its terminal, and
    sequence numbers are gapless from 1.  So a verified signature on the newest record
    authenticates every record behind it, and a deleted, altered or reordered record breaks
    the chain.

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
import re
import secrets
from collections.abc import Mapping
from typing import Any

from sync.crypto import SigningKey, VerifyKey, b64d, b64e
from sync.errors import ProtocolError, SignatureError

RECORD_VERSION = 1

#: Record kinds: a sale, a wrong consumption password keyed offline (R5/R6 lockout counting).
KINDS = frozenset({"sale", "pin_fail"})
METHODS = frozenset({"card", "qr-forward", "qr-reverse"})
PIN_FACTS = frozenset({"none", "ok", "fail"})

#: field -> accepted Python types (bool is checked apart from int).
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "v": (int,),
    "term": (str,),
    "seq": (int,),
    "prev": (str,),
    "ts": (int,),
    "kind": (str,),
    "acct": (int,),
    "cred": (str,),
    "amt": (int,),
    "method": (str,),
    "off": (bool,),
    "pin": (str,),
    "spent": (int,),
    "lim": (int,),
    "bal": (int, type(None)),
    "op": (str,),
    "auth": (str, type(None)),
}
OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {"x": (dict,)}

#: Bounds of the integer fields (inclusive), so every value fits a 64-bit database column and
#: a terminal time is a real instant (0 .. the end of year 9999).
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "seq": (1, 2**62),
    "ts": (0, 253_402_300_799_999),
    "acct": (1, 2**62),
    "amt": (0, 2**62),
    "spent": (-(2**62), 2**62),
    "lim": (-(2**62), 2**62),
    "bal": (-(2**62), 2**62),
}
_HEX64 = re.compile(r"[0-9a-f]{64}")

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
    """Validate a decoded record; raise :class:`ProtocolError` with the first problem found."""
    if not isinstance(rec, dict):
        raise ProtocolError("a record body must be a JSON object")
    for name, types in RECORD_FIELDS.items():
        try:
            val = rec[name]
        except KeyError:
            raise ProtocolError(f"record lacks field {name!r}") from None
        if (isinstance(val, bool) and bool not in types) or not isinstance(val, types):
            raise ProtocolError(f"record field {name!r} has the wrong type")
    if len(rec) > len(RECORD_FIELDS):  # all required fields are here: only more can be unknown
        for name in rec:
            if name not in RECORD_FIELDS and name not in OPTIONAL_FIELDS:
                raise ProtocolError(f"record has unknown field {name!r}")
    if "x" in rec and not isinstance(rec["x"], dict):
        raise ProtocolError("record field 'x' must be an object")
    for name, (lo, hi) in INT_BOUNDS.items():
        val = rec[name]
        if name == "acct" and val == 0 and rec.get("method") == "qr-reverse":
            continue  # a reverse-scan proof keyed as a short code: the server knows who paid
        if val is not None and not lo <= val <= hi:
            raise ProtocolError(f"record field {name!r} is out of range")
    if rec["v"] != RECORD_VERSION:
        raise ProtocolError(f"record version {rec['v']} is not supported")
    if rec["kind"] not in KINDS:
        raise ProtocolError(f"unknown record kind {rec['kind']!r}")
    if rec["method"] not in METHODS:
        raise ProtocolError(f"unknown payment method {rec['method']!r}")
    if rec["pin"] not in PIN_FACTS:
        raise ProtocolError(f"unknown PIN fact {rec['pin']!r}")
    if rec["amt"] < 0 or (rec["kind"] == "sale" and rec["amt"] == 0):
        raise ProtocolError("a sale's amount must be positive")
    if not _HEX64.fullmatch(rec["prev"]):
        raise ProtocolError("prev must be a SHA-256 hex digest")
    return dict(rec)


def parse_body(body: str | bytes) -> dict[str, Any]:
    """Decode and validate a record body received on the wire (``str`` is the faster input)."""
    try:
        rec = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise ProtocolError("record body is not JSON") from exc
    except RecursionError as exc:
        raise ProtocolError("record body is nested too deeply") from exc
    out = check_fields(rec)
    if (b"\\u" in body) if isinstance(body, bytes) else ("\\u" in body):
        canonical(out)  # an escaped lone surrogate is not Unicode: ProtocolError
    return out


def seal(key: SigningKey, rec: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Validate, encode and sign a record: ``(body, signature)``."""
    body = canonical(check_fields(rec))
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
