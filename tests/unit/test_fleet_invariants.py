"""Each invariant of the fleet simulator (sim/fleet/invariants.py) fires on a deliberately
broken state, and stays quiet on the matching sound one: a checker that cannot fail proves
nothing."""

from __future__ import annotations

import argparse

import pytest

from sim.fleet import invariants as inv
from sim.fleet.cli import _faults
from sim.fleet.run import FAULT_KINDS

OK_LEDGER = {"ok": True, "sum_fen": 0, "mismatched": []}


def names(found: list[inv.Violation]) -> set[str]:
    return {v["invariant"] for v in found}


def test_money_conserved_fires_on_an_unbalanced_ledger_and_on_money_from_nowhere() -> None:
    assert inv.conservation(OK_LEDGER, 5000, 300, 5000, 300) == []
    broken = {"ok": False, "sum_fen": 100, "mismatched": []}
    assert names(inv.conservation(broken, 5000, 300, 5000, 300)) == {"money_conserved"}
    # the provider paid 5000, the ledger took 6000 in from it
    assert names(inv.conservation(OK_LEDGER, 6000, 300, 5000, 300)) == {"money_conserved"}
    # the desk paid out 300 in cash, the ledger says 0 went out
    assert names(inv.conservation(OK_LEDGER, 5000, 0, 5000, 300)) == {"money_conserved"}


def test_sale_once_fires_on_a_lost_a_foreign_and_a_changed_sale() -> None:
    k1, k2 = ("T1", 1), ("T1", 2)
    assert inv.sales_once({k1: 500}, {k1: 500, k2: 300}, {k1: 500, k2: 300}, final=True) == []
    # approved, never journaled
    assert names(inv.sales_once({k2: 300}, {k1: 500}, {k1: 500}, final=False)) == {"sale_once"}
    # in the ledger without a journaled sale (a declined sale charged)
    assert names(inv.sales_once({}, {k1: 500}, {k1: 500, k2: 300}, False)) == {"sale_once"}
    # charged another amount than journaled
    assert names(inv.sales_once({}, {k1: 500}, {k1: 600}, False)) == {"sale_once"}
    # after the heal, a journaled sale missing from the ledger
    assert inv.sales_once({}, {k1: 500}, {}, final=False) == []
    assert names(inv.sales_once({}, {k1: 500}, {}, final=True)) == {"sale_once"}


def test_a_declined_sale_journals_nothing_and_an_approved_one_exactly_itself() -> None:
    assert inv.declined_clean(False, [], "x", None) == []
    assert inv.declined_clean(True, [7], "x", 7) == []
    assert names(inv.declined_clean(False, [7], "x", None)) == {"sale_once"}
    assert names(inv.declined_clean(True, [7, 8], "x", 8)) == {"sale_once"}


def test_offline_bound_fires_below_what_was_sold_offline_and_beyond_the_cap() -> None:
    assert inv.offline_bound({1: -800, 2: 5000}, {1: 1000}, 10_000, 3) == []
    # an overdraft with no offline sale: an online approval overdrew
    assert names(inv.offline_bound({1: -800}, {}, 10_000, 3)) == {"offline_bound"}
    # more overdrawn than D per terminal-day allows
    assert names(inv.offline_bound({1: -40_000}, {1: 50_000}, 10_000, 3)) == {"offline_bound"}


def test_hotlist_fires_on_an_offline_approval_the_cache_forbade() -> None:
    assert inv.hotlist(None, None, True, True, "x") == []
    assert inv.hotlist("account lost", "account lost", False, True, "x") == []
    assert names(inv.hotlist("account lost", None, True, True, "x")) == {"hotlist"}
    assert names(inv.hotlist("card 1 replaced", "card 1 replaced", True, False, "x")) == {"hotlist"}
    # online the server decides: an unlock the cache has not seen yet is in force
    assert inv.hotlist("account lost", None, True, False, "x") == []
    assert names(inv.hotlist(None, "account frozen", True, False, "x")) == {"hotlist"}


def test_chain_fires_on_a_broken_or_forked_chain_and_on_a_server_ahead() -> None:
    heads = {"T1": (3, "aa")}
    assert inv.chains(heads, {"T1": (5, "ee")}, {"T1": True}, final=False) == []
    assert names(inv.chains(heads, {"T1": (5, "ee")}, {"T1": False}, False)) == {"chain"}
    assert names(inv.chains(heads, {"T1": (3, "bb")}, {}, False)) == {"chain"}  # forked
    assert names(inv.chains(heads, {"T1": (2, "bb")}, {}, False)) == {"chain"}  # ahead
    assert names(inv.chains(heads, {"T1": (5, "ee")}, {}, final=True)) == {"chain"}


def test_restore_lossless_fires_on_a_record_the_server_lost() -> None:
    assert inv.nothing_lost({"T1": {1, 2, 3}}, {"T1": {1, 2, 3}}) == []
    assert names(inv.nothing_lost({"T1": {1, 3}}, {"T1": {1, 2, 3}})) == {"restore_lossless"}
    assert names(inv.nothing_lost({}, {"T2": {1}})) == {"restore_lossless"}


def test_code_once_fires_on_a_code_charged_twice_unless_reversed() -> None:
    assert inv.code_once({"qr:5:1": [(600, 0)], "qr:5:2": [(600, 0), (600, 600)]}) == []
    assert names(inv.code_once({"qr:5:1": [(600, 0), (400, 0)]})) == {"code_once"}


def test_settled_fires_on_money_left_in_flight() -> None:
    assert inv.settled(0, 0) == []
    assert names(inv.settled(1, 0)) == {"settled"}
    assert names(inv.settled(0, 2)) == {"settled"}
    assert names(inv.settled(0, 0, recovering=True)) == {"settled"}


def test_the_fault_list_is_parsed_strictly() -> None:
    assert _faults("none") == frozenset()
    assert _faults("all") == frozenset(FAULT_KINDS)
    assert _faults("loss,partition") == {"loss", "partition"}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown fault kind"):
        _faults("loss,meteor")
