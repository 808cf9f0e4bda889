"""The invariants of the real-process chaos run (sim/chaos/check.py): each holds on a state
where it should, and fires on a deliberately broken one (a checker that cannot fail proves
nothing)."""

from __future__ import annotations

from sim.chaos import check
from sim.chaos.check import JournalSale, SaleSeen

T = "t-1"


def sale(amount: int, outcome: check.Outcome, seq: int | None = None, **kw: object) -> SaleSeen:
    return SaleSeen(T, "card", "C1", "9001", amount, outcome, seq=seq, **kw)  # type: ignore[arg-type]


def journaled(*pairs: tuple[int, int]) -> dict[str, list[JournalSale]]:
    return {T: [JournalSale(T, seq, amt, 1, False) for seq, amt in pairs]}


def kinds(violations: list[check.Violation]) -> list[str]:
    return [v.invariant for v in violations]


def test_ledger_check_passes_only_when_ok() -> None:
    assert check.check_ledger({"ok": True, "sum_fen": 0}) == []
    bad = check.check_ledger({"ok": False, "sum_fen": 7})
    assert kinds(bad) == ["money_conserved"] and bad[0].evidence["sum_fen"] == 7


def test_approved_sales_must_be_journaled_at_their_sequence() -> None:
    seen = [sale(101, "approved", 1), sale(102, "declined"), sale(103, "in_doubt")]
    assert check.check_approved_in_journal(seen, journaled((1, 101), (2, 103))) == []
    assert check.check_approved_in_journal(seen, journaled((1, 101))) == []  # 103: in doubt
    assert kinds(check.check_approved_in_journal(seen, journaled((1, 999)))) == [
        "approved_journaled",
        "journal_unexplained",
    ]
    assert kinds(check.check_approved_in_journal(seen, journaled((2, 101)))) == [
        "approved_journaled"
    ]


def test_a_declined_sale_in_a_journal_fires() -> None:
    seen = [sale(101, "approved", 1), sale(102, "declined")]
    got = check.check_approved_in_journal(seen, journaled((1, 101), (2, 102)))
    assert kinds(got) == ["declined_not_journaled", "journal_unexplained"]


def test_every_journaled_sale_is_in_the_ledger_once_and_nothing_else() -> None:
    j = journaled((1, 101), (3, 103))
    assert check.check_ledger_sales(j, {f"sale:{T}:1": 101, f"sale:{T}:3": 103}) == []
    assert kinds(check.check_ledger_sales(j, {f"sale:{T}:1": 101})) == ["approved_in_ledger_once"]
    assert kinds(check.check_ledger_sales(j, {f"sale:{T}:1": 101, f"sale:{T}:3": 130})) == [
        "approved_in_ledger_once"
    ]
    extra = {f"sale:{T}:1": 101, f"sale:{T}:3": 103, f"sale:{T}:2": 102}
    assert kinds(check.check_ledger_sales(j, extra)) == ["ledger_sale_journaled"]


def test_chains_must_verify_and_be_held_whole_by_the_server() -> None:
    assert check.check_chains({T: 4}, {T: 4}, [{"kind": "double_spend"}]) == []
    assert kinds(check.check_chains({T: "broken at 3"}, {T: 4}, [])) == ["journal_verifies"]
    assert kinds(check.check_chains({T: 4}, {T: 3}, [])) == ["journal_synced"]
    got = check.check_chains({T: 4}, {T: 4}, [{"kind": "journal_gap", "detail": "x"}])
    assert kinds(got) == ["chains_verify_at_server"] and got[0].evidence[0]["detail"] == "x"


def test_no_account_below_the_offline_bound() -> None:
    accounts = [{"number": "C1", "balance_fen": -20000}, {"number": "C2", "balance_fen": 5}]
    assert check.check_bound(accounts, 20000) == []
    got = check.check_bound(accounts, 19999)
    assert kinds(got) == ["offline_bound"] and got[0].evidence["number"] == "C1"


def test_a_lost_card_known_to_the_terminal_approves_nothing() -> None:
    ok = [sale(101, "declined", lost_known=True), sale(102, "approved", 1, lost_known=False)]
    assert check.check_losses(ok) == []
    got = check.check_losses([sale(103, "approved", 2, lost_known=True)])
    assert kinds(got) == ["lost_card_refused"] and got[0].evidence["amount_fen"] == 103
