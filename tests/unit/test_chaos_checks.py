"""The invariants of the real-process chaos run (sim/chaos/check.py): each holds on a state
where it should, and fires on a deliberately broken one (a checker that cannot fail proves
nothing)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from sim.chaos import check
from sim.chaos.check import JournalSale, SaleSeen
from sim.chaos.run import ChaosConfig

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


def test_a_violation_exits_1_with_the_seed_the_invariant_and_the_evidence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.chaos import cli

    bad = check.check_losses([sale(103, "approved", 2, lost_known=True)])
    got: dict[str, Any] = {}

    def fake_run(cfg: ChaosConfig) -> dict[str, Any]:
        got["cfg"] = cfg
        return {
            **dict.fromkeys(("sales", "approved", "offline_approved", "declined", "in_doubt"), 0),
            **{key: {} for key in ("chaos", "proxy", "checked")},
            "seed": cfg.seed,
            "terminals": cfg.terminals,
            "seconds": cfg.seconds,
            "elapsed_s": 1.0,
            "dir": "/tmp/kept",
            "violations": [v.to_json() for v in bad],
        }

    monkeypatch.setattr(cli, "run_chaos", fake_run)
    args = argparse.Namespace(
        seconds=3.0, terminals=2, seed=41, dir=None, db="postgres", json=False
    )
    assert cli.chaos(args) == 1
    err = capsys.readouterr().err
    assert "seed 41" in err and "/tmp/kept" in err
    assert "lost_card_refused" in err and '"amount_fen": 103' in err
    assert (got["cfg"].seed, got["cfg"].terminals, got["cfg"].db) == (41, 2, "postgres")


def test_a_reverse_scan_payment_ends_sold_or_refunded_never_both_nor_neither() -> None:
    sold = JournalSale(T, 1, 500, 1, True, order=7)
    void = JournalSale(T, 2, 600, 0, True, order=8, kind="void")
    j = {T: [sold, void]}
    paid = {f"rsale:{T}:7": 500, f"rsale:{T}:8": 600}
    assert check.check_ledger_sales(j, paid, {f"rrefund:{T}:8": 600}) == []
    assert kinds(check.check_ledger_sales(j, paid, {})) == ["reverse_sold_or_refunded"]
    assert kinds(check.check_ledger_sales(j, paid, {f"rrefund:{T}:8": 599})) == [
        "reverse_sold_or_refunded"
    ]
    both = {f"rrefund:{T}:8": 600, f"rrefund:{T}:7": 500}
    assert kinds(check.check_ledger_sales(j, paid, both)) == ["reverse_sold_or_refunded"]
    # a void is no sale: a declined sale's amount on a void is not "journaled"
    seen = [sale(500, "approved", 1), sale(600, "declined")]
    assert check.check_approved_in_journal(seen, j) == []
