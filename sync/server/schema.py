"""The central server's schema: every migration, in order, in one place."""

from __future__ import annotations

import base64
import json
import secrets

from sync.db import Migrations, Tx

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
    "0003-holder-and-desk-business",
    """
    CREATE TABLE staff (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL DEFAULT 'active',
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_ts ON audit (ts_ms);
    CREATE TABLE rate_limits (
        key TEXT PRIMARY KEY,
        window_start_ms INTEGER NOT NULL,
        hits INTEGER NOT NULL
    );
    CREATE TABLE buildings (
        code TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE rooms (
        building TEXT NOT NULL REFERENCES buildings (code),
        room TEXT NOT NULL,
        PRIMARY KEY (building, room)
    );
    CREATE TABLE found_cards (
        id INTEGER PRIMARY KEY,
        card_no TEXT NOT NULL,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        place TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        finder TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'open'
    );
    CREATE INDEX found_cards_account ON found_cards (account_id);
    CREATE TABLE reissue_orders (
        order_id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        via TEXT NOT NULL,
        actor TEXT NOT NULL,
        card_no TEXT NOT NULL,
        fee_fen INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        done_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE refunds (
        transfer_id TEXT PRIMARY KEY REFERENCES transfers (id),
        original TEXT NOT NULL REFERENCES transfers (id),
        amount INTEGER NOT NULL,
        reason TEXT NOT NULL,
        request_id TEXT UNIQUE,
        actor TEXT NOT NULL,
        ts_ms INTEGER NOT NULL
    );
    CREATE INDEX refunds_original ON refunds (original);
    CREATE TABLE sso_states (
        state_hash TEXT PRIMARY KEY,
        nonce TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        used INTEGER NOT NULL DEFAULT 0
    )
    """,
)


def _card_tag_key(tx: Tx) -> None:
    """The server's secret for card proof tags (sync.server.cardproof), made once per
    database."""
    tx.execute(
        "INSERT INTO settings (key, value) VALUES ('card_tag_key', ?) ON CONFLICT (key) DO NOTHING",
        (json.dumps(base64.b64encode(secrets.token_bytes(32)).decode()),),
    )


MIGRATIONS.add_fn("0004-card-tag-key", _card_tag_key)

MIGRATIONS.add(
    "0005-hold-pin",
    """
    ALTER TABLE holds ADD COLUMN pin_ok INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE holds ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0
    """,
)

MIGRATIONS.add(
    "0006-phone-codes",
    """
    CREATE TABLE wallet_certs (
        serial INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        session_hash TEXT,
        pubkey TEXT NOT NULL,
        raw TEXT NOT NULL,
        not_after_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL
    );
    CREATE INDEX wallet_certs_version ON wallet_certs (version);
    CREATE INDEX wallet_certs_session ON wallet_certs (session_hash);
    CREATE TABLE code_uses (
        serial INTEGER NOT NULL,
        counter INTEGER NOT NULL,
        kind TEXT NOT NULL,
        terminal_id TEXT,
        seq INTEGER,
        ts_ms INTEGER NOT NULL,
        PRIMARY KEY (serial, counter)
    );
    CREATE TABLE reverse_payments (
        id INTEGER PRIMARY KEY,
        terminal_id TEXT NOT NULL,
        order_no INTEGER NOT NULL,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        amount INTEGER NOT NULL,
        request TEXT NOT NULL,
        transfer_id TEXT NOT NULL,
        paid_ms INTEGER NOT NULL,
        journal_seq INTEGER,
        UNIQUE (terminal_id, order_no)
    );
    CREATE TABLE confirmations (
        grant_hash TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id),
        expires_ms INTEGER NOT NULL,
        used INTEGER NOT NULL DEFAULT 0
    )
    """,
)

MIGRATIONS.add(
    "0007-card-path",
    """
    ALTER TABLE cards ADD COLUMN identity TEXT NOT NULL DEFAULT '';
    ALTER TABLE accounts ADD COLUMN pin_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN card_verifier TEXT
    """,
)
