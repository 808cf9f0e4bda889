"""Records signed before the journal record was typed (tests/unit/data/wire_records.json, made by
tests/unit/make_wire_fixtures.py with the dict-based code) against today's code: the same sales
make byte-identical bodies and signatures, every stored body parses, and the chains hold."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from sync import codes, protocol
from sync.crypto import SigningKey
from sync.records import JournalRecord
from tests.unit import make_wire_fixtures

STORED: dict[str, Any] = json.loads(make_wire_fixtures.FIXTURE.read_text(encoding="utf-8"))
ALL = [(part, r) for part in ("pos", "bench") for r in STORED[part]["records"]]
IDS = [f"{part}-{r['seq']}-{r['fields']['kind']}-{r['fields']['method']}" for part, r in ALL]


def test_the_fixtures_cover_every_kind_method_and_pin_fact() -> None:
    seen = {(r["fields"]["kind"], r["fields"]["method"], r["fields"]["pin"]) for _p, r in ALL}
    assert {("sale", m, "none") for m in ("card", "qr-forward", "qr-reverse")} <= seen
    assert {
        ("sale", "card", "ok"),
        ("pin_fail", "card", "fail"),
        ("sale", "qr-forward", "ok"),
    } <= seen
    offline = {(r["fields"]["method"], r["fields"]["off"]) for _p, r in ALL}
    assert {("card", True), ("card", False), ("qr-forward", True), ("qr-forward", False)} <= offline
    xs = [r["fields"].get("x", {}) for _p, r in ALL]
    assert any("card" in x for x in xs) and any("code" in x for x in xs)
    assert any("payment" in x for x in xs) and any(x.get("proof") == "code" for x in xs)
    assert any(r["fields"]["acct"] == 0 for _p, r in ALL)  # the keyed reverse-scan proof


@pytest.mark.parametrize(("part", "stored"), ALL, ids=IDS)
def test_stored_bodies_parse_and_encode_to_the_same_bytes(
    part: str, stored: dict[str, Any]
) -> None:
    rec = JournalRecord.parse(stored["body"])
    assert rec.to_dict() == stored["fields"]
    assert rec.body() == stored["body"].encode()
    assert protocol.parse_body(stored["body"].encode()) == stored["fields"]
    assert protocol.record_hash(rec.body()) == stored["hash"]


@pytest.mark.parametrize(("part", "stored"), ALL, ids=IDS)
def test_typed_and_dict_seals_sign_the_same_bytes(part: str, stored: dict[str, Any]) -> None:
    key = SigningKey.from_seed(bytes.fromhex(STORED[part]["key_seed_hex"]))
    assert key.public.to_b64() == STORED[part]["public_key"]
    sig = base64.b64decode(stored["sig"])
    typed = protocol.seal(key, JournalRecord.parse(stored["body"]))
    from_dict = protocol.seal(key, stored["fields"])
    assert typed == from_dict == (stored["body"].encode(), sig)
    assert key.public.ok(sig, stored["body"].encode())


@pytest.mark.parametrize("part", ["pos", "bench"])
def test_the_stored_chains_hold(part: str) -> None:
    prev = STORED[part]["genesis"]
    assert prev == protocol.genesis_hash(STORED[part]["terminal_id"])
    for n, r in enumerate(STORED[part]["records"], start=1):
        assert r["fields"]["seq"] == n and r["fields"]["term"] == STORED[part]["terminal_id"]
        assert r["prev"] == r["fields"]["prev"] == prev
        prev = r["hash"]


def test_todays_deciders_make_the_stored_records(tmp_path: Path) -> None:
    """The scenario of the fixtures, run again through the typed code and the transport seam:
    every body, signature and hash is what the code before the change made.

    One value moved on purpose since: a consumption password is counted on the card before it
    is checked (R5, as EMV PIN try counters do; issue 10), so each password checked costs one
    more counter write and ``x.card.ctr`` (the card's write counter after the record) of the
    later card records is higher.  The expected records are the stored fields with only that
    value changed, sealed and chained again through the dict-based path
    (:func:`sync.protocol.seal` of the fields).  And one was added: a reverse-scan sale with
    the server's proof shown carries that proof (``x.proof``; finding 1 of docs/fleet.md)."""
    world = make_wire_fixtures.run_scenario(tmp_path)
    got = make_wire_fixtures.journal_records(world)
    key = SigningKey.from_seed(bytes.fromhex(STORED["pos"]["key_seed_hex"]))
    prev = STORED["pos"]["genesis"]
    expected, moved, proofs = [], [], 0
    for new, old in zip(got, STORED["pos"]["records"], strict=True):
        fields = json.loads(json.dumps(old["fields"]))
        card = fields.get("x", {}).get("card")
        if card is not None:
            now = new["fields"]["x"]["card"]["ctr"]
            moved.append(now - card["ctr"])
            card["ctr"] = now
        x = fields.get("x", {})
        if fields["method"] == "qr-reverse" and "payment" in x:
            # added since: the server-signed proof shown, the very one of this payment
            proof = codes.parse_proof(base64.b64decode(new["fields"]["x"]["proof"]))
            assert (proof.order, proof.amount_fen, proof.account_id, proof.payment) == (
                x["order"],
                fields["amt"],
                fields["acct"],
                x["payment"],
            )
            x["proof"] = new["fields"]["x"]["proof"]
            proofs += 1
        fields["prev"] = prev
        body, sig = protocol.seal(key, fields)
        digest = protocol.record_hash(body)
        expected.append(
            {
                "seq": old["seq"],
                "fields": fields,
                "body": body.decode(),
                "sig": base64.b64encode(sig).decode(),
                "hash": digest,
                "prev": prev,
            }
        )
        prev = digest
    assert got == expected and proofs == 1
    # records 1-6 are the card's: one more write for each right password checked (3 and 6)
    assert moved == [0, 0, 1, 1, 1, 2]
    assert world.server.pushed == STORED["pos"]["pushed_online"]
    assert world.journal.verify() == len(STORED["pos"]["records"])
