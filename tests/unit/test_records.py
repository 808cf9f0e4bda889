"""sync.records: the typed journal record accepts exactly the bodies the dict-based code accepted
(a copy of that code is the oracle here, with the bounds of sync/bounds.py that issue 10 item 7
gave every integer on the wire: an amount is one operation, ids at most 2^53 - 1, and the known
parts of ``x`` are checked), encodes exactly its canonical bytes, and the typed server answers
keep their JSON shape."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sync import protocol
from sync.bounds import MAX_AMOUNT_FEN, MAX_ID
from sync.card.layout import Counters
from sync.errors import ProtocolError
from sync.records import (
    UNSET,
    AuthorizeAnswer,
    AuthorizeRequest,
    CardFacts,
    CardX,
    Entry,
    FeedPage,
    JournalRecord,
    PushAck,
    TerminalPolicy,
    answer,
    card_pin_fail,
    card_sale,
    code_sale,
    reverse_sale,
    to_json,
)

PREV = "ab" * 32


# --- the record code before sync.records, kept as the oracle -----------------------------------
_OLD_FIELDS: dict[str, tuple[type, ...]] = {
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
_OLD_BOUNDS = {
    "seq": (1, MAX_ID),
    "ts": (0, 253_402_300_799_999),
    "acct": (1, MAX_ID),
    "amt": (0, MAX_AMOUNT_FEN),
    "spent": (-MAX_ID, MAX_ID),
    "lim": (-MAX_ID, MAX_ID),
    "bal": (-MAX_ID, MAX_ID),
}
#: the known parts of ``x`` (issue 10 item 7): the card's counters as wide as the card has them
_CARD_X = {"gen": 0xFFFF, "ctr": 0xFFFF, "taps": 0xFFFFFF, "tries": 0xFF, "ep": 0xFF}


def _int_in(val: Any, lo: int, hi: int) -> bool:
    return isinstance(val, int) and not isinstance(val, bool) and lo <= val <= hi


def _old_check_x(rec: dict[str, Any]) -> None:
    x = rec.get("x") or {}
    if "card" in x:
        card = x["card"]
        if not isinstance(card, dict) or not isinstance(card.get("uid"), str):
            raise ProtocolError("x.card")
        if not all(_int_in(card.get(k), 0, hi) for k, hi in _CARD_X.items()):
            raise ProtocolError("x.card")
    for key in ("order", "payment"):
        if key in x and not _int_in(x[key], 0, MAX_ID):
            raise ProtocolError(f"x.{key}")
    if rec["method"] == "qr-forward" and rec["cred"].startswith("qr:"):
        parts = rec["cred"].split(":")
        if len(parts) != 3 or not all(
            p.isascii() and p.isdigit() and len(p) <= 16 and int(p) <= MAX_ID for p in parts[1:]
        ):
            raise ProtocolError("cred")


_OLD_ENC = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _old_canonical(obj: Any) -> bytes:
    try:
        return _OLD_ENC.encode(obj).encode()
    except UnicodeEncodeError as exc:
        raise ProtocolError("lone surrogate") from exc


def _old_check(rec: Any) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise ProtocolError("not an object")
    for name, types in _OLD_FIELDS.items():
        if name not in rec:
            raise ProtocolError(f"lacks {name}")
        val = rec[name]
        if (isinstance(val, bool) and bool not in types) or not isinstance(val, types):
            raise ProtocolError(f"type of {name}")
    for name in rec:
        if name not in _OLD_FIELDS and name != "x":
            raise ProtocolError(f"unknown {name}")
    if "x" in rec and not isinstance(rec["x"], dict):
        raise ProtocolError("x")
    for name, (lo, hi) in _OLD_BOUNDS.items():
        val = rec[name]
        if name == "acct" and val == 0 and rec.get("method") == "qr-reverse":
            continue
        if val is not None and not lo <= val <= hi:
            raise ProtocolError(f"range of {name}")
    if rec["v"] != 1 or rec["kind"] not in ("sale", "pin_fail"):
        raise ProtocolError("v/kind")
    if rec["method"] not in ("card", "qr-forward", "qr-reverse"):
        raise ProtocolError("method")
    if rec["pin"] not in ("none", "ok", "fail"):
        raise ProtocolError("pin")
    if rec["amt"] < 0 or (rec["kind"] == "sale" and rec["amt"] == 0):
        raise ProtocolError("amt")
    if not re.fullmatch(r"[0-9a-f]{64}", rec["prev"]):
        raise ProtocolError("prev")
    _old_check_x(rec)
    return dict(rec)


def _old_parse(body: str) -> dict[str, Any]:
    try:
        rec = json.loads(body)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ProtocolError("not JSON") from exc
    out = _old_check(rec)
    if "\\u" in body:
        _old_canonical(out)
    return out


def _verdict(parse: Any, body: str) -> tuple[bool, Any]:
    try:
        return True, parse(body)
    except ProtocolError:
        return False, None


def rec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "term": "T00001",
        "seq": 1,
        "prev": PREV,
        "ts": 1_780_000_000_000,
        "kind": "sale",
        "acct": 7,
        "cred": "card:C1:04A1B2C3",
        "amt": 350,
        "method": "card",
        "off": False,
        "pin": "none",
        "spent": 0,
        "lim": 5000,
        "bal": 1000,
        "op": "",
        "auth": None,
    }
    base.update(changes)
    return base


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [
            *(0, 1, 2**62, 2**62 + 1, 253_402_300_799_999, 253_402_300_799_999 + 1),
            *(MAX_AMOUNT_FEN, MAX_AMOUNT_FEN + 1, MAX_ID, MAX_ID + 1, -MAX_ID, -MAX_ID - 1),
        ]
    ),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["sale", "pin_fail", "card", "qr-reverse", "ok", "fail", PREV, "\ud800"]),
    st.lists(st.integers(), max_size=2),
)
X = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=400)
@given(
    st.dictionaries(st.sampled_from([*sorted(_OLD_FIELDS), "x", "extra"]), VALUES),
    st.one_of(st.none(), st.dictionaries(st.text(max_size=4), X, max_size=3)),
    st.sampled_from([(), ("seq",), ("x",)]),
)
@example({"x": None}, None, ())
@example({"acct": 0, "method": "qr-reverse"}, None, ())
@example({"acct": 0, "method": "card"}, None, ())
@example({"amt": 0, "kind": "pin_fail"}, None, ())
@example({}, {"f": 1e16, "n": float("nan"), "i": float("inf")}, ())
@example({"op": "\ud800"}, None, ())
@example({"amt": MAX_AMOUNT_FEN + 1}, None, ())
@example({}, {"card": {"uid": "AB", "gen": 1, "ctr": 2, "taps": 3, "tries": 2**64, "ep": 0}}, ())
@example({"method": "qr-reverse"}, {"order": 2**70, "payment": 1}, ())
@example({"method": "qr-forward", "cred": "qr:1:²"}, {"code": "x"}, ())
@example({"method": "qr-forward", "cred": f"qr:{MAX_ID + 1}:1"}, None, ())
def test_accepts_exactly_what_the_old_code_accepted(
    changes: dict[str, Any], x: dict[str, Any] | None, drop: tuple[str, ...]
) -> None:
    fields = rec(**changes)
    if x is not None:
        fields["x"] = x
    for name in drop:
        fields.pop(name, None)
    body = json.dumps(fields, ensure_ascii=False)
    old_ok, old = _verdict(_old_parse, body)
    new_ok, new = _verdict(JournalRecord.parse, body)
    assert old_ok == new_ok, (body, old, new)
    if not old_ok:
        return
    assert json.dumps(new.to_dict()) == json.dumps(old)  # NaN == NaN as text
    try:
        old_canonical = _old_canonical(old)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            new.body()
        return
    assert new.body() == old_canonical  # ingest compares it with the body received
    # what the old code accepted as canonical, the new one does, and nothing else
    assert JournalRecord.parse(old_canonical).body() == old_canonical


@settings(max_examples=200)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_garbage_gets_the_old_verdict(raw: bytes | str) -> None:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    assert _verdict(_old_parse, text)[0] == _verdict(JournalRecord.parse, text)[0]


def test_float_in_x_is_encoded_as_json_writes_it() -> None:
    r = JournalRecord.from_fields(rec(x={"f": 1e16, "g": [0.1, -0.0]}))
    assert r.body() == _old_canonical(rec(x={"f": 1e16, "g": [0.1, -0.0]}))
    assert b'"f":1e+16' in r.body()


def test_a_struct_built_in_code_is_checked_when_sealed() -> None:
    good = JournalRecord.from_fields(rec())
    assert good.checked_body() == _old_canonical(rec())
    for bad in ({"amt": 0}, {"seq": 0}, {"pin": "maybe"}, {"bal": True}, {"prev": "x"}):
        with pytest.raises(ProtocolError):
            msgspec.structs.replace(good, **bad).checked_body()


def test_entry_takes_its_place_in_the_chain() -> None:
    e = Entry(ts=5, acct=7, cred="card:1:AB", amt=10, method="card", op="op")
    r = e.chained("T00009", 4, PREV)
    assert (r.v, r.term, r.seq, r.prev, r.kind, r.pin, r.bal, r.auth) == (
        1,
        "T00009",
        4,
        PREV,
        "sale",
        "none",
        None,
        None,
    )
    assert "x" not in r.to_dict()
    with pytest.raises(ProtocolError, match="positive"):
        Entry(ts=5, acct=7, cred="c", amt=0, method="card").chained("T1", 1, PREV).checked_body()


def test_builders_make_the_records_the_pos_made() -> None:
    card = CardX(uid="04A1B2C3", gen=1, ctr=2, taps=1, tries=0, ep=0)
    sale = card_sale(
        ts=1,
        card_no="20260001",
        card=card,
        acct=101,
        amt=1200,
        off=False,
        pin="none",
        spent=0,
        lim=3000,
        bal=48800,
        op="",
        auth="T00042:1",
    )
    assert sale.cred == "card:20260001:04A1B2C3"
    assert sale.x == {
        "card": {"uid": "04A1B2C3", "gen": 1, "ctr": 2, "taps": 1, "tries": 0, "ep": 0}
    }
    fail = card_pin_fail(ts=1, card_no="1", card=card, acct=1, off=True, spent=5, lim=9, op="")
    assert (fail.kind, fail.amt, fail.pin, fail.bal, fail.auth) == (
        "pin_fail",
        0,
        "fail",
        None,
        None,
    )
    code = code_sale(
        ts=1,
        cred="qr:5:6",
        code_text="ABC",
        acct=2,
        amt=3,
        off=True,
        pin="ok",
        spent=0,
        lim=9,
        bal=1,
        op="",
    )
    assert (code.method, code.x) == ("qr-forward", {"code": "ABC"})
    shown = reverse_sale(ts=1, order=4, amt=5, op="", acct=2, payment=9001)
    keyed = reverse_sale(ts=1, order=5, amt=5, op="", acct=0, payment=None)
    assert shown.x == {"order": 4, "payment": 9001} and shown.cred == "qr-reverse:4"
    assert keyed.x == {"order": 5, "proof": "code"} and keyed.acct == 0
    assert shown.off and keyed.off and shown.method == "qr-reverse"
    # with the server-signed proof shown: it is journaled too (finding 1, docs/fleet.md)
    proved = reverse_sale(ts=1, order=6, amt=5, op="", acct=2, payment=9002, proof=b"\x01" * 88)
    assert proved.x == {"order": 6, "payment": 9002, "proof": "AQEB" * 29 + "AQ=="}
    for entry in (sale, fail, code, shown, keyed, proved):
        assert JournalRecord.parse(entry.chained("T1", 1, PREV).checked_body())
    # a proof that is not base64 (or absurdly long) refuses the record
    for bad in ("not base64!", "A" * 401, 7):
        with pytest.raises(ProtocolError, match=r"x\.proof"):
            JournalRecord.from_fields(rec(method="qr-reverse", x={"order": 6, "proof": bad}))


def test_card_x_reads_only_a_well_formed_card() -> None:
    x = {"card": {"uid": "AB", "gen": 1, "ctr": 2, "taps": 3, "tries": 1, "ep": 0}}
    assert JournalRecord.from_fields(rec(x=x)).card_x() == CardX("AB", 1, 2, 3, 1, 0)
    assert JournalRecord.from_fields(rec()).card_x() is None
    # a card part that is malformed or wider than the card keeps it refuses the record (item 7)
    for bad in ({"tries": "1"}, {**x["card"], "tries": 256}, {**x["card"], "taps": 2**64}):
        with pytest.raises(ProtocolError, match=r"x\.card"):
            JournalRecord.from_fields(rec(x={"card": bad}))


# --- answers ------------------------------------------------------------------------------------
def test_authorize_request_keeps_its_json_shape() -> None:
    facts = CardFacts.read(2, Counters(seq=3, day="2026-05-29", spent_fen=40, taps=5), "ok")
    req = AuthorizeRequest(seq=9, card_no="1", uid="AB", amount_fen=100, method="card", card=facts)
    assert list(to_json(req)) == ["seq", "card_no", "uid", "amount_fen", "method", "card"]
    assert to_json(req)["card"] == {
        "generation": 2,
        "day": "2026-05-29",
        "spent_fen": 40,
        "taps": 5,
        "tries": 0,
        "epoch": 0,
        "pin": "ok",
    }
    qr = AuthorizeRequest(seq=1, amount_fen=5, method="qr-forward", qr="TEXT")
    assert to_json(qr) == {"seq": 1, "amount_fen": 5, "method": "qr-forward", "qr": "TEXT"}


def test_a_decline_carries_only_what_the_server_said() -> None:
    got = answer(
        b'{"approved":false,"code":"wrong_pin","reason":"no","tries_left":2,"account_id":5}',
        AuthorizeAnswer,
    )
    assert to_json(got) == {
        "approved": False,
        "code": "wrong_pin",
        "reason": "no",
        "tries_left": 2,
        "account_id": 5,
    }
    assert got.account() == {"account_id": 5} and got.get("balance_fen") is None


def test_an_approval_without_its_hold_is_not_an_answer() -> None:
    with pytest.raises(ProtocolError):
        answer(b'{"approved":true,"code":"ok","reason":"approved"}', AuthorizeAnswer)
    with pytest.raises(ProtocolError):  # true is not a number
        answer(b'{"approved":false,"code":"x","reason":"y","balance_fen":true}', AuthorizeAnswer)


def test_push_ack_and_feed_page_defaults() -> None:
    ack = answer(b'{"ack":3}', PushAck)
    assert (ack.ack, ack.applied, ack.alarms) == (3, 0, [])
    page = answer(b'{"version":7,"newer_field":1}', FeedPage)  # a newer server may add fields
    assert (page.version, page.more, page.accounts, page.policy) == (7, False, [], UNSET)


def test_terminal_policy_before_and_after_the_feed() -> None:
    assert TerminalPolicy().offline_max_purchase_fen == 0  # no offline sale before the policy
    got = TerminalPolicy.from_feed({"offline_max_purchase_fen": 5000, "channels": {"app": True}})
    assert got.offline_max_purchase_fen == 5000 and got.pin_max_tries == 3
    with pytest.raises(ProtocolError):
        TerminalPolicy.from_feed({"pin_max_tries": "3"})


def test_protocol_names_the_record_fields() -> None:
    assert set(protocol.RECORD_FIELDS) == set(_OLD_FIELDS)
