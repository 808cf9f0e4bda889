"""The kiosk's own journal: every reissue order (R11) step by step, and every write onto a card.

Stored in SQLite (``DATA/kiosk.db``, WAL, ``synchronous=FULL``): a step is recorded, and durable,
*before* the kiosk acts on it, so a kiosk killed at any instant finds on restart what it was
doing and resumes the order or undoes it (:mod:`edge.kiosk.engine`).

This journal stays on the kiosk.  A kiosk moves no money by journal: every change it makes is
an online request the server decides and records first (the server's role table gives kiosks
no journal record kinds, docs/security.md "Who may call what"); what the kiosk keeps here is
what it needs to finish its own half (the card) after a crash, and a trail for the service
engineer (``GET /control/status`` shows the last orders).

The steps of an order (``step``)::

    feeding   ─► ordered ─► encoding ─► encoded ─► done ─► at_mouth   (finished)
       │            │           │
       └──► undone  └───────────┴──► (restart: the card at the encoder is captured, another
                                      blank fed and the same order asked again: no second fee)

- ``feeding``: the order exists only here (no server call made): a blank is being moved to the
  encoder.  A crash here undoes the order (nothing was charged) and captures the blank.
- ``ordered``: the server was asked (``POST /v1/kiosk/reissue``) for this order id and blank
  UID; the answer (the card data to write) is kept once it arrived.
- ``encoding``: the card at the encoder is being written.  A crash or a fault here leaves a
  half-encoded card: it goes to the reject bin, never to the mouth.
- ``encoded``: the card was written and read back correct (card number, UID, generation, tag).
- ``done``: the server closed the order (``…/done``).
- ``at_mouth``: the card was issued to the mouth: finished.

The holder's identity (number + ID-card number, or the authentication code) is kept only while
the order is open and wiped when it finishes or is undone (0600 file in a 0700 directory).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync.clock import Clock
from sync.db import Database, Migrations, placeholders

#: the columns of an order a step may change, in the order of the UPDATE in :meth:`step`
_MUTABLE = (
    "step",
    "identity",
    "uid",
    "card_no",
    "fee_fen",
    "balance_fen",
    "answer",
    "rejected",
    "note",
    "updated_ms",
)

MIGRATIONS = Migrations()
MIGRATIONS.add(
    "0001-kiosk-orders",
    """
    CREATE TABLE orders (
        order_id {text} PRIMARY KEY,
        step {text} NOT NULL,
        number {text} NOT NULL,
        identity {text} NOT NULL,
        uid {text} NOT NULL,
        card_no {text} NOT NULL,
        fee_fen {int} NOT NULL,
        balance_fen {int} NOT NULL,
        answer {text} NOT NULL,
        rejected {int} NOT NULL,
        note {text} NOT NULL,
        created_ms {int} NOT NULL,
        updated_ms {int} NOT NULL
    );
    CREATE TABLE card_writes (
        id {id},
        card_no {text} NOT NULL,
        uid {text} NOT NULL,
        what {text} NOT NULL,
        outcome {text} NOT NULL,
        started_ms {int} NOT NULL,
        ended_ms {int} NOT NULL
    )
    """,
)

STEPS = ("feeding", "ordered", "encoding", "encoded", "done", "at_mouth", "undone")
OPEN_STEPS = ("feeding", "ordered", "encoding", "encoded", "done")


@dataclass
class Order:
    order_id: str
    step: str
    number: str
    identity: dict[str, str]
    uid: str
    card_no: str
    fee_fen: int
    balance_fen: int
    answer: dict[str, Any]
    rejected: int
    note: str
    created_ms: int

    @property
    def open(self) -> bool:
        return self.step in OPEN_STEPS

    def public(self) -> dict[str, Any]:
        """What the screens and ``ykt sim kiosk`` see (never the identity)."""
        return {
            "order_id": self.order_id,
            "step": self.step,
            "number": self.number,
            "uid": self.uid,
            "card_no": self.card_no,
            "fee_fen": self.fee_fen,
            "balance_fen": self.balance_fen,
            "rejected": self.rejected,
            "note": self.note,
        }


class KioskJournal:
    def __init__(self, path: Path, clock: Clock) -> None:
        self.db = Database(path, synchronous="FULL")
        self.db.migrate(MIGRATIONS)
        self.clock = clock
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # -- orders -------------------------------------------------------------------------------
    def create(self, order_id: str, number: str, identity: dict[str, str]) -> Order:
        now = self.clock.now_ms()
        with self._lock, self.db.tx() as tx:
            tx.execute(
                "INSERT INTO orders (order_id, step, number, identity, uid, card_no, fee_fen, "
                "balance_fen, answer, rejected, note, created_ms, updated_ms) "
                "VALUES (?, 'feeding', ?, ?, '', '', 0, 0, '{}', 0, '', ?, ?)",
                (order_id, number, json.dumps(identity), now, now),
            )
        order = self.get(order_id)
        assert order is not None
        return order

    def get(self, order_id: str) -> Order | None:
        row = self.db.one("SELECT * FROM orders WHERE order_id = ?", (order_id,))
        return None if row is None else _order(row)

    def open_orders(self) -> list[Order]:
        rows = self.db.all(
            f"SELECT * FROM orders WHERE step IN ({placeholders(len(OPEN_STEPS))}) "
            "ORDER BY created_ms",
            OPEN_STEPS,
        )
        return [_order(r) for r in rows]

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT * FROM orders ORDER BY created_ms DESC LIMIT ?", (limit,))
        return [_order(r).public() for r in rows]

    def step(self, order: Order, step: str, **fields: Any) -> Order:
        """Record ``step`` (and the given columns) durably, then return the order as stored.
        The identity is wiped when the order ends (``at_mouth``, ``undone``)."""
        assert step in STEPS, step
        cols: dict[str, Any] = {"step": step, "updated_ms": self.clock.now_ms()}
        for key, val in fields.items():
            cols[key] = json.dumps(val) if key == "answer" else val
        if step in ("at_mouth", "undone"):
            cols["identity"] = "{}"
        unknown = set(cols) - set(_MUTABLE)
        assert not unknown, unknown
        with self._lock, self.db.tx() as tx:
            row = tx.one("SELECT * FROM orders WHERE order_id = ?", (order.order_id,))
            assert row is not None, order.order_id
            merged = {k: cols.get(k, row[k]) for k in _MUTABLE}
            tx.execute(
                "UPDATE orders SET step = ?, identity = ?, uid = ?, card_no = ?, fee_fen = ?, "
                "balance_fen = ?, answer = ?, rejected = ?, note = ?, updated_ms = ? "
                "WHERE order_id = ?",
                (*(merged[k] for k in _MUTABLE), order.order_id),
            )
        fresh = self.get(order.order_id)
        assert fresh is not None
        return fresh

    # -- card writes --------------------------------------------------------------------------
    def write_started(self, card_no: str, uid: str, what: str) -> int:
        now = self.clock.now_ms()
        with self._lock, self.db.tx() as tx:
            return tx.insert(
                "INSERT INTO card_writes (card_no, uid, what, outcome, started_ms, ended_ms) "
                "VALUES (?, ?, ?, 'started', ?, 0) RETURNING id",
                (card_no, uid, what, now),
            )

    def write_ended(self, write_id: int, outcome: str) -> None:
        with self._lock, self.db.tx() as tx:
            tx.execute(
                "UPDATE card_writes SET outcome = ?, ended_ms = ? WHERE id = ?",
                (outcome[:200], self.clock.now_ms(), write_id),
            )

    def unfinished_writes(self) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT * FROM card_writes WHERE outcome = 'started' ORDER BY id")
        return [dict(r) for r in rows]

    def writes(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT * FROM card_writes ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]


def _order(row: Any) -> Order:
    return Order(
        order_id=row["order_id"],
        step=row["step"],
        number=row["number"],
        identity=json.loads(row["identity"]),
        uid=row["uid"],
        card_no=row["card_no"],
        fee_fen=int(row["fee_fen"]),
        balance_fen=int(row["balance_fen"]),
        answer=json.loads(row["answer"]),
        rejected=int(row["rejected"]),
        note=row["note"],
        created_ms=int(row["created_ms"]),
    )
