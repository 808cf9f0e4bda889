"""Phone codes and reverse-scan objects: compact, signed, versioned binary formats (format 1,
documented byte by byte in docs/codes.md).

=================== ====== ================================================================
object              bytes  signed by
=================== ====== ================================================================
wallet certificate  116    the server's code-issuer key: "this phone key pays for account A"
payment code        80     the phone key (certified above); 196 with the certificate inside
authentication code 80     the phone key; 196 with the certificate inside
payment request     91     the terminal's key (reverse scan: terminal → phone)
payment proof       88     the server's code-issuer key (reverse scan: server → terminal)
=================== ====== ================================================================

Two levels, like UIC rail barcodes: the server certifies the phone's key once (at sign-in),
the phone signs each short-lived code itself, so a terminal checks a code offline with only
the issuer's public key and the certificate (from its feed, or carried in the code).

Every object starts with one header byte, ``(format << 4) | kind``, then a 2-byte campus tag
(:func:`campus_tag`).  Integers are big-endian; times are Unix seconds.  As QR text, phone
codes are Base45 (QR alphanumeric mode); payment requests and proofs are decimal digits (QR
numeric mode, as dense, and safe to paste into a shell or key in).  :func:`unpack_text` takes
either.

Parsing never raises anything but :class:`sync.errors.CodeError`, whatever the input.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sync.base45 import b45decode, b45encode
from sync.crypto import SigningKey, VerifyKey
from sync.errors import CodeError, ProtocolError

FORMAT = 1
SIG_LEN = 64
MAX_TEXT = 1000
PROOF_CODE_DIGITS = 8


class Kind(IntEnum):
    PAY = 1
    AUTH = 2
    REQUEST = 3
    PROOF = 4
    CERT = 5


KIND_NAMES = {
    Kind.PAY: "payment code",
    Kind.AUTH: "authentication code",
    Kind.REQUEST: "payment request",
    Kind.PROOF: "payment proof",
    Kind.CERT: "wallet certificate",
}

FLAG_CONFIRMED = 0x01  # the holder confirmed with the query password (R6)
FLAG_CERT = 0x02  # the wallet certificate follows the fixed part
KNOWN_FLAGS = FLAG_CONFIRMED | FLAG_CERT

_CERT = struct.Struct(">BHIIII32sB")  # header campus serial account not_before not_after key kid
_CODE = struct.Struct(">BHIIIB")  # header campus serial time counter flags
_REQUEST = struct.Struct(">BHIIII8s")  # header campus terminal order amount time nonce
_PROOF = struct.Struct(">BHIIIIIB")  # header campus terminal order amount account payment kid
CERT_LEN = _CERT.size + SIG_LEN
CODE_LEN = _CODE.size + SIG_LEN
CODE_WITH_CERT_LEN = CODE_LEN + CERT_LEN
REQUEST_LEN = _REQUEST.size + SIG_LEN
PROOF_LEN = _PROOF.size + SIG_LEN


def header(kind: Kind) -> int:
    return (FORMAT << 4) | int(kind)


@functools.lru_cache(maxsize=64)
def campus_tag(campus_id: str) -> int:
    """The 2-byte campus tag codes carry, so another campus's codes get a clear refusal before
    any signature check (their issuer key differs anyway)."""
    return int.from_bytes(hashlib.sha256(b"ykt-campus:" + campus_id.encode()).digest()[:2], "big")


def terminal_number(terminal_id: str) -> int:
    """``T00042`` → 42 (terminal ids are ``T`` and a serial number)."""
    if len(terminal_id) < 2 or terminal_id[0] != "T" or not terminal_id[1:].isdigit():
        raise CodeError("bad_terminal", f"terminal id {terminal_id!r} is not T and a number")
    n = int(terminal_id[1:])
    if n >= 2**32:
        raise CodeError("bad_terminal", f"terminal id {terminal_id!r} is too large")
    return n


def terminal_id(number: int) -> str:
    return f"T{number:05d}"


# --- text ------------------------------------------------------------------------------------
def to_text(data: bytes, numeric: bool = False) -> str:
    """QR text: Base45 (alphanumeric mode) or, with ``numeric``, decimal digits."""
    if not numeric:
        return b45encode(data)
    if not data or data[0] == 0:
        raise ValueError("numeric text needs a first byte that is not zero")
    return str(int.from_bytes(data, "big"))


def unpack_text(text: str) -> bytes:
    """The bytes behind a code's QR text (Base45 or decimal)."""
    if not isinstance(text, str):
        raise CodeError("garbage", "a code is text")
    text = text.strip("\r\n\t")  # never spaces: a Base45 text may begin or end with one
    if not text:
        raise CodeError("garbage", "empty code")
    if len(text) > MAX_TEXT:
        raise CodeError("garbage", f"not a ykt code: {len(text)} characters is too long")
    if text.isascii() and text.isdigit():
        if text[0] == "0":
            raise CodeError("garbage", "not a ykt code: numeric text starts with 0")
        n = int(text)
        return n.to_bytes((n.bit_length() + 7) // 8, "big")
    try:
        return b45decode(text)
    except ProtocolError:
        raise CodeError("garbage", "not a ykt code (neither Base45 nor digits)") from None


def _head(data: bytes, kinds: Iterable[Kind]) -> Kind:
    if not data:
        raise CodeError("truncated", "empty code")
    fmt, kind_no = data[0] >> 4, data[0] & 0x0F
    if fmt != FORMAT:
        raise CodeError("unknown_format", f"code format {fmt} is not supported (this is {FORMAT})")
    try:
        kind = Kind(kind_no)
    except ValueError:
        raise CodeError("garbage", f"unknown kind of code {kind_no}") from None
    allowed = tuple(kinds)
    if kind not in allowed:
        want = " or ".join(KIND_NAMES[k] for k in allowed)
        raise CodeError("wrong_kind", f"this is a {KIND_NAMES[kind]}, not a {want}")
    return kind


def _exact(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise CodeError("truncated", f"{what} is truncated ({len(data)} of {size} bytes)")
    if len(data) > size:
        raise CodeError("garbage", f"{what} has {len(data) - size} bytes too many")


def _fields(data: bytes, kind: Kind, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
    """The fields after the header of a fixed-length signed ``kind`` laid out as ``fmt``."""
    _head(data, (kind,))
    _exact(data, fmt.size + SIG_LEN, what)
    return fmt.unpack_from(data)[1:]


@dataclass(frozen=True)
class _Signed:
    """Bytes that end in a signature (``SIG_LEN`` bytes) over everything before it."""

    raw: bytes

    @property
    def signed(self) -> bytes:
        return self.raw[:-SIG_LEN]

    @property
    def sig(self) -> bytes:
        return self.raw[-SIG_LEN:]


def _issuer_signed(obj: _Signed, kid: int, issuer_keys: dict[int, VerifyKey], what: str) -> bool:
    """Whether issuer key ``kid`` signed ``obj`` (CodeError ``unknown_issuer`` when this
    terminal does not know that key)."""
    key = issuer_keys.get(kid)
    if key is None:
        raise CodeError("unknown_issuer", f"{what} issuer key {kid} is not known here")
    return key.ok(obj.sig, obj.signed)


# --- wallet certificate ----------------------------------------------------------------------
@dataclass(frozen=True)
class Certificate(_Signed):
    campus: int
    serial: int
    account_id: int
    not_before: int
    not_after: int
    phone_key: bytes
    kid: int


def make_cert(
    issuer: SigningKey,
    kid: int,
    campus: int,
    serial: int,
    account_id: int,
    not_before: int,
    not_after: int,
    phone_key: bytes,
) -> bytes:
    body = _CERT.pack(
        header(Kind.CERT), campus, serial, account_id, not_before, not_after, phone_key, kid
    )
    return body + issuer.sign(body)


def parse_cert(data: bytes) -> Certificate:
    return Certificate(bytes(data), *_fields(data, Kind.CERT, _CERT, "wallet certificate"))


def check_cert(cert: Certificate, issuer_keys: dict[int, VerifyKey], campus: int) -> None:
    """Level 1 of the chain: the certificate is signed by one of our issuer keys."""
    if cert.campus != campus:
        raise CodeError("other_campus", "the phone's certificate belongs to another campus")
    if not _issuer_signed(cert, cert.kid, issuer_keys, "certificate"):
        raise CodeError("bad_cert", "the phone's certificate is not signed by the campus")


# --- payment and authentication codes --------------------------------------------------------
@dataclass(frozen=True)
class PhoneCode(_Signed):
    kind: Kind
    campus: int
    serial: int
    time: int
    counter: int
    flags: int
    cert: Certificate | None

    @property
    def confirmed(self) -> bool:
        return bool(self.flags & FLAG_CONFIRMED)

    @property
    def cred(self) -> str:
        """The journal's credential string for this code."""
        return f"qr:{self.serial}:{self.counter}"


def make_code(
    phone: SigningKey,
    kind: Kind,
    campus: int,
    serial: int,
    time_s: int,
    counter: int,
    confirmed: bool = False,
    cert: bytes | None = None,
) -> bytes:
    if kind not in (Kind.PAY, Kind.AUTH):
        raise ValueError("a phone code is a payment or an authentication code")
    flags = (FLAG_CONFIRMED if confirmed else 0) | (FLAG_CERT if cert else 0)
    body = _CODE.pack(header(kind), campus, serial, time_s, counter, flags) + (cert or b"")
    return body + phone.sign(body)


def parse_code(data: bytes, kinds: Iterable[Kind] = (Kind.PAY, Kind.AUTH)) -> PhoneCode:
    kind = _head(data, kinds)
    if len(data) < _CODE.size:
        raise CodeError("truncated", f"{KIND_NAMES[kind]} is truncated ({len(data)} bytes)")
    _h, campus, serial, time_s, counter, flags = _CODE.unpack_from(data)
    if flags & ~KNOWN_FLAGS:
        raise CodeError("garbage", f"{KIND_NAMES[kind]} has unknown flags {flags:#04x}")
    cert = None
    if flags & FLAG_CERT:
        _exact(data, CODE_WITH_CERT_LEN, KIND_NAMES[kind])
        cert = parse_cert(data[_CODE.size : _CODE.size + CERT_LEN])
        if cert.serial != serial:
            raise CodeError("forged", "the certificate inside the code is not the code's")
    else:
        _exact(data, CODE_LEN, KIND_NAMES[kind])
    return PhoneCode(bytes(data), kind, campus, serial, time_s, counter, flags, cert)


@dataclass(frozen=True)
class KnownCert:
    """What a verifier's store knows of a certificate: its bytes and whether it was revoked."""

    raw: bytes
    revoked: bool = False


@dataclass(frozen=True)
class Verified:
    code: PhoneCode
    cert: Certificate

    @property
    def account_id(self) -> int:
        return self.cert.account_id


@dataclass
class CodeVerifier:
    """The one code path every verifier runs (POS offline, server, gates, ``verify-code``):
    format, kind, campus, validity window with clock-skew tolerance, certificate chain,
    signature.  The seen-set (single use) and the account's state (R2) are the caller's,
    who has the store for them."""

    campus: int
    issuer_keys: dict[int, VerifyKey]
    lookup_cert: Callable[[int], KnownCert | None]
    valid_s: int = 60
    skew_s: int = 30

    def verify(
        self, text: str, now_ms: int, kinds: Iterable[Kind] = (Kind.PAY, Kind.AUTH)
    ) -> Verified:
        code = parse_code(unpack_text(text), kinds)
        if code.campus != self.campus:
            raise CodeError("other_campus", "code of another campus")
        now = now_ms // 1000
        if code.time > now + self.skew_s:
            raise CodeError("not_yet_valid", "code is not valid yet (check the phone's clock)")
        if now > code.time + self.valid_s + self.skew_s:
            raise CodeError("expired", "code expired: refresh the code on the phone")
        known = self.lookup_cert(code.serial)
        if known is not None and known.revoked:
            raise CodeError("cert_revoked", "the phone was signed out: sign in again")
        if known is not None:
            cert = parse_cert(known.raw)
        elif code.cert is not None:
            cert = code.cert
        else:
            raise CodeError(
                "unknown_cert", "this phone is not known here yet: show the code again online"
            )
        check_cert(cert, self.issuer_keys, self.campus)
        if cert.serial != code.serial:
            raise CodeError("forged", "the certificate is not the code's")
        if not cert.not_before - self.skew_s <= code.time <= cert.not_after:
            raise CodeError("cert_expired", "the phone's certificate expired: sign in again")
        try:
            phone = VerifyKey.from_bytes(cert.phone_key)
        except ProtocolError:
            raise CodeError("bad_cert", "the certificate holds no valid phone key") from None
        if not phone.ok(code.sig, code.signed):
            raise CodeError("forged", "code signature does not verify (forged or altered)")
        return Verified(code, cert)


# --- reverse scan: payment request and proof -------------------------------------------------
@dataclass(frozen=True)
class PaymentRequest(_Signed):
    campus: int
    terminal: int
    order: int
    amount_fen: int
    time: int
    nonce: bytes

    @property
    def terminal_id(self) -> str:
        return terminal_id(self.terminal)


def make_request(
    terminal_key: SigningKey,
    campus: int,
    terminal: int,
    order: int,
    amount_fen: int,
    time_s: int,
    nonce: bytes,
) -> bytes:
    if len(nonce) != 8:
        raise ValueError("a request nonce is 8 bytes")
    body = _REQUEST.pack(header(Kind.REQUEST), campus, terminal, order, amount_fen, time_s, nonce)
    return body + terminal_key.sign(body)


def parse_request(data: bytes) -> PaymentRequest:
    req = PaymentRequest(bytes(data), *_fields(data, Kind.REQUEST, _REQUEST, "payment request"))
    if req.amount_fen <= 0:
        raise CodeError("garbage", "a payment request's amount must be positive")
    return req


@dataclass(frozen=True)
class PaymentProof(_Signed):
    campus: int
    terminal: int
    order: int
    amount_fen: int
    account_id: int
    payment: int
    kid: int


def make_proof(
    issuer: SigningKey, kid: int, req: PaymentRequest, account_id: int, payment: int
) -> bytes:
    body = _PROOF.pack(
        header(Kind.PROOF),
        req.campus,
        req.terminal,
        req.order,
        req.amount_fen,
        account_id,
        payment,
        kid,
    )
    return body + issuer.sign(body)


def parse_proof(data: bytes) -> PaymentProof:
    return PaymentProof(bytes(data), *_fields(data, Kind.PROOF, _PROOF, "payment proof"))


def check_proof(
    proof: PaymentProof, issuer_keys: dict[int, VerifyKey], req: PaymentRequest
) -> None:
    """The proof answers exactly this request and is signed by the campus."""
    if proof.campus != req.campus:
        raise CodeError("other_campus", "proof of another campus")
    if (proof.terminal, proof.order) != (req.terminal, req.order):
        raise CodeError("wrong_request", "this proof pays another payment request")
    if proof.amount_fen != req.amount_fen:
        raise CodeError("wrong_amount", "this proof pays another amount")
    if not _issuer_signed(proof, proof.kid, issuer_keys, "proof"):
        raise CodeError("forged", "proof signature does not verify (forged or altered)")


def proof_code(proof_key: bytes, req: PaymentRequest) -> str:
    """The short numeric proof keyed on the PIN pad: an HMAC of the signed request under the
    key the server shares with this terminal, truncated to 8 digits."""
    mac = hmac.new(proof_key, b"ykt-proof-code-v1" + req.signed, hashlib.sha256).digest()
    return f"{int.from_bytes(mac[:8], 'big') % 10**PROOF_CODE_DIGITS:0{PROOF_CODE_DIGITS}d}"


def check_proof_code(proof_key: bytes, req: PaymentRequest, digits: str) -> None:
    digits = (digits or "").strip()
    if len(digits) != PROOF_CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        raise CodeError("garbage", f"a proof code is {PROOF_CODE_DIGITS} digits")
    if not hmac.compare_digest(proof_code(proof_key, req), digits):
        raise CodeError("forged", "wrong proof code")


def derive_proof_key(secret: bytes, terminal: str) -> bytes:
    """The per-terminal key for short proof codes (the server derives it from its secret)."""
    return hmac.new(secret, b"ykt-proof-key-v1:" + terminal.encode(), hashlib.sha256).digest()
