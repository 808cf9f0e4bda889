"""Journal ingest on the real server over loopback, with a hand-built terminal (docs/architecture.md):
exactly once by (terminal, sequence), gaps held until filled, and every tampered record
refused with an alarm and never applied.  After each case: balances, the ledger check, alarms.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync import protocol
from sync.crypto import SigningKey, b64e
from sync.errors import ServerRefused
from tests.handterm import HandTerminal, alarms_of, error_of, fresh_account, ledger_ok
from tests.helpers import ServerProc

START = 100_00


@pytest.fixture
def setup(module_server: ServerProc) -> tuple[ServerProc, HandTerminal, dict[str, Any]]:
    term = HandTerminal.enroll(module_server, "ingest")
    acct = fresh_account(module_server, topup_fen=START)
    return module_server, term, acct


def balance(server: ServerProc, acct: dict[str, Any]) -> int:
    return int(server.account(acct["number"])["balance_fen"])


def sales(term: HandTerminal, acct: dict[str, Any], *amounts: int) -> list[dict[str, str]]:
    return [term.record(acct["id"], a) for a in amounts]


def head(server: ServerProc, term: HandTerminal) -> int:
    rows = server.admin().call("GET", "/v1/admin/terminals")["terminals"]
    return int(next(t["head_seq"] for t in rows if t["id"] == term.terminal_id))


def edit(wire: dict[str, str], **changes: Any) -> dict[str, str]:
    """The same record with fields changed and its old signature kept (what a tamperer can do
    without the terminal's key)."""
    rec = {**json.loads(wire["body"]), **changes}
    return {"body": protocol.canonical(rec).decode(), "sig": wire["sig"]}


# --- exactly once -------------------------------------------------------------------------------
def test_same_batch_twice_applies_once(setup: Any) -> None:
    server, term, acct = setup
    batch = sales(term, acct, 100, 200, 300)
    first = term.push(batch)
    assert (first["ack"], first["applied"], first["duplicates"]) == (3, 3, 0)
    again = term.push(batch)
    assert (again["ack"], again["applied"], again["duplicates"]) == (3, 0, 3)
    assert again["alarms"] == []
    assert balance(server, acct) == START - 600
    bills = server.account(acct["number"])["bills"]
    assert sorted(b["amount_fen"] for b in bills if b["kind"] == "sale") == [-300, -200, -100]
    ledger_ok(server)
    assert alarms_of(server, term.terminal_id) == []


def test_batches_out_of_order(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300, 400, 500, 600)
    later = term.push(term.wire([4, 5, 6]))
    assert (later["ack"], later["applied"], later["pending"]) == (0, 0, 3)
    assert balance(server, acct) == START
    earlier = term.push(term.wire([3, 1, 2]))  # and out of order inside the batch
    assert (earlier["ack"], earlier["applied"], earlier["pending"]) == (6, 6, 0)
    assert balance(server, acct) == START - 2100
    assert term.push(term.wire(range(1, 7)))["duplicates"] == 6
    assert balance(server, acct) == START - 2100
    ledger_ok(server)
    assert alarms_of(server, term.terminal_id) == []


def test_gap_filled_later(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300, 400, 500)
    assert term.push(term.wire([1, 2]))["ack"] == 2
    held = term.push(term.wire([4, 5]))
    assert (held["ack"], held["applied"], held["pending"]) == (2, 0, 2)
    assert balance(server, acct) == START - 300  # records after the gap are held, not applied
    assert head(server, term) == 2
    filled = term.push(term.wire([3]))
    assert (filled["ack"], filled["applied"], filled["pending"]) == (5, 3, 0)
    assert balance(server, acct) == START - 1500
    ledger_ok(server)
    assert alarms_of(server, term.terminal_id) == []


def test_gap_filled_by_a_resend_of_everything(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300, 400)
    term.push(term.wire([1]))
    term.push(term.wire([3, 4]))
    resend = term.push(term.wire([1, 2, 3, 4]))
    assert (resend["ack"], resend["applied"], resend["duplicates"]) == (4, 3, 1)
    assert balance(server, acct) == START - 1000
    ledger_ok(server)


# --- tampering ---------------------------------------------------------------------------------
def test_duplicate_that_differs_from_the_stored_record_is_a_tamper_alarm(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200)
    term.push(term.wire([1, 2]))
    # a different record under an id already stored, even correctly signed by the terminal
    rec = {**term.journal[1][0].to_dict(), "amt": 1}
    body, sig = protocol.seal(term.key, rec)
    out = term.push([protocol.wire_record(body, sig)])
    assert out["ack"] == 2 and out["applied"] == 0 and out["duplicates"] == 0
    assert [a["kind"] for a in out["alarms"]] == ["tamper"]
    assert balance(server, acct) == START - 300
    ledger_ok(server)
    assert [a["kind"] for a in alarms_of(server, term.terminal_id)] == ["tamper"]


def test_edited_record_is_refused_and_never_applied(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300)
    forged = edit(term.wire([2])[0], amt=1)
    out = term.push([term.wire([1])[0], forged, term.wire([3])[0]])
    assert out["ack"] == 1 and out["applied"] == 1 and out["pending"] == 0
    kinds = {a["kind"] for a in out["alarms"]}
    assert kinds and kinds <= {"broken_chain", "bad_signature"}
    assert balance(server, acct) == START - 100
    assert head(server, term) == 1
    # the genuine records still go through afterwards
    assert term.push(term.wire([2, 3]))["ack"] == 3
    assert balance(server, acct) == START - 600
    ledger_ok(server)
    assert {a["kind"] for a in alarms_of(server, term.terminal_id)} == kinds


def test_edited_newest_record_with_relinked_chain_is_refused(setup: Any) -> None:
    """Editing the newest record needs no relinking, so only its signature can tell."""
    server, term, acct = setup
    sales(term, acct, 100, 200)
    out = term.push([term.wire([1])[0], edit(term.wire([2])[0], amt=2)])
    assert out["ack"] == 1 and [a["kind"] for a in out["alarms"]] == ["bad_signature"]
    assert balance(server, acct) == START - 100
    ledger_ok(server)


def test_deleted_record_with_renumbered_successors_is_refused(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300, 400)
    term.push(term.wire([1]))
    # record 2 deleted; 3 and 4 renumbered to 2 and 3 to hide the hole
    r3, r4 = term.wire([3, 4])
    out = term.push([edit(r3, seq=2), edit(r4, seq=3)])
    assert out["ack"] == 1 and out["applied"] == 0
    assert {a["kind"] for a in out["alarms"]} & {"broken_chain", "bad_signature"}
    assert balance(server, acct) == START - 100
    ledger_ok(server)
    assert alarms_of(server, term.terminal_id)


def test_deleted_record_leaves_a_gap_that_is_never_applied_past(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300, 400)
    out = term.push(term.wire([1, 3, 4]))  # record 2 deleted, nothing renumbered
    assert (out["ack"], out["applied"], out["pending"]) == (1, 1, 2)
    assert balance(server, acct) == START - 100
    assert alarms_of(server, term.terminal_id) == []  # a moment's gap is normal
    again = term.push(term.wire([3, 4]))  # pushed again from the ack, still without record 2
    assert again["ack"] == 1
    assert [a["kind"] for a in again["alarms"]] == ["journal_gap"]
    assert "record 2 is missing" in again["alarms"][0]["detail"]
    term.push(term.wire([3, 4]))  # once per missing record, not at every retry
    assert [a["kind"] for a in alarms_of(server, term.terminal_id)] == ["journal_gap"]
    assert balance(server, acct) == START - 100
    ledger_ok(server)


def test_reordered_records_are_refused(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300)
    r1, r2, r3 = term.wire([1, 2, 3])
    # swap the sales of records 2 and 3 and relink the chain; the signatures cannot follow
    b2 = edit(r3, seq=2, prev=protocol.record_hash(r1["body"].encode()))
    b3 = edit(r2, seq=3, prev=protocol.record_hash(b2["body"].encode()))
    out = term.push([r1, b2, b3])
    assert out["ack"] == 1 and out["applied"] == 1
    assert [a["kind"] for a in out["alarms"]] == ["bad_signature"]
    assert balance(server, acct) == START - 100
    # swapped sequence numbers without relinking break the chain instead
    out = term.push([edit(r3, seq=2), edit(r2, seq=3)])
    assert out["ack"] == 1 and out["applied"] == 0
    assert "broken_chain" in {a["kind"] for a in out["alarms"]}
    assert balance(server, acct) == START - 100
    ledger_ok(server)


def test_bad_signature_on_the_newest_record(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300)
    r1, r2, r3 = term.wire([1, 2, 3])
    other = SigningKey.generate()
    bad = {"body": r3["body"], "sig": b64e(other.sign(r3["body"].encode()))}
    out = term.push([r1, r2, bad])
    assert (out["ack"], out["applied"], out["pending"]) == (2, 2, 0)
    assert [a["kind"] for a in out["alarms"]] == ["bad_signature"]
    assert balance(server, acct) == START - 300
    # garbage instead of a signature, alone
    out = term.push([{"body": r3["body"], "sig": "not base64!"}])
    assert out["ack"] == 2 and [a["kind"] for a in out["alarms"]] == ["bad_signature"]
    # the correctly signed record is applied when it comes
    assert term.push([r3])["ack"] == 3
    assert balance(server, acct) == START - 600
    ledger_ok(server)
    assert [a["kind"] for a in alarms_of(server, term.terminal_id)] == ["bad_signature"] * 2


def test_held_record_that_differs_from_a_later_copy_is_a_tamper_alarm(setup: Any) -> None:
    server, term, acct = setup
    sales(term, acct, 100, 200, 300)
    term.push(term.wire([3]))  # held behind the gap
    out = term.push([edit(term.wire([3])[0], amt=5)])
    # (and pushed again without records 1 and 2: the gap is reported too)
    assert [a["kind"] for a in out["alarms"]] == ["tamper", "journal_gap"]
    assert term.push(term.wire([1, 2]))["ack"] == 3
    assert balance(server, acct) == START - 600
    ledger_ok(server)


def test_records_of_another_terminal_are_refused(setup: Any) -> None:
    server, term, acct = setup
    other = HandTerminal.enroll(server, "ingest-other")
    theirs = other.record(acct["id"], 100)  # sealed by the other terminal itself
    with pytest.raises(ServerRefused) as err:
        term.push([theirs])
    assert (err.value.status, err.value.code) == (422, "foreign_record")
    # the same, sealed with this terminal's own key
    body, sig = protocol.seal(term.key, json.loads(theirs["body"]))
    with pytest.raises(ServerRefused) as err:
        term.push([*sales(term, acct, 50), protocol.wire_record(body, sig)])
    assert (err.value.status, err.value.code) == (422, "foreign_record")
    assert balance(server, acct) == START
    assert head(server, term) == 0
    ledger_ok(server)
    assert [a["kind"] for a in alarms_of(server, term.terminal_id)] == ["foreign_record"] * 2
    # the other terminal's own push is unaffected
    assert other.push([theirs])["ack"] == 1
    assert balance(server, acct) == START - 100


def test_record_naming_an_unknown_account_moves_no_money(setup: Any) -> None:
    server, term, _acct = setup
    term.record(999_999, 100)
    out = term.push(term.wire([1]))
    assert out["ack"] == 1
    assert [a["kind"] for a in out["alarms"]] == ["unknown_account"]
    ledger_ok(server)


# --- malformed bodies ----------------------------------------------------------------------------
def _signed_body(term: HandTerminal, **changes: Any) -> dict[str, str]:
    """A record with out-of-range fields, encoded and signed without validation."""
    rec = {**term.fields(1, 100), **changes}
    body = protocol.canonical(rec)
    return protocol.wire_record(body, term.key.sign(body))


MALFORMED: list[tuple[str, Any]] = [
    ("not json", lambda t: {"records": [{"body": "{", "sig": ""}]}),
    ("not an object", lambda t: {"records": [{"body": "[]", "sig": ""}]}),
    ("missing field", lambda t: {"records": [{"body": '{"v":1}', "sig": ""}]}),
    ("nested too deep", lambda t: {"records": [{"body": "[" * 4000, "sig": ""}]}),
    (
        "not canonical",
        lambda t: {"records": [{"body": json.dumps(t.fields(1, 100), indent=1), "sig": ""}]},
    ),
    (
        "lone surrogate",
        lambda t: {"records": [{"body": json.dumps(t.fields(1, 100, op="\ud800")), "sig": ""}]},
    ),
    # (a record that can be placed in the chain but whose amount, time or account is out of
    # range is refused on its own, with an alarm, and does not block the terminal: issue 10
    # item 7, tests/test_wire_bounds.py)
    ("sequence over 64 bits", lambda t: {"records": [_signed_body(t, seq=2**63)]}),
    ("body not a string", lambda t: {"records": [{"body": {"v": 1}, "sig": ""}]}),
    ("sig missing", lambda t: {"records": [{"body": "{}"}]}),
    ("extra wire field", lambda t: {"records": [{"body": "{}", "sig": "", "x": 1}]}),
    ("records not a list", lambda t: {"records": {"body": "{}"}}),
    ("no records", lambda t: {}),
    ("too many", lambda t: {"records": [{"body": "{}", "sig": ""}] * 2001}),
    ("body too long", lambda t: {"records": [{"body": "x" * 5000, "sig": ""}]}),
]


@pytest.mark.parametrize(("why", "make"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_get_a_clear_422(setup: Any, why: str, make: Any) -> None:
    server, term, acct = setup
    good = term.record(acct["id"], 100)
    payload = make(term)
    if isinstance(payload.get("records"), list) and len(payload["records"]) < 10:
        payload["records"] = [good, *payload["records"]]  # a good record does not carry it
    resp = term.push_raw(json.dumps(payload).encode())
    assert resp.status_code == 422, (why, resp.text)
    err = error_of(resp)
    assert err["code"] in {"invalid", "bad_record"}, err
    assert balance(server, acct) == START  # nothing of the batch was applied
    assert head(server, term) == 0
    ledger_ok(server)


def test_body_that_is_not_json_at_all(setup: Any) -> None:
    server, term, _acct = setup
    for raw in (
        b"",
        b"{",
        b"\xff\xfe",
        b"[" * 100_000,
        b"null",
        b'{"records":[{"body":"\\ud800","sig":""}]}',  # a lone surrogate, not Unicode
    ):
        resp = term.push_raw(raw)
        assert resp.status_code == 422, (raw[:10], resp.text)
        error_of(resp)
    ledger_ok(server)
