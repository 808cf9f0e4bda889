"""The phone-code decider (edge/pos/decide_qr.py) in-process: forward scan online and offline,
reverse scan with a proof shown or keyed (R8, R18; docs/codes.md)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from edge.errors import ReverseRefused
from sync import codes
from sync.records import JournalRecord
from tests.unit.fakes import CERT_SERIAL, ISSUER_KID, PHONE_ACCT, PROOF_KEY, World, error


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def sales(w: World) -> list[JournalRecord]:
    return w.records()


# --- forward scan -------------------------------------------------------------------------------
def test_online_code_is_authorized_by_the_server_and_spent_here(w: World) -> None:
    w.online()
    w.approve(PHONE_ACCT, 1, 28_800, 5000, spent_fen=700)
    text = w.code()
    out = w.qr.decide_forward(text, 1200)
    assert (out.approved, out.offline, out.balance_fen, out.method) == (
        True,
        False,
        28_800,
        "qr-forward",
    )
    assert w.server.requests[-1][2] == {
        "seq": 1,
        "amount_fen": 1200,
        "method": "qr-forward",
        "qr": text,
    }
    (rec,) = sales(w)
    assert (rec.method, rec.cred, rec.acct, rec.spent, rec.auth) == (
        "qr-forward",
        f"qr:{CERT_SERIAL}:1",
        PHONE_ACCT,
        700,
        "T00042:1",
    )
    assert rec.x_value("code") == text
    asked = len(w.server.requests)
    again = w.qr.decide_forward(text, 1200)
    assert again.code == "replayed" and len(w.server.requests) == asked  # not even asked


def test_cheap_refusals_come_before_the_server(w: World) -> None:
    w.online()
    auth = codes.make_code(w.phone, codes.Kind.AUTH, w.campus, CERT_SERIAL, 1, 9)
    other = codes.make_code(w.phone, codes.Kind.PAY, w.campus ^ 1, CERT_SERIAL, 1, 9)
    assert w.qr.decide_forward(codes.to_text(auth), 100).code == "wrong_kind"
    assert w.qr.decide_forward(codes.to_text(other), 100).code == "other_campus"
    assert w.qr.decide_forward("not a code", 100).code == "garbage"
    assert w.server.requests == [] and sales(w) == []


def test_a_refused_code_is_declined_online(w: World) -> None:
    w.online()
    w.server.auth.append(error(422, "invalid", "amount"))
    out = w.qr.decide_forward(w.code(), 100)
    assert (out.approved, out.code, out.offline) == (False, "declined", False)
    assert sales(w) == [] and w.link.online


def test_a_declined_code_shows_the_servers_reason(w: World) -> None:
    w.online()
    w.server.auth.append(
        {
            "approved": False,
            "code": "insufficient",
            "reason": "insufficient balance",
            "balance_fen": 5,
        }
    )
    out = w.qr.decide_forward(w.code(), 100)
    assert (out.code, out.reason, out.balance_fen) == ("insufficient", "insufficient balance", 5)


def test_an_unavailable_server_sends_the_code_offline(w: World) -> None:
    w.online()
    w.server.auth.append(error(503, "store_unavailable"))
    out = w.qr.decide_forward(w.code(), 1000)
    assert (out.approved, out.offline, out.balance_fen) == (True, True, 29_000)
    (rec,) = sales(w)
    assert rec.off and rec.auth is None and not w.link.online


def test_offline_code_checks(w: World) -> None:
    w.offline()
    assert w.qr.decide_forward(w.code(), 1000).approved
    out = w.qr.decide_forward(w.code(), 4500)  # 5500 > 5000 (R6)
    assert out.code == "needs_confirm"
    out = w.qr.decide_forward(w.code(confirmed=True), 4500)
    assert out.approved
    assert [(r.pin, r.spent) for r in sales(w)] == [("none", 0), ("ok", 0)]
    w.clock.advance(3600 * 1000)
    stale = w.code()
    w.clock.advance(361 * 1000)  # valid 300 s + 60 s skew
    assert w.qr.decide_forward(stale, 100).code == "expired"


def test_offline_refuses_a_revoked_phone_and_an_unknown_one(w: World) -> None:
    w.offline()
    w.cache.apply(
        w.cache_page(
            certs=[{**w.page["certs"][0], "revoked": True}],
        )
    )
    assert w.qr.decide_forward(w.code(), 100).code == "cert_revoked"
    assert w.qr.decide_forward(w.code(serial=CERT_SERIAL + 1), 100).code == "unknown_cert"
    assert sales(w) == []


# --- reverse scan -------------------------------------------------------------------------------
def test_reverse_scan_only_while_offline(w: World) -> None:
    w.online()
    with pytest.raises(ReverseRefused):
        w.qr.start_reverse(100)
    w.link.down("refused")  # the link believes it is down, but the server answers a probe
    with pytest.raises(ReverseRefused):
        w.qr.start_reverse(100)


def test_reverse_scan_with_the_proof_shown(w: World) -> None:
    w.offline()
    pending = w.qr.start_reverse(1500)
    assert (pending.request.amount_fen, pending.request.order) == (1500, 1)
    wrong = codes.parse_request(codes.make_request(w.key, w.campus, 42, 1, 999, 1, b"\x00" * 8))
    bad = codes.make_proof(w.issuer, ISSUER_KID, wrong, PHONE_ACCT, 9001)
    assert w.qr.accept_proof_text(pending, codes.to_text(bad)).code == "wrong_amount"
    good = codes.make_proof(w.issuer, ISSUER_KID, pending.request, PHONE_ACCT, 9001)
    out = w.qr.accept_proof_text(pending, codes.to_text(good))
    assert (out.approved, out.offline, out.method) == (True, True, "qr-reverse")
    (rec,) = sales(w)
    assert (rec.acct, rec.amt, rec.cred, rec.x) == (
        PHONE_ACCT,
        1500,
        "qr-reverse:1",
        # the proof itself too: a server restored from an older backup charges from it
        {"order": 1, "payment": 9001, "proof": base64.b64encode(good).decode()},
    )
    assert w.journal.unsynced_offline_fen == 0  # the phone paid online: no money at risk


def test_reverse_scan_with_the_proof_keyed(w: World) -> None:
    w.offline()
    pending = w.qr.start_reverse(600)
    out = w.qr.accept_proof_code(pending, "12345678")
    assert (out.approved, out.code, out.tries_left) == (False, "forged", 4)
    digits = codes.proof_code(PROOF_KEY, pending.request)
    out = w.qr.accept_proof_code(pending, digits)
    assert out.approved
    (rec,) = sales(w)
    assert (rec.acct, rec.x) == (0, {"order": 1, "proof": "code"})


def test_reverse_scan_needs_the_code_keys(tmp_path: Path) -> None:
    w = World(tmp_path, codes={"keys": [], "proof_key": ""})
    w.offline()
    with pytest.raises(ReverseRefused, match="code keys"):
        w.qr.start_reverse(100)
    assert base64.b64decode(w.cache.codes.proof_key) == b""
