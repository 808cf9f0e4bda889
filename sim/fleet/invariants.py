"""The fleet's invariants, as pure functions of plain data (the run gathers the data; the unit
tests feed each checker a deliberately broken state and see it fire).

Each returns the violations it finds, as ``{"invariant": NAME, "detail": …}``.  The bounds are
the ones docs/security.md states ("Cards and offline risk"): what an account can overdraw is
what terminals approved offline against balances they last saw, at most D per offline terminal
and campus day; online approvals never overdraw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Violation = dict[str, Any]
Key = tuple[str, int]  # (terminal id, journal sequence number)


def _v(name: str, detail: str, **facts: Any) -> Violation:
    return {"invariant": name, "detail": detail, **facts}


def conservation(
    check: Mapping[str, Any], channel_in: int, cash_out: int, topped_up: int, paid_out: int
) -> list[Violation]:
    """Every transfer balances (the ledger sums to zero and every balance equals its
    transfers), and what came in from the payment provider and went out in cash at the desk
    is what the campus paid in and was paid out."""
    out = []
    if not check.get("ok"):
        out.append(
            _v(
                "money_conserved",
                f"ledger does not balance: sum {check.get('sum_fen')}, "
                f"mismatched {check.get('mismatched')}",
            )
        )
    if channel_in != topped_up:
        out.append(
            _v("money_conserved", f"provider credited {channel_in}, the provider paid {topped_up}")
        )
    if cash_out != paid_out:
        out.append(_v("money_conserved", f"cash out {cash_out}, the desk paid out {paid_out}"))
    return out


def sales_once(
    approved: Mapping[Key, int],
    journal_sales: Mapping[Key, int],
    ledger_sales: Mapping[Key, int],
    final: bool,
) -> list[Violation]:
    """Every sale a terminal approved is journaled; every sale in the ledger is a journaled
    sale of that amount (a ledger id is unique: once); after the heal every journaled sale is
    in the ledger.  ``approved``/``journal_sales``/``ledger_sales``: (terminal, seq) → fen."""
    out = []
    for k, amt in approved.items():
        if journal_sales.get(k) != amt:
            out.append(_v("sale_once", f"approved sale {k} of {amt} is not in the journal", key=k))
    for k, amt in ledger_sales.items():
        if journal_sales.get(k) != amt:
            out.append(
                _v("sale_once", f"ledger charges {amt} for {k}, no such journaled sale", key=k)
            )
    if final:
        for k, amt in journal_sales.items():
            if ledger_sales.get(k) != amt:
                out.append(
                    _v("sale_once", f"journaled sale {k} of {amt} never reached the ledger", key=k)
                )
    return out


def declined_clean(
    approved: bool, new_sales: Iterable[int], key: str, sale_seq: int | None
) -> list[Violation]:
    """A decision journals a sale only when it approves, and then exactly the one it shows."""
    got = list(new_sales)
    if not approved and got:
        return [_v("sale_once", f"{key}: declined, but sale records {got} were journaled")]
    if approved and got != [sale_seq]:
        return [_v("sale_once", f"{key}: approved #{sale_seq}, journaled sale records {got}")]
    return []


def offline_bound(
    balances: Mapping[int, int],
    offline_approved: Mapping[int, int],
    per_terminal_day: int,
    terminal_days: int,
) -> list[Violation]:
    """No account below the worst case the docs state: an overdraft comes only from sales
    approved offline (online approvals check the server's balance less its holds), and is at
    most D per offline terminal and campus day (``terminal_days`` × D)."""
    out = []
    cap = per_terminal_day * terminal_days
    for acct, bal in balances.items():
        if bal >= 0:
            continue
        allowed = min(offline_approved.get(acct, 0), cap)
        if -bal > allowed:
            out.append(
                _v(
                    "offline_bound",
                    f"account {acct} at {bal}, below the bound -{allowed} "
                    f"(offline approved {offline_approved.get(acct, 0)}, cap {cap})",
                    account=acct,
                )
            )
    return out


def hotlist(
    in_cache: str | None, at_server: str | None, approved: bool, offline: bool, key: str
) -> list[Violation]:
    """Once a loss report or freeze has reached a terminal's cache (``in_cache``: what the cache
    said against the sale before it was decided), that terminal approves nothing for that card
    or account while it is in force (``at_server``: what the server says then).  Offline, the
    cache is all the terminal has: it must refuse whatever it says.  Online the server decides,
    and an unlock the cache has not seen yet is in force (a restore from a backup older than the
    report undoes the report, docs/operations.md)."""
    if approved and in_cache and (offline or at_server):
        return [_v("hotlist", f"{key}: approved although the cache had {in_cache}")]
    if approved and at_server and not offline:
        return [_v("hotlist", f"{key}: approved online although the server has {at_server}")]
    return []


def chains(
    server_heads: Mapping[str, tuple[int, str]],
    journal_heads: Mapping[str, tuple[int, str]],
    verified: Mapping[str, bool],
    final: bool,
) -> list[Violation]:
    """Every terminal's journal chain verifies, the server's head is on it (never ahead of the
    terminal, the same hash at the same number), and after the heal they are equal."""
    out = []
    for tid, ok in verified.items():
        if not ok:
            out.append(_v("chain", f"journal chain of {tid} does not verify"))
    for tid, (seq, h) in server_heads.items():
        jseq, jh = journal_heads.get(tid, (0, ""))
        if seq > jseq or (seq == jseq and h != jh):
            out.append(_v("chain", f"server head of {tid} is {seq}/{h[:12]}, terminal {jseq}"))
        elif final and seq != jseq:
            out.append(_v("chain", f"{tid}: server has {seq} of {jseq} records after the heal"))
    return out


def nothing_lost(
    server_records: Mapping[str, set[int]], journal_records: Mapping[str, set[int]]
) -> list[Violation]:
    """After the heal the server holds every record of every terminal, whatever backup it was
    restored from."""
    out = []
    for tid, seqs in journal_records.items():
        missing = seqs - server_records.get(tid, set())
        if missing:
            out.append(
                _v("restore_lossless", f"{tid}: records {sorted(missing)[:10]} lost by the server")
            )
    return out


def code_once(charges: Mapping[str, list[tuple[int, int]]]) -> list[Violation]:
    """A payment code pays at most once: per code, the charges less their reversals add up to
    at most one sale.  ``charges``: code → [(charged, reversed)]."""
    out = []
    for code, rows in charges.items():
        net = [c - r for c, r in rows if c - r > 0]
        if len(net) > 1:
            out.append(_v("code_once", f"code {code[:16]}… paid {len(net)} times: {net}"))
    return out


def settled(holds: int, unsettled_reverse: int, recovering: bool = False) -> list[Violation]:
    """After the heal no money is in flight: no hold left, every reverse-scan payment linked to
    its sale or refunded, and a server restored from a backup no longer recovering (every
    terminal has pushed again: sync/server/recovery.py)."""
    out = []
    if holds:
        out.append(_v("settled", f"{holds} holds left after every record synced"))
    if unsettled_reverse:
        out.append(_v("settled", f"{unsettled_reverse} reverse-scan payments never settled"))
    if recovering:
        out.append(_v("settled", "still recovering from a restore after every terminal synced"))
    return out
