"""The server acts on what it knows of a card (issue 10, item 12; docs/security.md): the
account's R5 wrong tries count at a card sale with card facts and go onto a new card, and a
card whose counters go back (a copy, or one restored from an old image) is an alarm and, by
policy, blocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync import protocol, records
from sync.db import Database, Migrations
from sync.errors import ServerRefused
from sync.server.schema import MIGRATIONS
from tests import dbs
from tests.handterm import HandTerminal, alarms_of, fresh_account, ledger_ok
from tests.helpers import ServerProc, id_card


@pytest.fixture
def term(module_server: ServerProc) -> Iterator[HandTerminal]:
    t = HandTerminal.enroll(module_server, "card-risk")
    yield t
    t.close()


def card_record(
    term: HandTerminal,
    acct: dict[str, Any],
    taps: int,
    *,
    amt: int = 100,
    tries: int = 0,
    ep: int = 0,
    pin_fail: bool = False,
) -> dict[str, str]:
    """The next record of ``term`` as a POS journals a card sale (or a wrong consumption
    password) with the counters it left on the card."""
    card = {
        "uid": acct["uid"],
        "gen": acct["generation"],
        "ctr": taps + tries,
        "taps": taps,
        "tries": tries,
        "ep": ep,
    }
    return term.record(
        acct["id"],
        0 if pin_fail else amt,
        cred=f"card:{acct['card_no']}:{acct['uid']}",
        x={"card": card},
        kind="pin_fail" if pin_fail else "sale",
        pin="fail" if pin_fail else "none",
    )


def push_new(term: HandTerminal, n: int) -> dict[str, Any]:
    """Push the last ``n`` records of ``term``."""
    last = len(term.journal)
    return term.push(term.wire(range(last - n + 1, last + 1)))


def facts(acct: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {
        "generation": acct["generation"],
        "day": None,
        "spent_fen": 0,
        "taps": 0,
        "tries": 0,
        "epoch": 0,
        **kw,
    }


def card_status(server: ServerProc, acct: dict[str, Any]) -> str:
    (card,) = [
        c for c in server.account(acct["number"])["cards"] if c["card_no"] == acct["card_no"]
    ]
    return str(card["status"])


# -- R5: the account's wrong tries ------------------------------------------------------------
def test_r5_a_card_checked_right_is_refused_while_the_account_is_locked(
    module_server: ServerProc, term: HandTerminal
) -> None:
    """The card says no wrong tries (restored from an image taken before them, or a card the
    tries never reached); the account has them: the lockout holds."""
    acct = fresh_account(module_server, topup_fen=20_000)
    for tries in (1, 2, 3):
        card_record(term, acct, 0, tries=tries, pin_fail=True)
    push_new(term, 3)
    assert module_server.account(acct["number"])["pin_locked"]
    seq = len(term.journal) + 1
    over = term.authorize(seq, acct["card_no"], 6000, card=facts(acct, pin="ok"))
    assert (over["approved"], over["code"]) == (False, "pin_locked"), over
    asked = term.authorize(seq, acct["card_no"], 6000, card=facts(acct))
    assert (asked["approved"], asked["code"]) == (False, "pin_locked"), asked
    # under the limit no password is needed, so the lockout does not stop the sale (R5)
    assert term.authorize(seq, acct["card_no"], 1000, card=facts(acct))["approved"]
    # the desk's reset starts a new epoch: the card's count of the old one no longer matters
    module_server.admin().call("POST", f"/v1/admin/accounts/{acct['number']}/pin-reset")
    ok = term.authorize(seq, acct["card_no"], 6000, card=facts(acct, pin="ok", epoch=0))
    assert ok["approved"] and ok["pin"] == "ok", ok


def test_r5_tries_left_count_the_accounts_tries(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=20_000)
    card_record(term, acct, 0, tries=2, pin_fail=True)
    push_new(term, 1)
    asked = term.authorize(len(term.journal) + 1, acct["card_no"], 6000, card=facts(acct))
    assert (asked["code"], asked["tries_left"]) == ("needs_pin", 1), asked


@pytest.mark.parametrize("how", ["desk", "kiosk"])
def test_r5_a_new_card_starts_with_the_accounts_tries(
    module_server: ServerProc, term: HandTerminal, how: str
) -> None:
    """A reissue (R11) does not start the lockout again: the new card's counters carry the
    account's wrong tries and the epoch they count in."""
    acct = fresh_account(module_server, topup_fen=20_000)
    card_record(term, acct, 0, tries=2, pin_fail=True)
    push_new(term, 1)
    if how == "desk":
        new = module_server.admin().call(
            "POST", f"/v1/admin/accounts/{acct['number']}/cards", {"uid": "0BADC0DE"}
        )
    else:
        kiosk = HandTerminal.enroll(module_server, "card-risk-kiosk", role="kiosk")
        body = {
            "order_id": f"order-{acct['number']}",
            "uid": "0BADC0DF",
            "number": acct["number"],
            "id_card": id_card(int(acct["number"][1:])),  # fresh_account's U<n>
        }
        new = kiosk.client.request("POST", "/v1/kiosk/reissue", body=body)["card"]
        kiosk.close()
    assert new["counters"]["pin_tries"] == 2 and new["counters"]["pin_epoch"] == 0, new


# -- counters that go back ----------------------------------------------------------------------
def test_two_records_leaving_the_same_counters_raise_an_alarm_and_block_the_card(
    module_server: ServerProc, term: HandTerminal
) -> None:
    """A card restored from an image (or copied) pays at two offline tills with the same
    counters: the second record to sync is the alarm, the card is blocked, and both sales
    stand (the journal is the charge)."""
    acct = fresh_account(module_server, topup_fen=20_000)
    other = HandTerminal.enroll(module_server, "card-risk-2")
    card_record(term, acct, 1, amt=700)
    card_record(term, acct, 2, amt=700)
    push_new(term, 2)
    assert push_new(term, 2)["duplicates"] == 2  # the same records again: nothing to say
    assert card_status(module_server, acct) == "active"
    card_record(other, acct, 2, amt=900)  # the image of after the first sale, spent again
    ack = push_new(other, 1)
    assert [a["kind"] for a in ack["alarms"]] == ["card_rollback"], ack
    assert "went back" in ack["alarms"][0]["detail"]
    assert [a["kind"] for a in alarms_of(module_server, other.terminal_id)] == ["card_rollback"]
    assert card_status(module_server, acct) == "blocked"
    shown = module_server.account(acct["number"])
    assert shown["balance_fen"] == 20_000 - 700 - 700 - 900
    assert "card_blocked" in [f["kind"] for f in shown["flow"]]
    # refused online, and every terminal hears of it through the feed
    seq = len(term.journal) + 1
    out = term.authorize(seq, acct["card_no"], 100, card=facts(acct, taps=3))
    assert not out["approved"] and "blocked" in out["reason"], out
    cards = {c["card_no"]: c for c in term.feed(0)["cards"]}
    assert cards[acct["card_no"]]["status"] == "blocked"
    kiosk = HandTerminal.enroll(module_server, "card-risk-kiosk-2", role="kiosk")
    proof = {k: acct[k] for k in ("card_no", "uid", "generation", "tag")}
    with pytest.raises(ServerRefused) as refused:
        kiosk.client.request("POST", "/v1/kiosk/card", body={"card": proof})
    assert refused.value.code == "card_blocked"
    kiosk.close()
    # the desk reissues: the new card works
    new = module_server.admin().call("POST", f"/v1/admin/accounts/{acct['number']}/cards", {})
    assert term.authorize(seq, new["card_no"], 100, card=facts(new))["approved"]
    ledger_ok(module_server)
    other.close()


def test_late_records_of_a_card_are_no_alarm(module_server: ServerProc, term: HandTerminal) -> None:
    """Records of one card reach the server out of order (an offline till syncs late): a
    lower tap count than one seen already is fine while no two records share it."""
    acct = fresh_account(module_server, topup_fen=20_000)
    late = HandTerminal.enroll(module_server, "card-risk-late")
    card_record(late, acct, 1)  # offline, synced later
    card_record(term, acct, 2)
    card_record(term, acct, 3, tries=1, pin_fail=True)
    card_record(term, acct, 3, tries=2, pin_fail=True)
    card_record(term, acct, 4)
    assert push_new(term, 4)["alarms"] == []
    assert push_new(late, 1)["alarms"] == []
    # a desk reset starts the tries again in a new epoch: the same count is a new state
    card_record(term, acct, 4, tries=1, ep=1, pin_fail=True)
    assert push_new(term, 1)["alarms"] == []
    assert card_status(module_server, acct) == "active"
    late.close()


def test_a_consumption_password_changed_at_a_kiosk_starts_a_new_count(
    module_server: ServerProc, term: HandTerminal
) -> None:
    """R5: a new consumption password (kiosk, with the card) clears the wrong tries in a new
    epoch, as the desk's reset does: a wrong try after it leaves a count the card never
    showed, so it is no alarm (the same epoch would repeat an earlier try's counters and block
    the holder's card as a copy)."""
    acct = fresh_account(module_server, topup_fen=20_000)
    card_record(term, acct, 3, tries=1, pin_fail=True)
    assert push_new(term, 1)["alarms"] == []
    kiosk = HandTerminal.enroll(module_server, "card-risk-kiosk-pw", role="kiosk")
    proof = {k: acct[k] for k in ("card_no", "uid", "generation", "tag")}
    body = {"card": proof, "query_password": acct["password"], "new_password": "246810"}
    out = kiosk.client.request("POST", "/v1/kiosk/card/consume-password", body=body)
    kiosk.close()
    (snap,) = [a for a in term.feed(0)["accounts"] if a["id"] == acct["id"]]
    assert snap["pin_tries"] == 0 and out["write"]["pin_tries"] == 0
    epoch = snap["pin_epoch"] & 0xFF  # what a POS writes on the card with its next count
    card_record(term, acct, 3, tries=1, ep=epoch, pin_fail=True)  # a wrong try, no sale since
    assert push_new(term, 1)["alarms"] == []
    assert card_status(module_server, acct) == "active"


def test_a_card_showing_fewer_sales_than_it_made_is_refused_online(
    module_server: ServerProc, term: HandTerminal
) -> None:
    acct = fresh_account(module_server, topup_fen=20_000)
    for taps in (1, 2, 3):
        card_record(term, acct, taps)
    push_new(term, 3)
    seq = len(term.journal) + 1
    assert term.authorize(seq, acct["card_no"], 100, card=facts(acct, taps=3))["approved"]
    back = term.authorize(seq, acct["card_no"], 100, card=facts(acct, taps=1))
    assert not back["approved"] and "blocked" in back["reason"], back
    assert [a["kind"] for a in alarms_of(module_server, term.terminal_id)][-1:] == ["card_rollback"]
    assert card_status(module_server, acct) == "blocked"


def test_the_policy_can_keep_such_a_card_working(
    module_server: ServerProc, term: HandTerminal
) -> None:
    """``auto_block_card_rollback`` off: the alarm only."""
    admin = module_server.admin()
    admin.call("PUT", "/v1/admin/policy", {"values": {"auto_block_card_rollback": False}})
    try:
        acct = fresh_account(module_server, topup_fen=20_000)
        card_record(term, acct, 1)
        card_record(term, acct, 1)
        ack = push_new(term, 2)
        assert [a["kind"] for a in ack["alarms"]] == ["card_rollback"]
        assert card_status(module_server, acct) == "active"
        seq = len(term.journal) + 1
        out = term.authorize(seq, acct["card_no"], 100, card=facts(acct, taps=0))
        assert out["approved"], out
    finally:
        admin.call("PUT", "/v1/admin/policy", {"values": {"auto_block_card_rollback": True}})


# -- the upgrade --------------------------------------------------------------------------------
def test_records_synced_before_the_upgrade_are_marked(tmp_path: Path) -> None:
    """Migration 0012 marks the card records stored before 0011, so a card put back to a state
    of before the upgrade is found too."""
    url = dbs.fresh_url()
    db = dbs.opened(url, Database(url or tmp_path / "ykt.db"))
    ids = [step for step, _fn in MIGRATIONS.steps]
    before = Migrations(steps=MIGRATIONS.steps[: ids.index("0011-card-marks")])
    db.migrate(before)
    with db.tx() as tx:
        tx.execute(
            "INSERT INTO accounts (number, name, type, id_card, limit_fen, query_pw, "
            "consume_pw, created_ms, version) VALUES ('M1', 'm', 'student', 'x', 5000, "
            "'q', 'c', 0, 1)"
        )
        acct = int(tx.scalar("SELECT id FROM accounts WHERE number = 'M1'"))
        tx.execute(
            "INSERT INTO cards (card_no, account_id, uid, generation, issued_ms, version) "
            "VALUES ('10000001', ?, '04A1B2C3', 1, 0, 1)",
            (acct,),
        )
        prev = protocol.genesis_hash("T1")
        made = [
            records.card_sale(**_sale(acct, taps=1)),
            records.card_pin_fail(**_fail(acct, taps=1, tries=1)),
            records.card_sale(**_sale(acct, taps=2)),
            records.card_sale(**_sale(acct, taps=2)),  # the same counters twice: kept once
            records.offline_sale(
                term="T1", seq=5, prev="0" * 64, ts=1, acct=acct, amt=5, cred="card:test", lim=0
            ),
        ]
        for seq, entry in enumerate(made, start=1):
            rec = (
                entry
                if isinstance(entry, records.JournalRecord)
                else entry.chained("T1", seq, prev)
            )
            body = rec.body()
            prev = protocol.record_hash(body)
            tx.execute(
                "INSERT INTO records (terminal_id, seq, hash, body, sig, received_ms) "
                "VALUES ('T1', ?, ?, ?, '', 0)",
                (seq, prev, body.decode()),
            )
    applied = db.migrate(MIGRATIONS)  # and the steps added after them
    assert applied[:2] == ["0011-card-marks", "0012-card-marks-of-earlier-records"]
    marks = db.all("SELECT card_no, taps, mark, terminal_id, seq FROM card_marks ORDER BY seq")
    assert [tuple(m) for m in marks] == [
        ("10000001", 1, "sale", "T1", 1),
        ("10000001", 1, "pin:0:1", "T1", 2),
        ("10000001", 2, "sale", "T1", 3),
    ]
    assert db.scalar("SELECT taps_seen FROM cards WHERE card_no = '10000001'") == 2


def _card(taps: int, tries: int = 0) -> records.CardX:
    return records.CardX(uid="04A1B2C3", gen=1, ctr=taps + tries, taps=taps, tries=tries, ep=0)


def _sale(acct: int, taps: int) -> dict[str, Any]:
    return {
        "ts": 1,
        "card_no": "10000001",
        "card": _card(taps),
        "acct": acct,
        "amt": 100,
        "off": True,
        "pin": "none",
        "spent": 0,
        "lim": 5000,
        "bal": 0,
        "op": "",
        "auth": None,
    }


def _fail(acct: int, taps: int, tries: int) -> dict[str, Any]:
    return {
        "ts": 1,
        "card_no": "10000001",
        "card": _card(taps, tries),
        "acct": acct,
        "off": True,
        "spent": 0,
        "lim": 5000,
        "op": "",
    }
