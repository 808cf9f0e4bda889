"""The phone-code formats (docs/codes.md): Base45, encode/parse, the one verification path, and
decoders that no input crashes (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import codes
from sync.base45 import b45decode, b45encode
from sync.crypto import SigningKey
from sync.errors import CodeError, ProtocolError

ISSUER = SigningKey.from_seed(b"\x11" * 32)
PHONE = SigningKey.from_seed(b"\x22" * 32)
TERMINAL = SigningKey.from_seed(b"\x33" * 32)
CAMPUS = codes.campus_tag("ynart")
NOW = 1_780_000_000  # seconds
CERT = codes.make_cert(ISSUER, 1, CAMPUS, 7, 1001, NOW - 3600, NOW + 86400, PHONE.public.to_bytes())


def verifier(known: dict[int, codes.KnownCert] | None = None) -> codes.CodeVerifier:
    table = {7: codes.KnownCert(CERT)} if known is None else known
    return codes.CodeVerifier(CAMPUS, {1: ISSUER.public}, table.get, valid_s=60, skew_s=30)


def pay(t: int = NOW, counter: int = 1, **kw: object) -> str:
    return codes.to_text(codes.make_code(PHONE, codes.Kind.PAY, CAMPUS, 7, t, counter, **kw))  # type: ignore[arg-type]


def reason(text: str, now_s: int = NOW, v: codes.CodeVerifier | None = None) -> str:
    with pytest.raises(CodeError) as info:
        (v or verifier()).verify(text, now_s * 1000, (codes.Kind.PAY,))
    return info.value.reason


# --- Base45 (RFC 9285) --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
    ],
)
def test_base45_rfc9285_examples(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw


@pytest.mark.parametrize("bad", ["GGW", "A", "abc", "ZZZZ", "é12"])
def test_base45_refuses_non_canonical_text(bad: str) -> None:
    with pytest.raises(ProtocolError):
        b45decode(bad)


@given(st.binary(max_size=300))
def test_base45_round_trip(raw: bytes) -> None:
    assert b45decode(b45encode(raw)) == raw


# --- formats -----------------------------------------------------------------------------------
def test_payment_code_is_80_bytes_and_fits_qr_version_5() -> None:
    from sim.phone_screen import qr_version

    raw = codes.make_code(PHONE, codes.Kind.PAY, CAMPUS, 7, NOW, 1, confirmed=True)
    assert len(raw) == codes.CODE_LEN == 80
    text = codes.to_text(raw)
    assert len(text) == 120 and set(text) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert qr_version(text) <= 5
    code = codes.parse_code(codes.unpack_text(text))
    assert (code.kind, code.serial, code.counter, code.time, code.confirmed) == (
        codes.Kind.PAY,
        7,
        1,
        NOW,
        True,
    )
    assert code.cred == "qr:7:1"


def test_request_and_proof_round_trip_as_digits() -> None:
    raw = codes.make_request(TERMINAL, CAMPUS, 12, 34, 900, NOW, b"\x01" * 8)
    text = codes.to_text(raw, numeric=True)
    assert text.isdigit()
    req = codes.parse_request(codes.unpack_text(text))
    assert (req.terminal_id, req.order, req.amount_fen, req.time) == ("T00012", 34, 900, NOW)
    proof = codes.parse_proof(
        codes.unpack_text(codes.to_text(codes.make_proof(ISSUER, 1, req, 1001, 5), True))
    )
    codes.check_proof(proof, {1: ISSUER.public}, req)
    assert (proof.account_id, proof.payment) == (1001, 5)


# --- the one verification path: every refusal has a clear reason ------------------------------
def test_a_genuine_code_verifies() -> None:
    v = verifier().verify(pay(), NOW * 1000)
    assert v.account_id == 1001 and v.code.counter == 1


def test_forged_code_is_refused() -> None:
    other = SigningKey.from_seed(b"\x44" * 32)
    forged = codes.to_text(codes.make_code(other, codes.Kind.PAY, CAMPUS, 7, NOW, 1))
    assert reason(forged) == "forged"


def test_altered_code_is_refused() -> None:
    raw = bytearray(codes.unpack_text(pay()))
    raw[12] ^= 0x01  # the counter
    assert reason(codes.to_text(bytes(raw))) == "forged"


def test_validity_window_with_clock_skew() -> None:
    assert reason(pay(NOW - 91)) == "expired"  # 60 s valid + 30 s skew
    verifier().verify(pay(NOW - 89), NOW * 1000)
    assert reason(pay(NOW + 31)) == "not_yet_valid"
    verifier().verify(pay(NOW + 29), NOW * 1000)


def test_other_campus_truncated_garbage_wrong_kind() -> None:
    other = codes.campus_tag("another-campus")
    assert (
        reason(codes.to_text(codes.make_code(PHONE, codes.Kind.PAY, other, 7, NOW, 1)))
        == "other_campus"
    )
    assert reason(pay()[:-3]) == "truncated"
    assert reason("HELLO WORLD") == "garbage"
    assert reason("https://example.com/") == "garbage"
    auth = codes.to_text(codes.make_code(PHONE, codes.Kind.AUTH, CAMPUS, 7, NOW, 1))
    assert reason(auth) == "wrong_kind"


def test_revoked_and_unknown_certificates() -> None:
    assert reason(pay(), v=verifier({7: codes.KnownCert(CERT, revoked=True)})) == "cert_revoked"
    assert reason(pay(), v=verifier({})) == "unknown_cert"


def test_certificate_carried_in_the_code_is_checked_against_the_issuer() -> None:
    inside = codes.to_text(codes.make_code(PHONE, codes.Kind.PAY, CAMPUS, 7, NOW, 1, cert=CERT))
    assert len(codes.unpack_text(inside)) == codes.CODE_WITH_CERT_LEN
    assert verifier({}).verify(inside, NOW * 1000).account_id == 1001
    rogue_issuer = SigningKey.from_seed(b"\x55" * 32)
    rogue = codes.make_cert(
        rogue_issuer, 1, CAMPUS, 7, 1002, NOW - 10, NOW + 10, PHONE.public.to_bytes()
    )
    forged = codes.to_text(codes.make_code(PHONE, codes.Kind.PAY, CAMPUS, 7, NOW, 1, cert=rogue))
    assert reason(forged, v=verifier({})) == "bad_cert"


def test_proof_code_and_proof_checks() -> None:
    req = codes.parse_request(codes.make_request(TERMINAL, CAMPUS, 1, 2, 900, NOW, b"\x02" * 8))
    key = codes.derive_proof_key(b"s" * 32, "T00001")
    digits = codes.proof_code(key, req)
    assert len(digits) == 8 and digits.isdigit()
    codes.check_proof_code(key, req, digits)
    with pytest.raises(CodeError, match="wrong proof code"):
        codes.check_proof_code(key, req, f"{(int(digits) + 1) % 10**8:08d}")
    with pytest.raises(CodeError):
        codes.check_proof_code(codes.derive_proof_key(b"s" * 32, "T00002"), req, digits)
    other = codes.parse_request(codes.make_request(TERMINAL, CAMPUS, 1, 3, 900, NOW, b"\x02" * 8))
    proof = codes.parse_proof(codes.make_proof(ISSUER, 1, other, 1001, 1))
    with pytest.raises(CodeError) as info:
        codes.check_proof(proof, {1: ISSUER.public}, req)
    assert info.value.reason == "wrong_request"


# --- no input crashes a decoder (hypothesis) ---------------------------------------------------
PARSERS = (codes.parse_code, codes.parse_cert, codes.parse_request, codes.parse_proof)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_no_text_crashes_the_verifier(text: str) -> None:
    try:
        verifier().verify(text, NOW * 1000)
    except CodeError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=260))
def test_no_bytes_crash_the_parsers(raw: bytes) -> None:
    for parse in PARSERS:
        try:
            parse(raw)
        except CodeError:
            pass
    try:
        verifier().verify(codes.to_text(raw), NOW * 1000)
    except CodeError:
        pass


@settings(max_examples=200)
@given(
    st.integers(min_value=0, max_value=codes.CODE_LEN - 1), st.integers(min_value=1, max_value=255)
)
def test_every_altered_byte_is_refused(pos: int, flip: int) -> None:
    raw = bytearray(codes.unpack_text(pay()))
    raw[pos] ^= flip
    with pytest.raises(CodeError):
        verifier().verify(codes.to_text(bytes(raw)), NOW * 1000)
