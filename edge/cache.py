"""The terminal's caches, fed by the server's delta feed: account snapshots (the hotlist is the
``status`` column), cards, wallet certificates and code keys (phone codes), the operators of
the terminal's merchant (with the slow-hash verifier of each PIN, and the wrong tries counted
here), policy.  Kept in their own SQLite file (synchronous=NORMAL): they can
always be pulled again, unlike the journal.

Each account snapshot remembers ``as_of_seq``, this terminal's acked sequence number when the
snapshot was taken, so the terminal adds exactly its own later records on top of it.
"""

from __future__ import annotations

import base64
import json
import operator
import threading
from typing import Any

import msgspec

from sync.db import Database, Migrations, placeholders
from sync.records import (
    UNSET,
    CachedAccount,
    CardRow,
    CodesInfo,
    FeedPage,
    OperatorRow,
    TerminalPolicy,
)

MIGRATIONS = Migrations()
MIGRATIONS.add(
    "0001-cache",
    """
    CREATE TABLE accounts (
        id {id},
        number {text} NOT NULL,
        name {text} NOT NULL,
        type {text} NOT NULL,
        status {text} NOT NULL,
        balance_fen {int} NOT NULL,
        transition_fen {int} NOT NULL,
        limit_fen {int} NOT NULL,
        spent_day {text} NOT NULL,
        spent_fen {int} NOT NULL,
        pin_tries {int} NOT NULL,
        pin_verifier {text} NOT NULL,
        expires {text},
        version {int} NOT NULL,
        as_of_seq {int} NOT NULL
    );
    CREATE TABLE cards (
        card_no {text} PRIMARY KEY,
        account_id {int} NOT NULL,
        uid {text} NOT NULL,
        generation {int} NOT NULL,
        status {text} NOT NULL
    );
    CREATE TABLE meta (key {text} PRIMARY KEY, value {text} NOT NULL)
    """,
)

MIGRATIONS.add(
    "0002-phone-codes",
    """
    CREATE TABLE certs (
        serial {id},
        account_id {int} NOT NULL,
        raw {text} NOT NULL,
        revoked {int} NOT NULL
    )
    """,
)

MIGRATIONS.add(
    "0003-card-path",
    """
    ALTER TABLE accounts ADD COLUMN pin_epoch {int} NOT NULL DEFAULT 0;
    ALTER TABLE cards ADD COLUMN identity {text} NOT NULL DEFAULT ''
    """,
)

# issue 10 item 9: the feed once sent each account's query-password hash as ``pin_verifier``
# (R3: both passwords start equal) and each card's signed identity (with its consumption-password
# verifier) to every terminal; a POS checks the consumption password against the card it reads
# and used neither.  The stored copies are wiped (zeroed in the file: the SQLite backend's
# secure_delete, then Cache scrubs the log), and the cache pulls the feed again from the start:
# a simulated terminal gets the identities back (sync/server/feed.py).
WIPE_VERIFIERS = "0004-no-password-verifiers"
MIGRATIONS.add(
    WIPE_VERIFIERS,
    """
    UPDATE accounts SET pin_verifier = '';
    UPDATE cards SET identity = '';
    DELETE FROM meta WHERE key = 'version'
    """,
)

MIGRATIONS.add(
    "0010-operators",
    """
    CREATE TABLE operators (
        number {text} PRIMARY KEY,
        name {text} NOT NULL,
        role {text} NOT NULL,
        status {text} NOT NULL,
        verifier {text} NOT NULL,
        version {int} NOT NULL
    );
    CREATE TABLE operator_tries (
        number {text} PRIMARY KEY,
        tries {int} NOT NULL,
        locked_until_ms {int} NOT NULL
    )
    """,
)

_ACCOUNT_COLS = (
    "id",
    "number",
    "name",
    "type",
    "status",
    "balance_fen",
    "transition_fen",
    "limit_fen",
    "spent_day",
    "spent_fen",
    "pin_tries",
    "pin_verifier",
    "expires",
    "version",
    "pin_epoch",
)
_CARD_COLS = ("card_no", "account_id", "uid", "generation", "status", "identity")
# a feed page's rows as the UPSERTs take them (one C call a row: a terminal of a busy campus
# applies tens of thousands of account rows a day)
_account_values = operator.attrgetter(*_ACCOUNT_COLS)
_card_row = operator.attrgetter(*_CARD_COLS)
_PIN_AT = _ACCOUNT_COLS.index("pin_verifier")


def _account_row(a: Any, as_of: int) -> list[Any]:
    """An account's row: no password hash is kept, even from a server that sends one."""
    row = list(_account_values(a))
    row[_PIN_AT] = ""
    row.append(as_of)
    return row


def _upsert(table: str, columns: tuple[str, ...], key: str) -> str:
    """INSERT a row, or replace every column of the row with the same ``key``."""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders(len(columns))}) "
        f"ON CONFLICT ({key}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    )


_STORED_ACCOUNT_COLS = (*_ACCOUNT_COLS, "as_of_seq")
UPSERT_ACCOUNT = _upsert("accounts", _STORED_ACCOUNT_COLS, "id")
SELECT_ACCOUNT = f"SELECT {', '.join(_STORED_ACCOUNT_COLS)} FROM accounts WHERE id = ?"
SELECT_CARD = f"SELECT {', '.join(_CARD_COLS)} FROM cards WHERE card_no = ?"
UPSERT_CARD = _upsert("cards", _CARD_COLS, "card_no")
UPSERT_CERT = _upsert("certs", ("serial", "account_id", "raw", "revoked"), "serial")
UPSERT_META = _upsert("meta", ("key", "value"), "key")
_OPERATOR_COLS = ("number", "name", "role", "status", "verifier", "version")
UPSERT_OPERATOR = _upsert("operators", _OPERATOR_COLS, "number")


class Cache:
    def __init__(self, db: Database) -> None:
        self.db = db
        if WIPE_VERIFIERS in db.migrate(MIGRATIONS):
            db.scrub()
        self._lock = threading.Lock()
        self._policy = TerminalPolicy.from_feed(json.loads(self._meta("policy") or "{}"))
        self._codes = msgspec.json.decode(self._meta("codes") or "{}", type=CodesInfo)

    def _meta(self, key: str) -> str | None:
        v = self.db.scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return None if v is None else str(v)

    @property
    def version(self) -> int:
        return int(self._meta("version") or 0)

    @property
    def merchant_name(self) -> str:
        """The name of this terminal's merchant as the feed last said ("": none of its own)."""
        return self._meta("merchant_name") or ""

    @property
    def policy(self) -> TerminalPolicy:
        with self._lock:
            return self._policy

    def apply(self, page: FeedPage) -> int:
        """Store one page of the delta feed; returns the new version."""
        policy = None if page.policy is UNSET else TerminalPolicy.from_feed(page.policy)
        with self.db.tx() as tx:
            if page.reset:
                tx.execute("DELETE FROM accounts")
                tx.execute("DELETE FROM cards")
                tx.execute("DELETE FROM certs")
                tx.execute("DELETE FROM operators")
            tx.executemany(  # no password hash is kept, even from a server that sends one
                UPSERT_ACCOUNT,
                [_account_row(a, page.ack) for a in page.accounts],
            )
            tx.executemany(
                UPSERT_CARD,
                [_card_row(c) for c in page.cards],
            )
            tx.executemany(
                UPSERT_CERT,
                [(c.serial, c.account_id, c.raw, int(c.revoked)) for c in page.certs],
            )
            tx.executemany(
                UPSERT_OPERATOR,
                [tuple(getattr(o, n) for n in _OPERATOR_COLS) for o in page.operators],
            )
            meta = {"version": str(page.version)}
            if page.codes is not UNSET:
                meta["codes"] = msgspec.json.encode(page.codes).decode()
            if page.policy is not UNSET:
                meta["policy"] = json.dumps(page.policy)
            for key in ("campus_id", "tz", "merchant_name"):
                value = getattr(page, key)
                if value is not UNSET:
                    meta[key] = str(value)
            tx.executemany(UPSERT_META, list(meta.items()))
        with self._lock:
            if policy is not None:
                self._policy = policy
            if page.codes is not UNSET:
                self._codes = page.codes
        return page.version

    @property
    def codes(self) -> CodesInfo:
        """Phone-code parameters from the feed: campus tag, issuer keys, proof key, window."""
        with self._lock:
            return self._codes

    def cert(self, serial: int) -> tuple[bytes, bool] | None:
        """A wallet certificate (its bytes, revoked?) as the feed delivered it."""
        row = self.db.one("SELECT raw, revoked FROM certs WHERE serial = ?", (serial,))
        if row is None:
            return None
        return base64.b64decode(row["raw"]), bool(row["revoked"])

    def card(self, card_no: str) -> CardRow | None:
        row = self.db.one(SELECT_CARD, (card_no,))
        return None if row is None else CardRow(**{n: row[n] for n in _CARD_COLS})

    def account(self, account_id: int) -> CachedAccount | None:
        row = self.db.one(SELECT_ACCOUNT, (account_id,))
        return None if row is None else CachedAccount(**{c: row[c] for c in _STORED_ACCOUNT_COLS})

    def operator(self, number: str) -> OperatorRow | None:
        """An operator of this terminal's merchant, as the feed last said."""
        row = self.db.one(
            "SELECT number, name, role, status, verifier, version FROM operators WHERE number = ?",
            (number,),
        )
        return None if row is None else OperatorRow(**{n: row[n] for n in _OPERATOR_COLS})

    def has_operators(self) -> bool:
        """Whether this terminal's merchant has operators (then the POS sells only with a
        signed-in cashier)."""
        return self.db.scalar("SELECT 1 FROM operators LIMIT 1") is not None

    def operator_tries(self, number: str) -> tuple[int, int]:
        """(wrong PINs in a row, locked until) of an operator on this terminal."""
        row = self.db.one(
            "SELECT tries, locked_until_ms FROM operator_tries WHERE number = ?", (number,)
        )
        return (0, 0) if row is None else (int(row["tries"]), int(row["locked_until_ms"]))

    def set_operator_tries(self, number: str, tries: int, locked_until_ms: int) -> None:
        with self.db.tx() as tx:
            tx.execute(
                _upsert("operator_tries", ("number", "tries", "locked_until_ms"), "number"),
                (number, tries, locked_until_ms),
            )

    def counts(self) -> dict[str, int]:
        return {
            "operators": int(self.db.scalar("SELECT COUNT(*) FROM operators")),
            "accounts": int(self.db.scalar("SELECT COUNT(*) FROM accounts")),
            "cards": int(self.db.scalar("SELECT COUNT(*) FROM cards")),
            "certs": int(self.db.scalar("SELECT COUNT(*) FROM certs")),
        }
