"""The terminal journal: an append-only, signed, hash-chained, gapless outbox (docs/architecture.md).

Stored in SQLite with WAL and ``synchronous=FULL``: :meth:`Journal.append` returns only after
the record is durable, and the POS shows an approval only after that.  A crash at any instant
leaves either no record (the sequence number is reused) or a durable record that will sync.

Besides the signed body, each row keeps a few columns extracted from it (account, amount,
campus day, offline flag, PIN fact) so offline decisions can query the journal by account.
The ``offline`` column counts money at risk: a reverse-scan sale (paid online by the phone)
is not.

Reverse-scan requests (R8) live here too, in ``reverse_orders``: a request is stored open
before it is shown, and closed in the same transaction as the record that says how (its sale,
or a ``void``), so the server can match every phone payment to a record (docs/security.md).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.errors import JournalError
from sync import protocol
from sync.clock import Clock, campus_date
from sync.crypto import SigningKey, VerifyKey, b64d, b64e
from sync.db import Database, Migrations, Tx
from sync.errors import ProtocolError
from sync.records import Entry, JournalRecord

log = logging.getLogger(__name__)

#: the most a pushed batch holds, as JSON: half the server's request limit (sync.bodylimit)
PUSH_MAX_BYTES = 512 * 1024

MIGRATIONS = Migrations()
MIGRATIONS.add(
    "0001-journal",
    """
    CREATE TABLE journal (
        seq {id},
        hash {text} NOT NULL,
        body {text} NOT NULL,
        sig {text} NOT NULL,
        account_id {int} NOT NULL,
        kind {text} NOT NULL,
        amount {int} NOT NULL,
        day {text} NOT NULL,
        offline {int} NOT NULL,
        pin {text} NOT NULL
    );
    CREATE INDEX journal_account ON journal (account_id, seq);
    CREATE TABLE sync_state (key {text} PRIMARY KEY, value {int} NOT NULL);
    INSERT INTO sync_state (key, value) VALUES ('acked', 0)
    """,
)

MIGRATIONS.add(
    "0002-seen-codes",
    """
    CREATE TABLE seen_codes (
        serial {int} NOT NULL,
        counter {int} NOT NULL,
        seq {int} NOT NULL,
        PRIMARY KEY (serial, counter)
    )
    """,
)

MIGRATIONS.add(
    "0003-reverse-orders",
    """
    CREATE TABLE reverse_orders (
        order_no {int} PRIMARY KEY,
        amount {int} NOT NULL,
        request {text} NOT NULL,
        created_ms {int} NOT NULL,
        state {text} NOT NULL,
        seq {int}
    )
    """,
)

MIGRATIONS.add(
    "0010-till",
    """
    CREATE TABLE till_refunds (
        sale_seq {int} PRIMARY KEY,
        refund_seq {int} NOT NULL,
        amount {int} NOT NULL
    );
    CREATE TABLE shifts (
        shift_no {int} PRIMARY KEY,
        opened_ms {int} NOT NULL,
        opened_by {text} NOT NULL,
        first_seq {int} NOT NULL,
        closed_ms {int},
        closed_by {text},
        report {text},
        pushed {int} NOT NULL DEFAULT 0
    )
    """,
)

INSERT = (
    "INSERT INTO journal (seq, hash, body, sig, account_id, kind, amount, day, offline, pin)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def row(rec: JournalRecord, body: bytes, sig: bytes, h: str, tz: str) -> tuple[Any, ...]:
    """The journal row of a sealed record (for :data:`INSERT`)."""
    return (
        rec.seq,
        h,
        body.decode(),
        b64e(sig),
        rec.acct,
        rec.kind,
        rec.amt,
        campus_date(rec.ts, tz),
        int(rec.at_risk),  # money at risk
        rec.pin,
    )


@dataclass(frozen=True)
class Appended:
    seq: int
    hash: str
    record: JournalRecord


@dataclass(frozen=True)
class LocalRecord:
    """What offline decisions read of one of this terminal's records (its row's columns)."""

    seq: int
    kind: str
    amount: int
    day: str
    offline: bool
    pin: str


@dataclass(frozen=True)
class OpenOrder:
    """A reverse-scan request this terminal showed and has not closed by a record."""

    order: int
    amount: int
    request: str


class Journal:
    def __init__(
        self, db: Database, terminal_id: str, key: SigningKey, clock: Clock, tz: str
    ) -> None:
        self.db = db
        db.migrate(MIGRATIONS)
        self.terminal_id = terminal_id
        self.key = key
        self.clock = clock
        self.tz = tz
        self._lock = threading.Lock()
        row = db.one("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1")
        self._head_seq = int(row["seq"]) if row else 0
        self._head_hash = str(row["hash"]) if row else protocol.genesis_hash(terminal_id)
        self._acked = int(db.scalar("SELECT value FROM sync_state WHERE key = 'acked'"))
        self._unsynced_offline = int(
            db.scalar(
                "SELECT COALESCE(SUM(amount), 0) FROM journal "
                "WHERE seq > ? AND offline = 1 AND kind = 'sale'",
                (self._acked,),
            )
        )

    # -- writing ------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        with self._lock:
            return self._head_seq + 1

    @property
    def head_seq(self) -> int:
        with self._lock:
            return self._head_seq

    def append(
        self,
        entry: Entry,
        code: tuple[int, int] | None = None,
        order: int | None = None,
        refund_of: int | None = None,
    ) -> Appended:
        """Seal ``entry`` as the next record (the journal adds v/term/seq/prev); durable on
        return.

        ``code`` (certificate serial, counter) enters the seen-set of phone codes in the same
        transaction, so a code is spent exactly when its sale is journaled.  ``order`` closes
        that open reverse-scan request in the same transaction (sold by a sale, voided by a
        ``void``): :class:`JournalError`, and nothing journaled, when it is not open.  ``refund_of`` (a sale's sequence number) enters the refunded sales,
        so a sale is refunded once at the till (a second refund fails the transaction:
        :class:`JournalError`)."""
        with self._lock:
            try:
                rec = entry.chained(self.terminal_id, self._head_seq + 1, self._head_hash)
                body, sig = protocol.seal(self.key, rec)
            except ProtocolError as exc:
                raise JournalError(f"cannot journal an invalid record: {exc}") from exc
            h = protocol.record_hash(body)
            with self.db.tx() as tx:
                if order is not None:
                    closed = tx.execute(
                        "UPDATE reverse_orders SET state = ?, seq = ? "
                        "WHERE order_no = ? AND state = 'open'",
                        ("sold" if rec.kind == "sale" else rec.kind, rec.seq, order),
                    )
                    if closed != 1:
                        raise JournalError(f"reverse-scan request {order} is not open")
                tx.execute(INSERT, row(rec, body, sig, h, self.tz))
                if code is not None:
                    tx.execute(
                        "INSERT INTO seen_codes (serial, counter, seq) VALUES (?, ?, ?)",
                        (code[0], code[1], rec.seq),
                    )
                if refund_of is not None:
                    if tx.one("SELECT 1 FROM till_refunds WHERE sale_seq = ?", (refund_of,)):
                        raise JournalError(f"sale {refund_of} was refunded already")
                    tx.execute(
                        "INSERT INTO till_refunds (sale_seq, refund_seq, amount) VALUES (?, ?, ?)",
                        (refund_of, rec.seq, rec.amt),
                    )
            self._head_seq, self._head_hash = rec.seq, h
            if rec.at_risk and rec.kind == "sale":
                self._unsynced_offline += rec.amt
            return Appended(rec.seq, h, rec)

    # -- syncing ------------------------------------------------------------------------------
    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    def unsent(self, limit: int = 500, max_bytes: int = PUSH_MAX_BYTES) -> list[dict[str, str]]:
        """The oldest records not acked: at most ``limit``, and no more than ``max_bytes`` of
        them as JSON (the server refuses a request body over 1 MiB, sync.bodylimit); always
        at least one."""
        rows = self.db.all(
            "SELECT body, sig FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
            (self.acked, limit),
        )
        out: list[dict[str, str]] = []
        size = 0
        for r in rows:
            size += len(json.dumps(r["body"], ensure_ascii=False).encode()) + len(r["sig"]) + 20
            if out and size > max_bytes:
                break
            out.append({"body": r["body"], "sig": r["sig"]})
        return out

    def set_acked(self, seq: int) -> None:
        with self._lock:
            if seq <= self._acked:
                return
            if seq > self._head_seq:
                raise JournalError(f"server acked {seq}, beyond the journal head {self._head_seq}")
            drained = int(
                self.db.scalar(
                    "SELECT COALESCE(SUM(amount), 0) FROM journal "
                    "WHERE seq > ? AND seq <= ? AND offline = 1 AND kind = 'sale'",
                    (self._acked, seq),
                )
            )
            with self.db.tx() as tx:
                tx.execute("UPDATE sync_state SET value = ? WHERE key = 'acked'", (seq,))
            self._acked = seq
            self._unsynced_offline -= drained

    def rewind(self, seq: int) -> int:
        """The server's ack fell below ours: it lost records it had acked (its database was
        restored from a backup).  Records are never deleted here, so mark everything after
        ``seq`` unsent again and push it again; the server applies each record once.  Returns
        how many records are queued again."""
        with self._lock:
            if not 0 <= seq < self._acked:
                return 0
            again = int(
                self.db.scalar(
                    "SELECT COALESCE(SUM(amount), 0) FROM journal "
                    "WHERE seq > ? AND seq <= ? AND offline = 1 AND kind = 'sale'",
                    (seq, self._acked),
                )
            )
            with self.db.tx() as tx:
                tx.execute("UPDATE sync_state SET value = ? WHERE key = 'acked'", (seq,))
            queued, self._acked = self._acked - seq, seq
            self._unsynced_offline += again
            return queued

    @property
    def queued(self) -> int:
        with self._lock:
            return self._head_seq - self._acked

    @property
    def unsynced_offline_fen(self) -> int:
        with self._lock:
            return self._unsynced_offline

    # -- queries for offline decisions --------------------------------------------------------
    def account_records(self, account_id: int, after_seq: int) -> list[LocalRecord]:
        """This terminal's records for an account after ``after_seq``, oldest first."""
        return [
            LocalRecord(
                int(r["seq"]),
                str(r["kind"]),
                int(r["amount"]),
                str(r["day"]),
                bool(r["offline"]),
                str(r["pin"]),
            )
            for r in self.db.all(
                "SELECT seq, kind, amount, day, offline, pin FROM journal "
                "WHERE account_id = ? AND seq > ? ORDER BY seq",
                (account_id, after_seq),
            )
        ]

    def card_tries_after(self, account_id: int, after_seq: int, epoch: int) -> int:
        """R5: the wrong consumption passwords this terminal's records after ``after_seq`` left
        on the account's card in the desk's reset ``epoch`` (mod 256), the highest since the
        last right password: each record carries the count the card showed after it, so a
        card put back to fewer tries (an old image) is still counted here."""
        tries = 0
        for r in self.db.all(
            "SELECT kind, pin, body FROM journal WHERE account_id = ? AND seq > ? "
            "AND (kind = 'pin_fail' OR pin = 'ok') ORDER BY seq",
            (account_id, after_seq),
        ):
            if r["kind"] == "sale":  # a right password (a phone's confirmation too)
                tries = 0
                continue
            card = JournalRecord.parse(r["body"]).card_x()
            if card is not None and card.ep == epoch:
                tries = max(tries, card.tries)
        return tries

    def next_order(self) -> int:
        """A new reverse-scan order number, unique on this terminal and across restarts."""
        with self.db.tx() as tx:
            return self._next_order(tx)

    @staticmethod
    def _next_order(tx: Tx) -> int:
        tx.execute(
            "INSERT INTO sync_state (key, value) VALUES ('order', 1) "
            "ON CONFLICT (key) DO UPDATE SET value = sync_state.value + 1"
        )
        return int(tx.scalar("SELECT value FROM sync_state WHERE key = 'order'"))

    def open_order(self, amount: int, make: Callable[[int], str]) -> tuple[int, str]:
        """A new reverse-scan request, kept open until a record closes it (:meth:`append` with
        ``order``): ``make`` builds the request's text for the order number.  The number and
        the open request are durable together before anyone can see the request, so a crash
        at any later instant leaves a request that is open (:meth:`open_orders`) or closed by
        a durable record (docs/security.md)."""
        with self.db.tx() as tx:
            order = self._next_order(tx)
            text = make(order)
            tx.execute(
                "INSERT INTO reverse_orders (order_no, amount, request, created_ms, state) "
                "VALUES (?, ?, ?, ?, 'open')",
                (order, amount, text, self.clock.now_ms()),
            )
        return order, text

    def open_orders(self) -> list[OpenOrder]:
        """The reverse-scan requests shown and not closed by a record, oldest first."""
        return [
            OpenOrder(int(r["order_no"]), int(r["amount"]), str(r["request"]))
            for r in self.db.all(
                "SELECT order_no, amount, request FROM reverse_orders WHERE state = 'open' "
                "ORDER BY order_no"
            )
        ]

    def code_seen(self, serial: int, counter: int) -> int | None:
        """The sequence number of the sale that spent this phone code, or None."""
        seq = self.db.scalar(
            "SELECT seq FROM seen_codes WHERE serial = ? AND counter = ?", (serial, counter)
        )
        return None if seq is None else int(seq)

    def offline_spent_on(self, account_id: int, day: str) -> int:
        return int(
            self.db.scalar(
                "SELECT COALESCE(SUM(amount), 0) FROM journal "
                "WHERE account_id = ? AND day = ? AND offline = 1 AND kind = 'sale'",
                (account_id, day),
            )
        )

    def record(self, seq: int) -> JournalRecord | None:
        """This terminal's record ``seq``, or None."""
        body = self.db.scalar("SELECT body FROM journal WHERE seq = ?", (seq,))
        return None if body is None else JournalRecord.parse(str(body))

    def records(self, first: int, last: int) -> list[JournalRecord]:
        """This terminal's records ``first`` to ``last``, in order."""
        return [
            JournalRecord.parse(str(r["body"]))
            for r in self.db.all(
                "SELECT body FROM journal WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)
            )
        ]

    def refunded(self, sale_seq: int) -> int | None:
        """The sequence number of the refund of sale ``sale_seq`` made here, or None."""
        seq = self.db.scalar("SELECT refund_seq FROM till_refunds WHERE sale_seq = ?", (sale_seq,))
        return None if seq is None else int(seq)

    # -- integrity ----------------------------------------------------------------------------
    def verify(self, public: VerifyKey | None = None) -> int:
        """Walk the whole chain (and every signature); returns the number of records."""
        public = public or self.key.public
        prev, n = protocol.genesis_hash(self.terminal_id), 0
        for r in self.db.all("SELECT seq, hash, body, sig FROM journal ORDER BY seq"):
            n += 1
            body = r["body"].encode()
            rec = JournalRecord.parse(body)
            if r["seq"] != n or rec.seq != n:
                raise JournalError(f"journal has a gap or a reordered record at {n}")
            if rec.prev != prev or protocol.record_hash(body) != r["hash"]:
                raise JournalError(f"journal chain is broken at record {n}")
            if not public.ok(b64d(r["sig"]), body):
                raise JournalError(f"record {n} has a bad signature")
            prev = r["hash"]
        return n
