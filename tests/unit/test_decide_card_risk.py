"""What a card holder (or whoever holds the card) can do with it at a POS (issue 10, items 12,
15 and 19; docs/security.md): guess the consumption password with the card pulled away at the
right moment, put the card back to an old image, or spend the per-card offline limit at
every offline till.  In-process: a simulated MIFARE card on the in-process reader, the
journal and cache in SQLite memory, the server behind a fake transport (tests/unit/fakes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.card import layout
from sync.card.app import CampusCard
from sync.card.layout import Counters
from tests.unit.fakes import CARD_ACCT, PIN, POLICY, World, card_row, issued_card

WRONG = "000000"
MODES = ("before", "partial", "after")


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path / "till")


def counters(w: World) -> Counters:
    uid = w.card.uid
    a = Counters.decode(bytes(w.card.blocks[16]), w.card_keys, uid)
    b = Counters.decode(bytes(w.card.blocks[17]), w.card_keys, uid)
    return layout.choose_slot(a, b)[1]


def sales(w: World) -> list[int]:
    return [r.amt for r in w.records() if r.kind == "sale"]


def apdus_of(tmp_path: Path, amount: int, pin: str | None, before: tuple[int, ...] = ()) -> int:
    """How many APDUs a tap of ``amount`` with ``pin`` exchanges with the card, offline, after
    sales of ``before`` (on a world of its own)."""
    w = World(tmp_path / f"probe-{amount}-{pin}-{len(before)}")
    w.offline()
    for sale in before:
        assert w.tap(sale).approved
    start = w.card.apdus
    w.tap(amount, pin)
    return w.card.apdus - start


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every consumption-password check a POS made against a card, and its result."""
    seen: list[bool] = []
    real = CampusCard.check_pin

    def spy(self: CampusCard, view: object, pin: str) -> bool:
        ok = real(self, view, pin)  # type: ignore[arg-type]
        seen.append(ok)
        return ok

    monkeypatch.setattr(CampusCard, "check_pin", spy)
    return seen


# -- item 15: the wrong-try counter and tearing --------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_a_card_pulled_away_at_any_moment_never_gets_a_free_guess(
    tmp_path: Path, mode: str, checks: list[bool]
) -> None:
    """Every wrong password the POS checked is on the card, whenever the card left: the try
    is written before the check (as EMV PIN try counters are), so pulling the card at the
    write after a wrong answer no longer hides the guess.  A card that leaves while its count
    is written keeps the try without its password being checked (the safe side)."""
    steps = apdus_of(tmp_path, 1500, WRONG, (2000,))
    for n in range(steps + 1):
        w = World(tmp_path / f"{mode}-{n}")
        w.offline()
        assert w.tap(2000).approved
        checks.clear()
        w.card.tear_after(n, mode)
        out = w.tap(1500, WRONG)
        w.card.tear_after(None)
        wrong_checks = checks.count(False)
        # checked means counted (a try counted and never checked is the safe side)
        assert wrong_checks <= counters(w).tries <= 1, (n, mode, out)
        assert sales(w) == [2000], (n, mode)
        if out.code == "wrong_pin":
            assert wrong_checks == 1 and out.tries_left == 2
        else:
            assert out.code == "card_gone", out


def test_an_attacker_cutting_the_write_learns_nothing(
    tmp_path: Path, w: World, checks: list[bool]
) -> None:
    """The attack of item 15: key a guess and cut the card off at the POS's first write (a
    relay that reads the plain counter block and drops it when the tries went up).  The
    password is now checked only after its try is on the card: a cut write is a guess never
    checked; a guess checked is a try counted, and after ``pin_max_tries`` the card locks."""
    w.offline()
    assert w.tap(2000).approved
    write = apdus_of(tmp_path, 1500, WRONG, (2000,)) - 1  # the reads, then the one write
    checks.clear()
    for guess in ("111111", "222222", "333333", "444444", "555555"):
        w.card.tear_after(write, "before")  # the write never lands
        assert w.tap(1500, guess).code == "card_gone"
        w.card.tear_after(None)
    assert checks == [] and counters(w).tries == 0
    for guess in ("111111", "222222", "333333", "444444"):
        w.tap(1500, guess)
    assert checks == [False, False, False] and counters(w).tries == 3
    assert w.tap(1500, PIN).code == "pin_locked"


@pytest.mark.parametrize("mode", MODES)
def test_a_right_password_is_never_lost_to_tearing_and_no_money_is_lost(
    tmp_path: Path, mode: str
) -> None:
    """The right password over the limit, the card pulled at every step: the sale is either
    approved (journaled, counters written, tries back to 0) or declined with nothing charged,
    and the next tap at the same POS finds the card as it should be."""
    steps = apdus_of(tmp_path, 1500, PIN, (2000,))
    for n in range(steps + 1):
        w = World(tmp_path / f"{mode}-{n}")
        w.offline()
        assert w.tap(2000).approved
        w.card.tear_after(n, mode)
        out = w.tap(1500, PIN)
        w.card.tear_after(None)
        if out.approved:
            assert sales(w) == [2000, 1500]
            c = counters(w)
            assert (c.taps, c.tries, c.spent_fen, c.offline_fen) == (2, 0, 1500, 3500)
            continue
        assert out.code == "card_gone", (n, mode, out)
        assert sales(w) == [2000], (n, mode)  # nothing charged
        assert counters(w).tries <= 1 and counters(w).taps in (1, 2)
        # the holder taps again: a small sale needs no password, and the card is put back
        assert w.tap(100).approved
        c = counters(w)
        assert (c.taps, c.tries, c.offline_fen) == (2, 0, 2100), (n, mode, c)
        assert sales(w) == [2000, 100]


def test_a_right_password_and_a_declined_sale_take_the_try_back(w: World) -> None:
    w.offline()
    assert w.tap(2000).approved
    w.cache.apply(
        w.cache_page(accounts=[{**w.account_row(CARD_ACCT), "balance_fen": 2500, "version": 2}])
    )
    out = w.tap(1500, PIN)  # R6 asks for the password; the balance left is 500
    assert out.code == "insufficient"
    assert counters(w).tries == 0 and counters(w).taps == 1


# -- item 12 at the POS: the account's tries and the card's status ------------------------------
def test_a_card_put_back_to_fewer_tries_stays_locked_at_the_till_that_saw_them(w: World) -> None:
    """The wrong tries are journaled with the count the card showed; an image of the card
    from before them does not start the count again here."""
    w.offline()
    image = [bytes(b) for b in w.card.blocks]
    for left in (2, 1, 0):
        assert w.tap(4000, WRONG).tries_left == left
    for n, block in enumerate(image):
        w.card.blocks[n][:] = block  # the card restored from its image
    assert counters(w).tries == 0
    assert w.tap(4000, PIN).code == "pin_locked"


def test_a_card_put_back_to_fewer_tries_stays_locked_at_every_till(w: World) -> None:
    """Another till knows the tries from the server (the account snapshot of the feed)."""
    w.offline()
    w.cache.apply(
        w.cache_page(accounts=[{**w.account_row(CARD_ACCT), "pin_tries": 3, "version": 2}])
    )
    assert counters(w).tries == 0
    out = w.tap(4000, PIN)
    assert out.code == "pin_locked"
    asked = w.tap(4000)
    assert asked.code == "pin_locked"
    # two tries on the account: one left, whatever the card says
    w.cache.apply(
        w.cache_page(accounts=[{**w.account_row(CARD_ACCT), "pin_tries": 2, "version": 3}])
    )
    assert w.tap(4000).tries_left == 1
    out = w.tap(4000, WRONG)
    assert (out.code, out.tries_left) == ("wrong_pin", 0) and counters(w).tries == 3


def test_a_blocked_card_is_refused(w: World) -> None:
    w.offline()
    w.cache.apply(w.cache_page(cards=[card_row(status="blocked")]))
    out = w.tap(100)
    assert (out.approved, out.detail) == (False, "blocked") and "service desk" in out.reason


# -- item 19: the offline limit per card, across tills --------------------------------------------
def test_the_offline_limit_per_card_holds_across_tills(tmp_path: Path, w: World) -> None:
    """Two offline tills, one card: together they allow what one card may spend offline
    (``offline_max_card_fen``, carried on the card), not that much each."""
    other = World(tmp_path / "other")
    other.card = w.card
    w.offline()
    other.offline()
    for _ in range(3):
        assert w.tap(2900, PIN).approved
    out = other.tap(2900, PIN)
    assert (out.approved, out.code) == (False, "risk_limit"), out
    assert counters(w).offline_fen == 8700
    assert "spent ¥87.00 offline" in out.reason
    assert other.tap(1300, PIN).approved  # 8700 + 1300 = the limit
    assert counters(w).offline_fen == 10_000
    assert other.tap(1, PIN).code == "risk_limit" and w.tap(1, PIN).code == "risk_limit"
    # an online approval starts it again
    w.online()
    w.approve(CARD_ACCT, 4, 30_000, 3000, pin="ok")
    assert w.tap(100, PIN).approved and counters(w).offline_fen == 0
    assert other.tap(2900, PIN).approved and counters(w).offline_fen == 2900
    assert sales(w) + sales(other) == [2900, 2900, 2900, 100, 1300, 2900]


def test_the_card_can_hold_at_most_its_counter_record_limit(tmp_path: Path) -> None:
    """A policy above what the card's counter can hold is the card's limit (¥655.35)."""
    policy = {**POLICY, "offline_max_card_fen": 10**9, "offline_max_card_day_fen": 10**9}
    policy["offline_max_purchase_fen"] = 10**9
    w = World(tmp_path, policy=policy)
    w.offline()
    big = {"limit_fen": 10**7, "balance_fen": 10**6, "version": 2}
    w.cache.apply(w.cache_page(accounts=[{**w.account_row(CARD_ACCT), **big}]))
    assert w.tap(layout.MAX_CARD_OFFLINE_FEN).approved
    assert w.tap(1).code == "risk_limit"


@pytest.mark.parametrize("mode", MODES)
def test_the_offline_amount_is_tear_safe(tmp_path: Path, w: World, mode: str) -> None:
    """Pulled away during the counter write, the card keeps the old amount or the new one
    with its sale: never a sale without its amount, nor an amount without a sale."""
    w.offline()
    assert w.tap(1000).approved
    w.card.tear_after(apdus_of(tmp_path, 700, None, (1000,)) - 1, mode)  # the sale's write
    out = w.tap(700)
    w.card.tear_after(None)
    assert out.code == "card_gone"
    c = counters(w)
    assert (c.offline_fen, c.taps) in ((1000, 1), (1700, 2))
    assert w.tap(200).approved
    assert (counters(w).offline_fen, counters(w).taps) == (1200, 2)  # the torn sale put back


# -- cards of the earlier counter format ---------------------------------------------------------
def test_a_card_of_counter_record_1_pays_and_is_rewritten_as_record_2(tmp_path: Path) -> None:
    old = Counters(0x1234, "2026-05-29", 1000, 7, 1, 0, version=1)
    w = World(tmp_path)
    w.card = issued_card(w.card_keys, counters=old)
    assert counters(w) == Counters(1, "2026-05-29", 1000, 7, 1, 0, version=1)
    w.offline()
    assert w.tap(500).approved
    c = counters(w)
    assert (c.version, c.taps, c.tries, c.spent_fen, c.offline_fen) == (2, 8, 1, 1500, 500)
    # the other slot still holds the record 1 the card came with; the record 2 one wins
    slots = [Counters.decode(bytes(w.card.blocks[b]), w.card_keys, w.card.uid) for b in (16, 17)]
    assert sorted(s.version for s in slots if s is not None) == [1, 2]
    assert w.tap(500).approved
    slots = [Counters.decode(bytes(w.card.blocks[b]), w.card_keys, w.card.uid) for b in (16, 17)]
    assert [s.version for s in slots if s is not None] == [2, 2]
    assert counters(w).taps == 9


def test_a_record_1_card_torn_at_its_first_write_keeps_its_counters(tmp_path: Path) -> None:
    old = Counters(0xFFFF, "2026-05-29", 1000, 7, 0, 0, version=1)
    w = World(tmp_path)
    w.card = issued_card(w.card_keys, counters=old)
    w.offline()
    w.card.tear_after(apdus_of(tmp_path, 500, None) - 1, "partial")  # its one write
    assert w.tap(500).code == "card_gone"
    w.card.tear_after(None)
    c = counters(w)
    assert (c.version, c.taps, c.spent_fen) == (1, 7, 1000)
    assert w.tap(500).approved and counters(w).taps == 8
