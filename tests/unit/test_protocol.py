"""sync.protocol: canonical record bodies, the hash chain, request signing and verification."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import protocol
from sync.crypto import SigningKey, b64d, b64e
from sync.errors import ProtocolError, SignatureError

KEY = SigningKey.from_seed(bytes(range(32)))
OTHER = SigningKey.from_seed(bytes(32))


def rec(seq: int = 1, prev: str | None = None, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "v": 1,
        "term": "T00001",
        "seq": seq,
        "prev": prev or protocol.genesis_hash("T00001"),
        "ts": 1_780_000_000_000,
        "kind": "sale",
        "acct": 7,
        "cred": "card:10000001:0A1B2C3D",
        "amt": 1250,
        "method": "card",
        "off": False,
        "pin": "none",
        "spent": 0,
        "lim": 5000,
        "bal": 8750,
        "op": "张三",
        "auth": "T00001:1",
    }
    r.update(kw)
    return r


def chain(n: int, key: SigningKey = KEY) -> list[tuple[bytes, bytes]]:
    out, prev = [], protocol.genesis_hash("T00001")
    for i in range(1, n + 1):
        body, sig = protocol.seal(key, rec(i, prev, amt=100 * i))
        out.append((body, sig))
        prev = protocol.record_hash(body)
    return out


def verify_chain(records: list[tuple[bytes, bytes]], key: SigningKey = KEY) -> None:
    """The server's rule, in miniature: links from genesis, the newest signature."""
    prev = protocol.genesis_hash("T00001")
    for i, (body, _sig) in enumerate(records, start=1):
        r = protocol.parse_body(body)
        if r["seq"] != i or r["prev"] != prev:
            raise ProtocolError(f"chain broken at {i}")
        prev = protocol.record_hash(body)
    key.public.verify(records[-1][1], records[-1][0])


# --- canonical encoding ---------------------------------------------------------------------
def test_canonical_is_sorted_compact_utf8() -> None:
    assert protocol.canonical({"b": 1, "a": "张", "c": [1, {"z": None, "y": True}]}) == (
        '{"a":"张","b":1,"c":[1,{"y":true,"z":null}]}'.encode()
    )


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=10,
        ),
        max_size=6,
    )
)
def test_canonical_is_stable_under_key_order(obj: dict[str, Any]) -> None:
    try:
        once = protocol.canonical(obj)
    except ProtocolError:  # lone surrogates cannot be UTF-8
        return
    shuffled = dict(reversed(list(obj.items())))
    assert protocol.canonical(shuffled) == once
    assert protocol.canonical(json.loads(once)) == once


def test_canonical_refuses_lone_surrogates() -> None:
    with pytest.raises(ProtocolError):
        protocol.canonical({"op": "\ud800"})


def test_seal_signs_the_canonical_body() -> None:
    body, sig = protocol.seal(KEY, rec())
    assert body == protocol.canonical(rec())
    KEY.public.verify(sig, body)
    assert protocol.parse_body(body) == rec()
    assert protocol.wire_record(body, sig) == {"body": body.decode(), "sig": b64e(sig)}


def test_genesis_differs_per_terminal() -> None:
    assert protocol.genesis_hash("T00001") != protocol.genesis_hash("T00002")
    assert len(protocol.genesis_hash("T00001")) == 64


# --- the hash chain ------------------------------------------------------------------------------
def test_chain_verifies() -> None:
    verify_chain(chain(5))


def test_chain_detects_an_edited_record() -> None:
    records = chain(5)
    edited = json.loads(records[2][0])
    edited["amt"] = 1
    records[2] = (protocol.canonical(edited), records[2][1])
    with pytest.raises(ProtocolError, match="broken at 4"):
        verify_chain(records)


def test_chain_detects_a_deleted_record() -> None:
    records = chain(5)
    del records[2]
    with pytest.raises(ProtocolError, match="broken at 3"):
        verify_chain(records)


def test_chain_detects_reordered_records() -> None:
    records = chain(5)
    records[1], records[2] = records[2], records[1]
    with pytest.raises(ProtocolError, match="broken at 2"):
        verify_chain(records)


def test_newest_signature_must_be_the_terminals() -> None:
    records = chain(3)
    records[-1] = (records[-1][0], OTHER.sign(records[-1][0]))
    with pytest.raises(SignatureError):
        verify_chain(records)


def test_editing_the_newest_record_breaks_its_signature() -> None:
    records = chain(3)
    edited = json.loads(records[-1][0])
    edited["amt"] += 1
    records[-1] = (protocol.canonical(edited), records[-1][1])
    with pytest.raises(SignatureError):
        verify_chain(records)


# --- field validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"seq": 0},
        {"seq": -1},
        {"seq": True},
        {"seq": 1.0},
        {"seq": "1"},
        {"amt": 0},
        {"amt": -5},
        {"amt": 2**63},
        {"seq": 2**63},
        {"acct": 2**70},
        {"acct": 0},
        {"ts": 2**62},
        {"ts": -1},
        {"spent": 2**64},
        {"bal": -(2**64)},
        {"kind": "refund"},
        {"method": "cash"},
        {"pin": "maybe"},
        {"off": 0},
        {"prev": "0" * 63},
        {"prev": "g" * 64},
        {"bal": "12"},
        {"auth": 5},
        {"x": []},
        {"extra": 1},
    ],
)
def test_check_fields_refuses(change: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        protocol.check_fields(rec(**change))
    with pytest.raises(ProtocolError):
        protocol.parse_body(json.dumps(rec(**change)))


@pytest.mark.parametrize("name", sorted(protocol.RECORD_FIELDS))
def test_check_fields_requires_every_field(name: str) -> None:
    r = rec()
    del r[name]
    with pytest.raises(ProtocolError, match=name):
        protocol.check_fields(r)


def test_pin_fail_may_carry_zero() -> None:
    assert protocol.check_fields(rec(kind="pin_fail", amt=0, pin="fail"))["amt"] == 0


def test_optional_extension_object() -> None:
    assert protocol.check_fields(rec(x={"qr": "abc"}))["x"] == {"qr": "abc"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b"1",
        b'"text"',
        b"{",
        b"\xff\xfe\x00",
        b"\xef\xbb\xbf{}",
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"NaN",
        b"9" * 5000,
    ],
)
def test_parse_body_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.parse_body(raw)
    with pytest.raises(ProtocolError):
        protocol.parse_body(raw.decode("utf-8", "replace"))


def test_parse_body_refuses_lone_surrogates() -> None:
    """A body with an escaped lone surrogate cannot be canonical UTF-8."""
    text = json.dumps(rec(op="\ud800"))
    assert "\\ud800" in text
    with pytest.raises(ProtocolError):
        protocol.parse_body(text)
    with pytest.raises(ProtocolError):
        protocol.seal(KEY, rec(op="\ud800"))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_parse_body_on_arbitrary_bytes_raises_only_protocol_error(raw: bytes) -> None:
    try:
        protocol.parse_body(raw)
    except ProtocolError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSON)
def test_parse_body_on_arbitrary_json_raises_only_protocol_error(value: Any) -> None:
    try:
        text = json.dumps(value)
    except ValueError:
        return
    try:
        protocol.parse_body(text)
    except ProtocolError:
        pass


FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=70),
    st.just("a" * 64),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=500)
@given(st.dictionaries(st.sampled_from(sorted(protocol.RECORD_FIELDS)), FIELD_VALUES))
def test_parse_body_on_mutated_records_raises_only_protocol_error(changes: dict[str, Any]) -> None:
    """Near-valid records (every field present, some replaced by anything) either parse into a
    record whose canonical form round-trips, or raise ProtocolError."""
    r = rec(**changes)
    try:
        text = json.dumps(r)
    except ValueError:
        return
    try:
        parsed = protocol.parse_body(text)
    except ProtocolError:
        return
    body = protocol.canonical(parsed)
    assert protocol.parse_body(body) == parsed


# --- signed requests ----------------------------------------------------------------------------
def test_request_signature_round_trip() -> None:
    body = b'{"records":[]}'
    h = protocol.sign_request(KEY, "T00001", "post", "/v1/journal", body, 1_780_000_000_000)
    assert h[protocol.H_TERMINAL] == "T00001"
    t, nonce = protocol.verify_request(KEY.public, "POST", "/v1/journal", body, h)
    assert t == 1_780_000_000_000 and nonce == h[protocol.H_NONCE]


def test_request_nonces_are_fresh() -> None:
    a = protocol.sign_request(KEY, "T1", "GET", "/v1/feed", b"", 1)
    b = protocol.sign_request(KEY, "T1", "GET", "/v1/feed", b"", 1)
    assert a[protocol.H_NONCE] != b[protocol.H_NONCE]
    assert a[protocol.H_SIGNATURE] != b[protocol.H_SIGNATURE]


@pytest.mark.parametrize(
    ("method", "target", "body", "time_delta"),
    [
        ("GET", "/v1/journal", b"{}", 0),  # another method
        ("POST", "/v1/journal?x=1", b"{}", 0),  # another target
        ("POST", "/v1/feed", b"{}", 0),
        ("POST", "/v1/journal", b"{ }", 0),  # another body
        ("POST", "/v1/journal", b"{}", 1),  # another time
    ],
)
def test_request_signature_covers_every_part(
    method: str, target: str, body: bytes, time_delta: int
) -> None:
    h = protocol.sign_request(KEY, "T1", "POST", "/v1/journal", b"{}", 1000)
    h[protocol.H_TIME] = str(1000 + time_delta)
    with pytest.raises(SignatureError):
        protocol.verify_request(KEY.public, method, target, body, h)


def test_request_signature_covers_the_nonce() -> None:
    h = protocol.sign_request(KEY, "T1", "POST", "/v1/journal", b"{}", 1000)
    h[protocol.H_NONCE] = "0" * 32
    with pytest.raises(SignatureError):
        protocol.verify_request(KEY.public, "POST", "/v1/journal", b"{}", h)


def test_request_signed_by_another_key() -> None:
    h = protocol.sign_request(OTHER, "T1", "POST", "/v1/journal", b"{}", 1000)
    with pytest.raises(SignatureError):
        protocol.verify_request(KEY.public, "POST", "/v1/journal", b"{}", h)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {protocol.H_TIME: "1000", protocol.H_NONCE: "abcdefgh"},
        {protocol.H_TIME: "soon", protocol.H_NONCE: "abcdefgh", protocol.H_SIGNATURE: "AA=="},
        {protocol.H_TIME: "1000", protocol.H_NONCE: "abcdefgh", protocol.H_SIGNATURE: "***"},
        {protocol.H_TIME: "1000", protocol.H_NONCE: "short", protocol.H_SIGNATURE: "AA=="},
        {protocol.H_TIME: "1000", protocol.H_NONCE: "n" * 65, protocol.H_SIGNATURE: "AA=="},
        {protocol.H_TIME: "9" * 5000, protocol.H_NONCE: "abcdefgh", protocol.H_SIGNATURE: "AA=="},
        {protocol.H_TIME: "1000", protocol.H_NONCE: "abcdefgh", protocol.H_SIGNATURE: "AA=="},
    ],
)
def test_request_with_bad_headers_raises_signature_error(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        protocol.verify_request(KEY.public, "POST", "/v1/journal", b"{}", headers)


@given(
    st.dictionaries(
        st.sampled_from(
            [protocol.H_TERMINAL, protocol.H_TIME, protocol.H_NONCE, protocol.H_SIGNATURE]
        ),
        st.text(max_size=100),
    )
)
def test_verify_request_on_arbitrary_headers_raises_only_signature_error(
    headers: dict[str, str],
) -> None:
    with pytest.raises(SignatureError):
        protocol.verify_request(KEY.public, "GET", "/v1/feed", b"", headers)


def test_b64d_refuses_garbage() -> None:
    with pytest.raises(ProtocolError):
        b64d("not base64!")
