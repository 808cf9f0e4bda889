"""Issue 10 items 7 and 20: every integer on the wire has the bounds of the rest of the system
(sync/bounds.py), and the API's types are strict where money is.

- A journal record outside the bounds (an absurd amount, an account id, a card counter or a
  phone-code number past 64 bits) is refused at ingest with an alarm, moves no money, and does
  not block the terminal's later records: the chain stays verifiable (docs/protocol.md).
- ``true`` is not an integer and ``1`` is not a boolean on any endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync import protocol
from sync.money import MAX_AMOUNT_FEN
from tests.handterm import HandTerminal, error_of
from tests.live import Live, open_live, proof


@pytest.fixture(scope="module")
def live_m(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[Live]:
    s = open_live(Path(tmp_path_factory.mktemp("bounds")))
    s.admin(
        "POST", "/v1/admin/electricity/buildings", {"code": "B9", "name": "九号", "rooms": ["101"]}
    )
    yield s
    s.stop()


_n = iter(range(300, 999))


def account(live: Live, topup_fen: int = 10_000) -> dict[str, Any]:
    n = next(_n)
    number = f"WB{n}"
    card = live.add_account(number, n, topup_fen=topup_fen)
    return {**card, "id": card["account_id"]}


def balance(live: Live, number: str) -> int:
    return int(live.admin("GET", f"/v1/admin/accounts/{number}")["balance_fen"])


def signed(term: HandTerminal, **fields: Any) -> dict[str, str]:
    """The terminal's next record with ``fields`` changed, signed with its key but not checked
    (what a faulty or compromised terminal can send), and taken into its chain."""
    rec = {**term.fields(1, 100), **fields}
    body = protocol.canonical(rec)
    wire = protocol.wire_record(body, term.key.sign(body))
    term.journal.append((term.next_record(1, 100), wire))  # the chain goes on after it
    return wire


OUT_OF_BOUNDS: list[tuple[str, Any]] = [
    ("amount 2^62", lambda t, a: signed(t, acct=a["id"], amt=2**62)),
    (
        "amount over the per-operation maximum",
        lambda t, a: signed(t, acct=a["id"], amt=MAX_AMOUNT_FEN + 1),
    ),
    ("amount over 64 bits", lambda t, a: signed(t, acct=a["id"], amt=2**63)),
    ("account over 64 bits", lambda t, a: signed(t, acct=2**70)),
    ("balance shown over 64 bits", lambda t, a: signed(t, acct=a["id"], bal=2**64)),
    ("negative time", lambda t, a: signed(t, acct=a["id"], ts=-1)),
    ("time after the year 9999", lambda t, a: signed(t, acct=a["id"], ts=2**62)),
    (
        "card tries over 64 bits",
        lambda t, a: signed(
            t,
            acct=a["id"],
            kind="pin_fail",
            amt=0,
            pin="fail",
            x={"card": {"uid": "0A0B0C0D", "gen": 1, "ctr": 1, "taps": 1, "tries": 2**64, "ep": 0}},
        ),
    ),
    (
        "phone-code serial over 64 bits",
        lambda t, a: signed(
            t, acct=a["id"], method="qr-forward", cred=f"qr:{2**70}:1", x={"code": "x"}
        ),
    ),
    (
        "phone-code counter in other digits",
        lambda t, a: signed(t, acct=a["id"], method="qr-forward", cred="qr:1:²", x={"code": "x"}),
    ),
    (
        "reverse-scan order over 64 bits",
        lambda t, a: signed(
            t, acct=a["id"], method="qr-reverse", off=True, x={"order": 2**70, "payment": 1}
        ),
    ),
]


@pytest.mark.parametrize(("why", "make"), OUT_OF_BOUNDS, ids=[c[0] for c in OUT_OF_BOUNDS])
def test_a_record_out_of_bounds_is_refused_and_does_not_block_the_terminal(
    live_m: Live, why: str, make: Any
) -> None:
    acct = account(live_m)
    term = HandTerminal.enroll(live_m, "bounds")
    first = term.record(acct["id"], 100)
    bad = make(term, acct)
    after = term.record(acct["id"], 200)
    out = term.push([first, bad, after])
    assert (out["ack"], out["applied"], out["refused"]) == (3, 2, 1), (why, out)
    kinds = [a["kind"] for a in out["alarms"]]
    assert "record_refused" in kinds, (why, out)
    # the refused record moved no money; the records around it did
    assert balance(live_m, acct["number"]) == 10_000 - 300
    # pushing it again is a harmless duplicate, and the terminal's next records still flow
    again = term.push([bad, term.record(acct["id"], 50)])
    assert (again["ack"], again["duplicates"], again["applied"]) == (4, 1, 1), again
    assert balance(live_m, acct["number"]) == 10_000 - 350
    assert live_m.admin("GET", "/v1/admin/ledger/check")["ok"]
    raised = live_m.admin("GET", "/v1/admin/alarms")["alarms"]
    assert any(
        a["terminal_id"] == term.terminal_id
        and a["kind"] == "record_refused"
        and "record 2" in a["detail"]
        for a in raised
    )
    term.close()


def test_a_refused_record_held_behind_a_gap_does_not_block_either(live_m: Live) -> None:
    acct = account(live_m)
    term = HandTerminal.enroll(live_m, "bounds-gap")
    first = term.record(acct["id"], 100)
    bad = signed(term, acct=acct["id"], amt=2**62)
    third = term.record(acct["id"], 300)
    held = term.push([bad, third])  # record 1 has not arrived: both wait behind the gap
    assert (held["ack"], held["pending"]) == (0, 2), held
    out = term.push([first])
    assert (out["ack"], out["applied"], out["refused"]) == (3, 2, 1), out
    assert balance(live_m, acct["number"]) == 10_000 - 400
    assert live_m.admin("GET", "/v1/admin/ledger/check")["ok"]
    term.close()


def test_a_record_whose_place_in_the_chain_cannot_be_read_is_refused_as_a_batch(
    live_m: Live,
) -> None:
    """A sequence number past the bounds cannot be placed in the chain: the batch gets 422
    and nothing of it is applied (the terminal's own records never look like this)."""
    acct = account(live_m)
    term = HandTerminal.enroll(live_m, "bounds-seq")
    good = term.record(acct["id"], 100)
    rec = {**term.fields(1, 100), "seq": 2**53}
    body = protocol.canonical(rec)
    resp = term.push_raw(
        protocol.canonical({"records": [good, protocol.wire_record(body, term.key.sign(body))]})
    )
    assert resp.status_code == 422, resp.text
    assert balance(live_m, acct["number"]) == 10_000
    term.close()


# -- strict types (item 20) ---------------------------------------------------------------------
def _pos_body(world: dict[str, Any], **card: Any) -> dict[str, Any]:
    c = world["card"]
    world["seq"] += 1
    facts = {"generation": c["generation"], "spent_fen": 0, "taps": 0, **card}
    return {
        "seq": world["seq"],
        "card_no": c["card_no"],
        "uid": c["uid"],
        "amount_fen": 1,
        "method": "card",
        "card": facts,
    }


#: (who calls, method, path, body maker): one field of the body is of the wrong JSON type
LAX: list[tuple[str, str, str, Any]] = [
    ("pos", "POST", "/v1/pos/authorize", lambda w: _pos_body(w, spent_fen=True)),
    ("pos", "POST", "/v1/pos/authorize", lambda w: _pos_body(w, taps=True)),
    ("pos", "POST", "/v1/pos/authorize", lambda w: _pos_body(w, generation=True)),
    ("pos", "POST", "/v1/pos/authorize", lambda w: _pos_body(w, tries=False)),
    ("pos", "POST", "/v1/pos/authorize", lambda w: _pos_body(w, epoch=True)),
    ("pos", "POST", "/v1/pos/authorize", lambda w: {**_pos_body(w), "seq": True}),
    ("pos", "POST", "/v1/pos/authorize", lambda w: {**_pos_body(w), "amount_fen": True}),
    ("pos", "POST", "/v1/pos/authorize", lambda w: _pos_body(w, spent_fen=2**40)),
    (
        "holder",
        "POST",
        "/v1/app/electricity",
        lambda w: {"building": "B9", "room": "101", "amount_fen": True},
    ),
    (
        "holder",
        "POST",
        "/v1/app/electricity",
        lambda w: {"building": "B9", "room": "101", "amount_fen": "100"},
    ),
    (
        "holder",
        "POST",
        "/v1/app/electricity",
        lambda w: {"building": "B9", "room": "101", "amount_fen": 100.0},
    ),
    (
        "holder",
        "POST",
        "/v1/app/topups",
        lambda w: {"amount_fen": True, "channel": "wechat", "password": w["password"]},
    ),
    (
        "kiosk",
        "POST",
        "/v1/kiosk/card/limit",
        lambda w: {"card": w["proof"], "query_password": w["password"], "limit_fen": True},
    ),
    (
        "kiosk",
        "POST",
        "/v1/kiosk/card",
        lambda w: {"card": {**w["proof"], "generation": True}},
    ),
    (
        "admin",
        "POST",
        "/v1/admin/accounts/{number}/topups",
        lambda w: {"amount_fen": True, "channel": "cash"},
    ),
    ("admin", "POST", "/v1/admin/accounts/{number}/reissue", lambda w: {"charge_fee": 0}),
    ("admin", "POST", "/v1/admin/accounts/{number}/reissue", lambda w: {"charge_fee": "false"}),
    (
        "admin",
        "POST",
        "/v1/admin/accounts",
        lambda w: {
            "number": "LAX1",
            "name": "x",
            "type": "student",
            "id_card": w["id_card"],
            "limit_fen": True,
        },
    ),
    (
        "admin",
        "POST",
        "/v1/admin/refunds",
        lambda w: {"transfer_id": "x", "amount_fen": True, "reason": "r"},
    ),
]


@pytest.fixture(scope="module")
def world(live_m: Live) -> Iterator[dict[str, Any]]:
    card = account(live_m)
    kiosk = live_m.terminal("kiosk", "lax-kiosk")
    pos = live_m.terminal("pos", "lax-pos")
    yield {
        "card": card,
        "number": card["number"],
        "password": card["password"],
        "id_card": card["id_card"],
        "proof": proof(card),
        "session": live_m.login(card["number"], card["password"]),
        "kiosk": kiosk,
        "pos": pos,
        "seq": 1000,
    }


@pytest.mark.parametrize(
    ("who", "method", "path", "make"),
    LAX,
    ids=[f"{c[2]}-{i}" for i, c in enumerate(LAX)],
)
def test_a_value_of_the_wrong_json_type_is_refused(
    live_m: Live, world: dict[str, Any], who: str, method: str, path: str, make: Any
) -> None:
    before = balance(live_m, world["number"])
    body = make(world)
    path = path.replace("{number}", world["number"])
    if who in ("pos", "kiosk"):
        client = world[who]
        import requests

        raw = protocol.canonical(body)
        headers = protocol.sign_request(
            client.key, client.terminal_id, method, path, raw, live_m.ctx.now_ms()
        )
        headers["Content-Type"] = "application/json"
        resp = requests.request(method, live_m.url + path, data=raw, headers=headers, timeout=10)
    else:
        token = live_m.token if who == "admin" else world["session"]
        resp = live_m.call(method, path, body, token)
    assert resp.status_code == 422, (path, body, resp.status_code, resp.text)
    error_of(resp)
    assert balance(live_m, world["number"]) == before
