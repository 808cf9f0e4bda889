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
    CREATE TABLE settings (key {text} PRIMARY KEY, value {text} NOT NULL);
    CREATE TABLE versions (name {text} PRIMARY KEY, value {int} NOT NULL);
    INSERT INTO versions (name, value) VALUES ('feed', 0);

    CREATE TABLE accounts (
        id {id},
        number {text} NOT NULL UNIQUE,
        name {text} NOT NULL,
        type {text} NOT NULL,
        id_card {text} NOT NULL,
        status {text} NOT NULL DEFAULT 'normal',
        limit_fen {int} NOT NULL,
        query_pw {text} NOT NULL,
        consume_pw {text} NOT NULL,
        pin_tries {int} NOT NULL DEFAULT 0,
        spent_day {text} NOT NULL DEFAULT '',
        spent_fen {int} NOT NULL DEFAULT 0,
        expires {text},
        flags {text} NOT NULL DEFAULT '',
        created_ms {int} NOT NULL,
        version {int} NOT NULL
    );
    CREATE INDEX accounts_version ON accounts (version);

    CREATE TABLE cards (
        card_no {text} PRIMARY KEY,
        account_id {int} NOT NULL REFERENCES accounts (id),
        uid {text} NOT NULL,
        generation {int} NOT NULL,
        status {text} NOT NULL DEFAULT 'active',
        issued_ms {int} NOT NULL,
        version {int} NOT NULL
    );
    CREATE INDEX cards_account ON cards (account_id);
    CREATE INDEX cards_version ON cards (version);

    CREATE TABLE ledger_accounts (
        id {text} PRIMARY KEY,
        kind {text} NOT NULL,
        owner {int},
        balance {int} NOT NULL DEFAULT 0
    );
    CREATE TABLE transfers (
        id {text} PRIMARY KEY,
        ts_ms {int} NOT NULL,
        debit {text} NOT NULL REFERENCES ledger_accounts (id),
        credit {text} NOT NULL REFERENCES ledger_accounts (id),
        amount {int} NOT NULL CHECK (amount > 0),
        kind {text} NOT NULL,
        account_id {int},
        memo {text} NOT NULL DEFAULT ''
    );
    CREATE INDEX transfers_account ON transfers (account_id, ts_ms);

    CREATE TABLE account_events (
        id {id},
        account_id {int} NOT NULL REFERENCES accounts (id),
        ts_ms {int} NOT NULL,
        kind {text} NOT NULL,
        detail {text} NOT NULL DEFAULT '',
        actor {text} NOT NULL DEFAULT ''
    );
    CREATE INDEX account_events_account ON account_events (account_id, ts_ms);

    CREATE TABLE terminals (
        id {text} PRIMARY KEY,
        name {text} NOT NULL,
        role {text} NOT NULL,
        pubkey {text} NOT NULL,
        status {text} NOT NULL DEFAULT 'active',
        head_seq {int} NOT NULL DEFAULT 0,
        head_hash {text} NOT NULL,
        enrolled_ms {int} NOT NULL,
        last_seen_ms {int} NOT NULL DEFAULT 0
    );
    CREATE TABLE enroll_tokens (
        token_hash {text} PRIMARY KEY,
        role {text} NOT NULL,
        name {text} NOT NULL,
        created_ms {int} NOT NULL,
        expires_ms {int} NOT NULL,
        used_by {text}
    );
    CREATE TABLE records (
        terminal_id {text} NOT NULL,
        seq {int} NOT NULL,
        hash {text} NOT NULL,
        body {text} NOT NULL,
        sig {text} NOT NULL,
        received_ms {int} NOT NULL,
        PRIMARY KEY (terminal_id, seq)
    ) {without_rowid};
    CREATE TABLE pending_records (
        terminal_id {text} NOT NULL,
        seq {int} NOT NULL,
        body {text} NOT NULL,
        sig {text} NOT NULL,
        PRIMARY KEY (terminal_id, seq)
    ) {without_rowid};
    CREATE TABLE holds (
        terminal_id {text} NOT NULL,
        seq {int} NOT NULL,
        account_id {int} NOT NULL,
        amount {int} NOT NULL,
        expires_ms {int} NOT NULL,
        PRIMARY KEY (terminal_id, seq)
    );
    CREATE INDEX holds_account ON holds (account_id);
    CREATE TABLE nonces (
        terminal_id {text} NOT NULL,
        nonce {text} NOT NULL,
        ts_ms {int} NOT NULL,
        PRIMARY KEY (terminal_id, nonce)
    ) {without_rowid};
    CREATE TABLE alarms (
        id {id},
        ts_ms {int} NOT NULL,
        terminal_id {text},
        kind {text} NOT NULL,
        detail {text} NOT NULL
    )
    """,
)

MIGRATIONS.add(
    "0002-holder-sessions",
    """
    ALTER TABLE accounts ADD COLUMN query_tries {int} NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN query_locked_until_ms {int} NOT NULL DEFAULT 0;
    CREATE TABLE sessions (
        token_hash {text} PRIMARY KEY,
        account_id {int} NOT NULL REFERENCES accounts (id),
        created_ms {int} NOT NULL,
        expires_ms {int} NOT NULL,
        revoked {int} NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_account ON sessions (account_id)
    """,
)

MIGRATIONS.add(
    "0003-holder-and-desk-business",
    """
    CREATE TABLE staff (
        name {text} PRIMARY KEY,
        role {text} NOT NULL,
        token_hash {text} NOT NULL UNIQUE,
        status {text} NOT NULL DEFAULT 'active',
        created_ms {int} NOT NULL,
        created_by {text} NOT NULL
    );
    CREATE TABLE audit (
        id {id},
        ts_ms {int} NOT NULL,
        actor {text} NOT NULL,
        role {text} NOT NULL,
        action {text} NOT NULL,
        target {text} NOT NULL DEFAULT '',
        outcome {text} NOT NULL,
        detail {text} NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_ts ON audit (ts_ms);
    CREATE TABLE rate_limits (
        key {text} PRIMARY KEY,
        window_start_ms {int} NOT NULL,
        hits {int} NOT NULL
    );
    CREATE TABLE buildings (
        code {text} PRIMARY KEY,
        name {text} NOT NULL,
        created_ms {int} NOT NULL
    );
    CREATE TABLE rooms (
        building {text} NOT NULL REFERENCES buildings (code),
        room {text} NOT NULL,
        PRIMARY KEY (building, room)
    );
    CREATE TABLE found_cards (
        id {id},
        card_no {text} NOT NULL,
        account_id {int} NOT NULL REFERENCES accounts (id),
        place {text} NOT NULL,
        note {text} NOT NULL DEFAULT '',
        finder {text} NOT NULL,
        ts_ms {int} NOT NULL,
        status {text} NOT NULL DEFAULT 'open'
    );
    CREATE INDEX found_cards_account ON found_cards (account_id);
    CREATE TABLE reissue_orders (
        order_id {text} PRIMARY KEY,
        account_id {int} NOT NULL REFERENCES accounts (id),
        via {text} NOT NULL,
        actor {text} NOT NULL,
        card_no {text} NOT NULL,
        fee_fen {int} NOT NULL,
        status {text} NOT NULL,
        created_ms {int} NOT NULL,
        done_ms {int} NOT NULL DEFAULT 0
    );
    CREATE TABLE refunds (
        transfer_id {text} PRIMARY KEY REFERENCES transfers (id),
        original {text} NOT NULL REFERENCES transfers (id),
        amount {int} NOT NULL,
        reason {text} NOT NULL,
        request_id {text} UNIQUE,
        actor {text} NOT NULL,
        ts_ms {int} NOT NULL
    );
    CREATE INDEX refunds_original ON refunds (original);
    CREATE TABLE sso_states (
        state_hash {text} PRIMARY KEY,
        nonce {text} NOT NULL,
        redirect_uri {text} NOT NULL,
        expires_ms {int} NOT NULL,
        used {int} NOT NULL DEFAULT 0
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
    ALTER TABLE holds ADD COLUMN pin_ok {int} NOT NULL DEFAULT 0;
    ALTER TABLE holds ADD COLUMN created_ms {int} NOT NULL DEFAULT 0
    """,
)

MIGRATIONS.add(
    "0006-phone-codes",
    """
    CREATE TABLE wallet_certs (
        serial {id},
        account_id {int} NOT NULL REFERENCES accounts (id),
        session_hash {text},
        pubkey {text} NOT NULL,
        raw {text} NOT NULL,
        not_after_ms {int} NOT NULL,
        created_ms {int} NOT NULL,
        revoked {int} NOT NULL DEFAULT 0,
        version {int} NOT NULL
    );
    CREATE INDEX wallet_certs_version ON wallet_certs (version);
    CREATE INDEX wallet_certs_session ON wallet_certs (session_hash);
    CREATE TABLE code_uses (
        serial {int} NOT NULL,
        counter {int} NOT NULL,
        kind {text} NOT NULL,
        terminal_id {text},
        seq {int},
        ts_ms {int} NOT NULL,
        PRIMARY KEY (serial, counter)
    );
    CREATE TABLE reverse_payments (
        id {id},
        terminal_id {text} NOT NULL,
        order_no {int} NOT NULL,
        account_id {int} NOT NULL REFERENCES accounts (id),
        amount {int} NOT NULL,
        request {text} NOT NULL,
        transfer_id {text} NOT NULL,
        paid_ms {int} NOT NULL,
        journal_seq {int},
        UNIQUE (terminal_id, order_no)
    );
    CREATE TABLE confirmations (
        grant_hash {text} PRIMARY KEY,
        account_id {int} NOT NULL REFERENCES accounts (id),
        expires_ms {int} NOT NULL,
        used {int} NOT NULL DEFAULT 0
    )
    """,
)

MIGRATIONS.add(
    "0007-card-path",
    """
    ALTER TABLE cards ADD COLUMN identity {text} NOT NULL DEFAULT '';
    ALTER TABLE accounts ADD COLUMN pin_epoch {int} NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN card_verifier {text}
    """,
)

MIGRATIONS.add(
    "0008-topup-orders",
    """
    CREATE TABLE paygates (
        channel {text} PRIMARY KEY,
        url {text} NOT NULL,
        public_key {text} NOT NULL,
        notify_url {text} NOT NULL,
        updated_ms {int} NOT NULL,
        actor {text} NOT NULL
    );
    CREATE TABLE topup_orders (
        order_id {text} PRIMARY KEY,
        account_id {int} NOT NULL REFERENCES accounts (id),
        channel {text} NOT NULL,
        amount {int} NOT NULL CHECK (amount > 0),
        currency {text} NOT NULL,
        request_id {text},
        status {text} NOT NULL,
        created_ms {int} NOT NULL,
        expires_ms {int} NOT NULL,
        txn_id {text},
        paid_ms {int},
        credited_ms {int},
        transfer_id {text},
        problem {text} NOT NULL DEFAULT '',
        UNIQUE (account_id, request_id),
        UNIQUE (channel, txn_id)
    );
    CREATE INDEX topup_orders_paid ON topup_orders (paid_ms);
    CREATE INDEX topup_orders_open ON topup_orders (status, expires_ms);
    CREATE TABLE paygate_notices (
        id {id},
        channel {text} NOT NULL,
        order_id {text} NOT NULL,
        txn_id {text} NOT NULL,
        amount {int} NOT NULL,
        currency {text} NOT NULL,
        paid_ms {int} NOT NULL,
        received_ms {int} NOT NULL,
        outcome {text} NOT NULL,
        body {text} NOT NULL
    );
    CREATE INDEX paygate_notices_paid ON paygate_notices (paid_ms);
    CREATE INDEX paygate_notices_txn ON paygate_notices (channel, txn_id)
    """,
)

MIGRATIONS.add(
    "0009-held-money",
    """
    ALTER TABLE reverse_payments ADD COLUMN refund_id {text};
    CREATE INDEX reverse_payments_account ON reverse_payments (account_id);
    CREATE INDEX reverse_payments_open ON reverse_payments (paid_ms)
        WHERE journal_seq IS NULL AND refund_id IS NULL;
    CREATE TABLE reverse_voids (
        terminal_id {text} NOT NULL,
        order_no {int} NOT NULL,
        seq {int} NOT NULL,
        ts_ms {int} NOT NULL,
        PRIMARY KEY (terminal_id, order_no)
    );
    CREATE INDEX code_uses_terminal ON code_uses (terminal_id, seq);
    ALTER TABLE confirmations ADD COLUMN serial {int};
    ALTER TABLE confirmations ADD COLUMN counter {int}
    """,
)

# issue 10: wrong query passwords are counted before the check (sync/server/holders.py); tries
# are forgotten a while after the last one, and unknown numbers are counted and locked like
# known ones (query_guard), so the answers do not tell which numbers exist.  A terminal enrolled
# as simulated (tests, demos: sim:// readers) is the only one the feed sends the cards' signed
# identities, which hold the consumption-password verifiers (sync/server/feed.py).
MIGRATIONS.add(
    "0010-trust-ident",
    """
    ALTER TABLE accounts ADD COLUMN query_tried_ms {int} NOT NULL DEFAULT 0;
    ALTER TABLE enroll_tokens ADD COLUMN simulated {int} NOT NULL DEFAULT 0;
    ALTER TABLE terminals ADD COLUMN simulated {int} NOT NULL DEFAULT 0;
    CREATE TABLE query_guard (
        subject {text} PRIMARY KEY,
        tries {int} NOT NULL,
        locked_until_ms {int} NOT NULL,
        tried_ms {int} NOT NULL
    );
    CREATE INDEX query_guard_tried ON query_guard (tried_ms)
    """,
)

MIGRATIONS.add(
    "0011-card-marks",
    """
    ALTER TABLE cards ADD COLUMN taps_seen {int} NOT NULL DEFAULT 0;
    CREATE TABLE card_marks (
        card_no {text} NOT NULL,
        taps {int} NOT NULL,
        mark {text} NOT NULL,
        terminal_id {text} NOT NULL,
        seq {int} NOT NULL,
        PRIMARY KEY (card_no, taps, mark)
    ) {without_rowid}
    """,
)


def _card_marks_of_earlier_records(tx: Tx) -> None:
    """The marks of the card records synced before 0011 (sync.server.cardrisk), so a card put
    back to a state of before the upgrade is seen too.  Read here from the stored bodies as
    they were written then (``cred`` ``card:<number>:<UID>``, ``x.card`` taps/tries/ep)."""
    marks: dict[tuple[str, int, str], tuple[str, int]] = {}
    seen: dict[str, int] = {}
    for t in [r["terminal_id"] for r in tx.all("SELECT DISTINCT terminal_id FROM records")]:
        last = 0
        while True:
            rows = tx.all(
                "SELECT seq, body FROM records WHERE terminal_id = ? AND seq > ? "
                "ORDER BY seq LIMIT 5000",
                (t, last),
            )
            if not rows:
                break
            last = int(rows[-1]["seq"])
            for r in rows:
                if '"card":{' not in r["body"]:
                    continue
                rec = json.loads(r["body"])
                card, cred = (rec.get("x") or {}).get("card"), str(rec.get("cred", ""))
                number, sep, _uid = cred[5:].rpartition(":")
                if not (cred.startswith("card:") and sep and number and isinstance(card, dict)):
                    continue
                taps = card.get("taps")
                if rec.get("method") != "card" or not isinstance(taps, int):
                    continue
                if rec.get("kind") == "sale":
                    mark = "sale"
                    seen[number] = max(seen.get(number, 0), taps)
                elif rec.get("kind") == "pin_fail":
                    mark = f"pin:{card.get('ep')}:{card.get('tries')}"
                else:
                    continue
                marks.setdefault((number, taps, mark), (t, int(r["seq"])))
    tx.insert_rows(
        "card_marks",
        ("card_no", "taps", "mark", "terminal_id", "seq"),
        [(*k, *v) for k, v in sorted(marks.items())],
    )
    tx.executemany(
        "UPDATE cards SET taps_seen = ? WHERE card_no = ?", sorted((n, c) for c, n in seen.items())
    )


MIGRATIONS.add_fn("0012-card-marks-of-earlier-records", _card_marks_of_earlier_records)

MIGRATIONS.add(
    "0013-merchants-operators-shifts",
    """
    CREATE TABLE merchants (
        code {text} PRIMARY KEY,
        name {text} NOT NULL,
        created_ms {int} NOT NULL
    );
    INSERT INTO merchants (code, name, created_ms) VALUES ('DEFAULT', '默认商户', 0);
    INSERT INTO ledger_accounts (id, kind) VALUES ('mc:DEFAULT', 'merchant');
    ALTER TABLE terminals ADD COLUMN merchant {text} NOT NULL DEFAULT 'DEFAULT';
    ALTER TABLE terminals ADD COLUMN reported_head {int} NOT NULL DEFAULT 0;
    ALTER TABLE terminals ADD COLUMN reported_ms {int} NOT NULL DEFAULT 0;
    ALTER TABLE enroll_tokens ADD COLUMN merchant {text} NOT NULL DEFAULT 'DEFAULT';
    CREATE TABLE operators (
        number {text} PRIMARY KEY,
        merchant {text} NOT NULL REFERENCES merchants (code),
        name {text} NOT NULL,
        role {text} NOT NULL,
        pin_hash {text} NOT NULL,
        verifier {text} NOT NULL,
        status {text} NOT NULL DEFAULT 'active',
        disabled_ms {int} NOT NULL DEFAULT 0,
        created_ms {int} NOT NULL,
        version {int} NOT NULL
    );
    CREATE INDEX operators_version ON operators (merchant, version);
    CREATE TABLE pos_refunds (
        terminal_id {text} NOT NULL,
        seq {int} NOT NULL,
        sale_seq {int} NOT NULL,
        transfer_id {text} NOT NULL,
        amount {int} NOT NULL,
        supervisor {text} NOT NULL,
        operator {text} NOT NULL,
        ts_ms {int} NOT NULL,
        PRIMARY KEY (terminal_id, seq)
    );
    CREATE UNIQUE INDEX pos_refunds_sale ON pos_refunds (terminal_id, sale_seq);
    CREATE TABLE shift_reports (
        terminal_id {text} NOT NULL,
        shift_no {int} NOT NULL,
        operator {text} NOT NULL,
        opened_ms {int} NOT NULL,
        closed_ms {int} NOT NULL,
        report {text} NOT NULL,
        received_ms {int} NOT NULL,
        PRIMARY KEY (terminal_id, shift_no)
    )
    """,
)


def _transfers_checked_by_the_ledger(tx: Tx) -> None:
    """PostgreSQL checks a foreign key row by row: the two of ``transfers`` (debit and credit
    name a ledger account) cost more than the rest of a journal batch's ingest together (two
    checks per transfer, a thousand per batch).  :func:`sync.server.ledger.apply_many`, the
    one writer of ``transfers``, checks the same thing with the statement it runs anyway: its
    set-based UPDATE of the balances must find every ledger account it names, or the
    transaction fails.  Ledger accounts are never deleted.  SQLite checks a foreign key in
    process, for little: there the constraints stay (a table rebuild would buy nothing)."""
    if tx.dialect != "postgresql":
        return
    tx.execute("ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_debit_fkey")
    tx.execute("ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_credit_fkey")


MIGRATIONS.add_fn("0014-transfers-checked-by-the-ledger", _transfers_checked_by_the_ledger)
