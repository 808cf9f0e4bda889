"""The card decider (edge/pos/decide.py) in-process: a simulated MIFARE card on the in-process
reader, the journal and cache in SQLite memory, the server behind a fake transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.card import layout
from sync.card.layout import Counters
from sync.records import JournalRecord
from tests.unit.fakes import CARD_ACCT, CARD_NO, CARD_UID, PIN, World, card_row, error, issued_card


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def counters(w: World) -> Counters:
    uid = w.card.uid
    a = Counters.decode(bytes(w.card.blocks[16]), w.card_keys, uid)
    b = Counters.decode(bytes(w.card.blocks[17]), w.card_keys, uid)
    return layout.choose_slot(a, b)[1]


def only_record(w: World) -> JournalRecord:
    (rec,) = w.records()
    return rec


# --- online -------------------------------------------------------------------------------------
def test_online_sale_sends_the_cards_facts_and_journals_the_hold(w: World) -> None:
    w.online()
    w.approve(CARD_ACCT, 1, 48_800, 3000)
    out = w.tap(1200)
    assert (out.approved, out.code, out.offline, out.balance_fen, out.seq) == (
        True,
        "ok",
        False,
        48_800,
        1,
    )
    _m, _p, req = w.server.requests[-1]
    assert req["card_no"] == CARD_NO and req["uid"] == CARD_UID and req["seq"] == 1
    assert req["card"] == {
        "generation": 1,
        "day": None,
        "spent_fen": 0,
        "taps": 0,
        "tries": 0,
        "epoch": 0,
        "pin": "none",
    }
    rec = only_record(w)
    assert (rec.auth, rec.bal, rec.off, rec.amt, rec.cred) == (
        "T00042:1",
        48_800,
        False,
        1200,
        f"card:{CARD_NO}:{CARD_UID}",
    )
    after = counters(w)
    assert (after.taps, after.spent_fen, after.day) == (1, 1200, w.today)
    assert rec.card_x() is not None and rec.card_x().ctr == after.seq  # type: ignore[union-attr]


def test_a_refusal_declines_and_charges_nothing(w: World) -> None:
    w.online()
    before = counters(w)
    w.server.auth.append(error(409, "seq_used", "already journaled"))
    out = w.tap(500)
    assert (out.approved, out.code, out.offline) == (False, "declined", False)
    assert "server refused the sale" in out.reason and "seq_used" in out.reason
    assert w.records() == [] and counters(w) == before
    assert w.link.online  # the server answered: it is up


@pytest.mark.parametrize(
    "failure",
    [error(503, "store_unavailable"), error(500, "internal")],
    ids=["503", "500"],
)
def test_a_server_error_decides_offline(w: World, failure: tuple[int, dict[str, object]]) -> None:
    w.online()
    w.server.auth.append(failure)
    out = w.tap(500)
    assert (out.approved, out.offline, out.balance_fen) == (True, True, 50_000 - 500)
    rec = only_record(w)
    assert rec.off and rec.auth is None and rec.bal == 49_500
    assert not w.link.online


def test_an_unknown_terminal_decides_offline(w: World) -> None:
    w.online()
    w.server.auth.append(error(401, "unknown_terminal"))
    out = w.tap(500)
    assert (out.approved, out.offline) == (True, True)
    assert not w.link.online and "unknown_terminal" in w.link.last_error


# --- the consumption password (R5, R6) ----------------------------------------------------------
def test_over_the_limit_asks_for_the_password_and_counts_wrong_ones_on_the_card(w: World) -> None:
    w.offline()
    assert w.tap(2000).approved
    out = w.tap(1500)  # 3500 > 3000 (R6)
    assert (out.code, out.tries_left) == ("needs_pin", 3)
    assert len(w.records()) == 1
    out = w.tap(1500, "000000")
    assert (out.code, out.tries_left) == ("wrong_pin", 2)
    assert counters(w).tries == 1
    fail = w.records()[-1]
    assert (fail.kind, fail.pin, fail.amt, fail.off, fail.spent) == (
        "pin_fail",
        "fail",
        0,
        True,
        2000,
    )
    out = w.tap(1500, PIN)
    assert out.approved and counters(w).tries == 0
    sale = w.records()[-1]
    assert (sale.pin, sale.spent) == ("ok", 0)
    assert counters(w).spent_fen == 1500  # R6: a right password starts the amount again


def test_the_card_locks_after_the_last_wrong_try(w: World) -> None:
    w.offline()
    for left in (2, 1, 0):
        assert w.tap(4000, "000000").tries_left == left
    assert w.tap(4000, PIN).code == "pin_locked"
    assert w.tap(100).approved  # a sale that needs no password still works (R5)
    assert counters(w).tries == 3


def test_the_desks_reset_reaches_the_card_through_the_account(w: World) -> None:
    w.offline()
    for _ in range(3):
        w.tap(4000, "000000")
    w.cache.apply(
        w.cache_page(accounts=[{**w.account_row(CARD_ACCT), "pin_epoch": 1, "version": 2}])
    )
    out = w.tap(4000, PIN)
    assert out.approved and (counters(w).tries, counters(w).epoch) == (0, 1)


# --- offline ------------------------------------------------------------------------------------
def test_offline_limits_and_balance(w: World) -> None:
    w.offline()
    out = w.tap(5001, PIN)
    assert out.code == "risk_limit" and "per purchase" in out.reason
    for _ in range(3):
        assert w.tap(2900, PIN).approved
    out = w.tap(2900, PIN)  # 4 × 2900 > 10000
    assert out.code == "risk_limit" and "per card per day" in out.reason
    assert [r.amt for r in w.records()] == [2900, 2900, 2900]
    assert w.journal.unsynced_offline_fen == 8700


def test_offline_refuses_a_blocked_account(w: World) -> None:
    w.offline()
    w.cache.apply(
        w.cache_page(accounts=[{**w.account_row(CARD_ACCT), "status": "lost", "version": 2}])
    )
    out = w.tap(100)
    assert (out.code, out.offline) == ("declined", True)
    assert w.records() == []


def test_offline_refuses_more_than_the_balance(w: World) -> None:
    w.offline()
    w.cache.apply(
        w.cache_page(accounts=[{**w.account_row(CARD_ACCT), "balance_fen": 300, "version": 2}])
    )
    out = w.tap(400)
    assert (out.code, out.balance_fen) == ("insufficient", 300)


# --- the card itself ----------------------------------------------------------------------------
def test_a_clone_with_another_uid_is_refused(w: World) -> None:
    w.offline()
    w.card = issued_card(w.card_keys, uid="04FFFFFF")  # the same identity issued for another UID
    out = w.tap(100)
    assert (out.code, out.detail) == ("declined", "clone")
    assert w.records() == []


def test_a_replaced_card_is_refused(w: World) -> None:
    w.offline()
    w.cache.apply(w.cache_page(cards=[card_row(generation=2)]))
    out = w.tap(100)
    assert (out.code, out.detail) == ("declined", "replaced")


def test_an_expired_card_is_refused(w: World) -> None:
    w.offline()
    w.cache.apply(
        w.cache_page(accounts=[{**w.account_row(CARD_ACCT), "expires": "2020-01-01", "version": 2}])
    )
    assert w.tap(100).detail == "expired"


def test_a_card_torn_away_during_its_write_is_put_back(w: World) -> None:
    w.offline()
    apdus = w.card.apdus
    assert w.tap(100).approved
    per_sale = w.card.apdus - apdus
    first = counters(w)
    w.card.tear_after(per_sale - 1, "after")  # the counter write lands, then the card is gone
    out = w.tap(100)
    assert (out.approved, out.code) == (False, "card_gone")
    assert len(w.records()) == 1 and counters(w).taps == 2  # written, but not sold
    w.card.tear_after(None)
    assert w.tap(100).approved
    assert counters(w).taps == first.taps + 1  # the torn sale's counters were put back
    assert len(w.records()) == 2
