"""The central server's schema: every migration, in order, in one place."""

from __future__ import annotations

from edge.db import Migrations

MIGRATIONS = Migrations()

MIGRATIONS.add(
    "0001-core",
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE versions (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO versions (name, value) VALUES ('feed', 0);

    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        number TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        id_card TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'normal',
        limit_fen INTEGER NOT NULL,
        query_pw TEXT NOT NULL,
        consume_pw TEXT NOT NULL,
        pin_tries INTEGER NOT NULL DEFAULT 0,
        spent_day TEXT NOT NULL DEFAULT '',
        spent_fen INTEGER NOT NULL DEFAULT 0,
        expires TEXT,
        flags TEXT NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE INDEX accounts_version ON accounts (version);

    CREATE TABLE cards (
        card_no TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        uid TEXT NOT NULL,
        generation INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        issued_ms INTEGER NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE INDEX cards_account ON cards (account_id);
    CREATE INDEX cards_version ON cards (version);

    CREATE TABLE ledger_accounts (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        owner INTEGER,
        balance INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE transfers (
        id TEXT PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        debit TEXT NOT NULL REFERENCES ledger_accounts (id),
        credit TEXT NOT NULL REFERENCES ledger_accounts (id),
        amount INTEGER NOT NULL CHECK (amount > 0),
        kind TEXT NOT NULL,
        account_id INTEGER,
        memo TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX transfers_account ON transfers (account_id, ts_ms);

    CREATE TABLE account_events (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        ts_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX account_events_account ON account_events (account_id, ts_ms);

    CREATE TABLE terminals (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        pubkey TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        head_seq INTEGER NOT NULL DEFAULT 0,
        head_hash TEXT NOT NULL,
        enrolled_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE enroll_tokens (
        token_hash TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        name TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_by TEXT
    );
    CREATE TABLE records (
        terminal_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        body TEXT NOT NULL,
        sig TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (terminal_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE pending_records (
        terminal_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        sig TEXT NOT NULL,
        PRIMARY KEY (terminal_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE holds (
        terminal_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        account_id INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (terminal_id, seq)
    );
    CREATE INDEX holds_account ON holds (account_id);
    CREATE TABLE nonces (
        terminal_id TEXT NOT NULL,
        nonce TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        PRIMARY KEY (terminal_id, nonce)
    ) WITHOUT ROWID;
    CREATE TABLE alarms (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        terminal_id TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    )
    """,
)

MIGRATIONS.add(
    "0002-holder-sessions",
    """
    ALTER TABLE accounts ADD COLUMN query_tries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN query_locked_until_ms INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_account ON sessions (account_id)
    """,
)

MIGRATIONS.add(
    "0003-card-path",
    """
    ALTER TABLE cards ADD COLUMN identity TEXT NOT NULL DEFAULT '';
    ALTER TABLE accounts ADD COLUMN pin_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN card_verifier TEXT
    """,
)
