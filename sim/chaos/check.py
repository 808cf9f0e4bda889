"""The invariants a chaos run checks after it healed: pure functions of what the driver saw
(:class:`SaleSeen`), what the terminals journaled and what the server's admin API answers, each
returning the violations it found (an empty list: it holds).  ``tests/unit/test_chaos_checks.py``
shows each one firing on a broken state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "CHAIN_ALARMS",
    "JournalSale",
    "SaleSeen",
    "Violation",
    "check_approved_in_journal",
    "check_bound",
    "check_chains",
    "check_ledger",
    "check_ledger_sales",
    "check_losses",
]

#: alarms that say a terminal's journal chain did not verify at the server
CHAIN_ALARMS = frozenset(
    {
        "tamper",
        "broken_chain",
        "bad_signature",
        "journal_gap",
        "foreign_record",
        "record_not_allowed",
        "record_refused",
    }
)

Outcome = Literal["approved", "declined", "in_doubt"]


@dataclass
class Violation:
    invariant: str
    detail: str
    evidence: Any = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SaleSeen:
    """One sale the driver tried at a terminal, as the terminal's control API answered it.
    ``in_doubt``: the terminal died (or did not answer) before saying.  ``lost_known``: before
    the sale the terminal's cache already held the card's loss report, and no unlock was sent
    before the answer came."""

    terminal: str
    how: str  # card | pin | code
    number: str
    card_no: str
    amount_fen: int
    outcome: Outcome
    seq: int | None = None
    offline: bool = False
    code: str | None = None
    reason: str | None = None
    lost_known: bool = False
    order: int | None = None  # a reverse scan's request

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JournalSale:
    """A sale record of a terminal's journal, or the ``void`` that closed a reverse-scan
    request without a sale (``order``: the request's)."""

    terminal: str
    seq: int
    amount_fen: int
    account: int
    offline: bool
    order: int | None = None
    kind: str = "sale"

    @property
    def transfer_id(self) -> str:
        """The ledger's transfer of the sale: a reverse-scan sale's money moved when the phone
        paid (``rsale:TERM:ORDER``, docs/security.md), any other sale's when it synced."""
        if self.order is not None:
            return f"rsale:{self.terminal}:{self.order}"
        return f"sale:{self.terminal}:{self.seq}"

    @property
    def refund_id(self) -> str:
        return f"rrefund:{self.terminal}:{self.order}"


def check_ledger(ledger: Mapping[str, Any]) -> list[Violation]:
    """Money is conserved: the ledger's own check (every transfer balances, the balances sum to
    zero and equal what their transfers add up to)."""
    if ledger.get("ok") is True:
        return []
    return [Violation("money_conserved", "the ledger check failed", dict(ledger))]


def check_approved_in_journal(
    seen: Sequence[SaleSeen], journals: Mapping[str, Sequence[JournalSale]]
) -> list[Violation]:
    """Every sale a terminal said it approved is its journal's sale at that sequence number,
    of that amount; no sale it declined is in any journal; a journal holds no sale the driver
    was not told of (approved) or could not hear of (in doubt)."""
    out: list[Violation] = []
    by_seq = {
        (j.terminal, j.seq): j for sales in journals.values() for j in sales if j.kind == "sale"
    }
    by_amount: dict[int, list[JournalSale]] = {}
    for j in by_seq.values():
        by_amount.setdefault(j.amount_fen, []).append(j)
    for s in seen:
        found = by_amount.get(s.amount_fen, [])
        if s.outcome == "approved":
            at = by_seq.get((s.terminal, s.seq or 0))
            if at is None or at.amount_fen != s.amount_fen:
                out.append(
                    Violation(
                        "approved_journaled",
                        f"{s.terminal} approved {s.amount_fen} fen (seq {s.seq}) but its "
                        "journal has no such sale",
                        {"sale": s.to_json(), "journal_at_seq": at and asdict(at)},
                    )
                )
        elif s.outcome == "declined" and found:
            out.append(
                Violation(
                    "declined_not_journaled",
                    f"{s.terminal} declined {s.amount_fen} fen but a journal holds that sale",
                    {"sale": s.to_json(), "journaled": [asdict(j) for j in found]},
                )
            )
    told = {s.amount_fen for s in seen if s.outcome in ("approved", "in_doubt")}
    for j in by_seq.values():
        if j.amount_fen not in told:
            out.append(
                Violation(
                    "journal_unexplained",
                    f"{j.terminal} journaled a sale of {j.amount_fen} fen (seq {j.seq}) that it "
                    "never reported approved and that no crash interrupted",
                    asdict(j),
                )
            )
    return out


def check_ledger_sales(
    journals: Mapping[str, Sequence[JournalSale]],
    ledger_sales: Mapping[str, int],
    refunds: Mapping[str, int] | None = None,
) -> list[Violation]:
    """Every journaled sale is in the ledger exactly once (its transfer, of the amount the
    record says; ids are unique, so once), and the ledger holds no other sale.  A reverse-scan
    payment (``rsale:TERM:ORDER``) ends either sold (the terminal journaled the sale; no
    refund) or refunded (``rrefund:TERM:ORDER``, the same amount; no sale journaled)."""
    refunds = refunds or {}
    out: list[Violation] = []
    records = [j for sales in journals.values() for j in sales]
    want = {j.transfer_id: j for j in records if j.kind == "sale"}
    for tid, j in want.items():
        got = ledger_sales.get(tid)
        if got != j.amount_fen:
            out.append(
                Violation(
                    "approved_in_ledger_once",
                    f"journaled sale {tid} of {j.amount_fen} fen is "
                    + ("not in the ledger" if got is None else f"in the ledger as {got} fen"),
                    asdict(j),
                )
            )
        if j.order is not None and j.refund_id in refunds:
            out.append(
                Violation(
                    "reverse_sold_or_refunded",
                    f"reverse-scan sale {tid} was journaled and refunded too",
                    {"sale": asdict(j), "refund_fen": refunds[j.refund_id]},
                )
            )
    for tid, amount in ledger_sales.items():
        if tid in want:
            continue
        if tid.startswith("rsale:"):
            refund = "rrefund:" + tid.removeprefix("rsale:")
            if refunds.get(refund) == amount:
                continue
            out.append(
                Violation(
                    "reverse_sold_or_refunded",
                    f"reverse-scan payment {tid} of {amount} fen was neither journaled as a "
                    "sale nor refunded"
                    + ("" if refund not in refunds else f" (refunded {refunds[refund]} fen)"),
                    {"transfer": tid, "amount_fen": amount},
                )
            )
            continue
        out.append(
            Violation(
                "ledger_sale_journaled",
                f"the ledger holds sale {tid} of {amount} fen that no journal has",
                {"transfer": tid, "amount_fen": amount},
            )
        )
    return out


def check_chains(
    verified: Mapping[str, int | str],
    server_heads: Mapping[str, int],
    alarms: Iterable[Mapping[str, Any]],
) -> list[Violation]:
    """Every terminal's journal verifies (``verified``: its record count, or the error) and the
    server holds all of it (its head is the journal's), with no alarm of a broken chain."""
    out: list[Violation] = []
    for term, n in verified.items():
        if isinstance(n, str):
            out.append(Violation("journal_verifies", f"{term}'s journal does not verify: {n}"))
        elif server_heads.get(term) != n:
            out.append(
                Violation(
                    "journal_synced",
                    f"{term} journaled {n} records, the server holds {server_heads.get(term)}",
                    {"journal": n, "server_head": server_heads.get(term)},
                )
            )
    bad = [dict(a) for a in alarms if a.get("kind") in CHAIN_ALARMS]
    if bad:
        out.append(Violation("chains_verify_at_server", f"{len(bad)} chain alarms", bad))
    return out


def check_bound(accounts: Iterable[Mapping[str, Any]], bound_fen: int) -> list[Violation]:
    """No account below the documented worst-case offline bound (docs/security.md): ``-bound``
    fen (N terminals × D per campus day)."""
    return [
        Violation(
            "offline_bound",
            f"account {a['number']} is at {a['balance_fen']} fen, below -{bound_fen}",
            {"number": a["number"], "balance_fen": a["balance_fen"], "bound_fen": bound_fen},
        )
        for a in accounts
        if int(a["balance_fen"]) < -bound_fen
    ]


def check_losses(seen: Sequence[SaleSeen]) -> list[Violation]:
    """Once a loss report reached a terminal's cache, the terminal approves nothing for that
    card (until an unlock is sent)."""
    return [
        Violation(
            "lost_card_refused",
            f"{s.terminal} approved {s.amount_fen} fen on card {s.card_no} after its loss "
            "report had reached the terminal's cache",
            s.to_json(),
        )
        for s in seen
        if s.lost_known and s.outcome == "approved"
    ]
