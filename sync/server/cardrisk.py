"""Cards whose counters go back: a copied card, or one restored from an old image (R5, R6, the
offline limit per card; docs/security.md, docs/card-format.md).

A card's counters only move forward: every sale adds one to its tap counter, every wrong
consumption password to its tries (in the desk's reset epoch), and a terminal journals a record
only after the card took the new counters.  So two different records that leave the *same*
counters on one card prove that the card was put back to an earlier state between them, and a
card that shows fewer sales at an online authorization than a synced record already left on it
went back too.  The server keeps, per card, one *mark* per counter state a record left
(``card_marks``: a sale's tap count, a wrong password's tap count, epoch and tries) and the
highest tap count of a synced sale (``cards.taps_seen``).

Either finding raises the alarm ``card_rollback`` and, by policy (``auto_block_card_rollback``,
on by default), blocks the card: its status becomes ``blocked``, which every terminal refuses
(the feed carries it) until the desk reissues the card (R11).  The sales are still applied: the
journal is the charge.

Records without card counters (an earlier terminal's, the benchmarks') are not marked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sync.db import Tx, placeholders
from sync.records import JournalRecord
from sync.server.accounts import event
from sync.server.context import Context, next_version

log = logging.getLogger(__name__)

ALARM = "card_rollback"
BLOCKED = "blocked"


@dataclass(frozen=True)
class Mark:
    """The counter state one record left on one card."""

    card_no: str
    taps: int
    mark: str  # "sale", or "pin:EPOCH:TRIES" for a wrong consumption password
    terminal_id: str
    seq: int
    account_id: int


def card_no_of(cred: str) -> str | None:
    """The card number of a card credential ``card:<number>:<UID>``."""
    if not cred.startswith("card:"):
        return None
    number, sep, _uid = cred[5:].rpartition(":")
    return number if sep and number else None


def mark_of(terminal_id: str, seq: int, rec: JournalRecord) -> Mark | None:
    """The mark of a card record that carries the card's counters, else None."""
    if rec.method != "card" or rec.kind not in ("sale", "pin_fail"):
        return None
    card, number = rec.card_x(), card_no_of(rec.cred)
    if card is None or number is None:
        return None
    kind = "sale" if rec.kind == "sale" else f"pin:{card.ep}:{card.tries}"
    return Mark(number, card.taps, kind, terminal_id, seq, rec.acct)


def note_records(
    ctx: Context,
    tx: Tx,
    terminal_id: str,
    records: Sequence[tuple[int, JournalRecord]],
    alarm: Callable[[str, str], None],
) -> None:
    """Ingest: keep the marks of a run of records ``(seq, record)`` being applied; a mark
    another record left already is a card that went back (``alarm(kind, detail)``)."""
    marks = [m for seq, rec in records if (m := mark_of(terminal_id, seq, rec)) is not None]
    if not marks:
        return
    numbers = sorted({m.card_no for m in marks})
    taps = sorted({m.taps for m in marks})
    stored = {
        (r["card_no"], int(r["taps"]), r["mark"]): (r["terminal_id"], int(r["seq"]))
        for r in tx.all(
            "SELECT card_no, taps, mark, terminal_id, seq FROM card_marks "
            f"WHERE card_no IN ({placeholders(len(numbers))}) "
            f"AND taps IN ({placeholders(len(taps))})",
            [*numbers, *taps],
        )
    }
    fresh: list[Mark] = []
    went_back: dict[str, tuple[Mark, tuple[str, int]]] = {}
    for m in marks:
        key = (m.card_no, m.taps, m.mark)
        first = stored.get(key)
        if first is None:
            stored[key] = (m.terminal_id, m.seq)
            fresh.append(m)
        elif first != (m.terminal_id, m.seq):
            went_back.setdefault(m.card_no, (m, first))
    tx.insert_rows(
        "card_marks",
        ("card_no", "taps", "mark", "terminal_id", "seq"),
        [(m.card_no, m.taps, m.mark, m.terminal_id, m.seq) for m in fresh],
    )
    highest: dict[str, int] = {}
    for m in marks:
        if m.mark == "sale":
            highest[m.card_no] = max(highest.get(m.card_no, 0), m.taps)
    tx.executemany(
        "UPDATE cards SET taps_seen = ? WHERE card_no = ? AND taps_seen < ?",
        [(n, card_no, n) for card_no, n in sorted(highest.items())],
    )
    for card_no, (m, (t0, s0)) in sorted(went_back.items()):
        what = "sale" if m.mark == "sale" else "wrong password"
        went_back_to(
            ctx,
            tx,
            card_no,
            m.account_id,
            f"card {card_no}: record {m.terminal_id}:{m.seq} ({what}) leaves the same counters "
            f"as record {t0}:{s0} (tap {m.taps}): the card went back (a copy, or an old image)",
            alarm,
        )


def check_facts(
    ctx: Context,
    tx: Tx,
    card_no: str,
    account_id: int,
    taps: int,
    seen: int,
    terminal_id: str,
    alarm: Callable[[str, str], None],
) -> bool:
    """Online authorization: whether card ``card_no`` shows fewer sales (``taps``) than a
    synced record already left on it (``seen``: its ``taps_seen``, read in the caller's
    transaction); when it does, :func:`went_back_to` has run."""
    if taps >= seen:
        return False
    went_back_to(
        ctx,
        tx,
        card_no,
        account_id,
        f"card {card_no} shows {taps} sales at {terminal_id}, but a synced sale left {seen} "
        "on it: the card went back (a copy, or an old image)",
        alarm,
    )
    return True


def went_back_to(
    ctx: Context,
    tx: Tx,
    card_no: str,
    account_id: int,
    detail: str,
    alarm: Callable[[str, str], None],
) -> None:
    """The alarm, and the block the policy asks for (once: a blocked card stays blocked)."""
    alarm(ALARM, detail)
    if not ctx.policy().get("auto_block_card_rollback", True):
        return
    if tx.scalar("SELECT status FROM cards WHERE card_no = ?", (card_no,)) == "active":
        tx.execute(
            "UPDATE cards SET status = ?, version = ? WHERE card_no = ?",
            (BLOCKED, next_version(tx), card_no),
        )
        log.warning("card %s blocked: its counters went back", card_no)
        event(tx, ctx, account_id, "card_blocked", f"{detail}; card blocked", "system")
        ctx.notifier.notify()


def store_alarm(ctx: Context, tx: Tx, terminal_id: str) -> Callable[[str, str], None]:
    """An ``alarm(kind, detail)`` that stores the alarm as raised by ``terminal_id``."""

    def alarm(kind: str, detail: str) -> None:
        log.warning("alarm %s from %s: %s", kind, terminal_id, detail)
        tx.execute(
            "INSERT INTO alarms (ts_ms, terminal_id, kind, detail) VALUES (?, ?, ?, ?)",
            (ctx.now_ms(), terminal_id, kind, detail),
        )

    return alarm
