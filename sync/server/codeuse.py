"""Phone-code sales arriving in terminal journals (called by :mod:`sync.server.ingest`).

``qr-forward``
    The record names the code (``cred`` = ``qr:<cert serial>:<counter>``, ``x.code`` = its
    text).  The server re-checks the phone's signature and claims the code in its seen-set
    ``code_uses``.  A code already claimed by another sale (two offline terminals, or one
    offline terminal and an online one) is a double spend: the sale is applied as recorded and
    then reversed by a new correcting transfer, and the account is flagged and, by the R12
    policy ``auto_freeze_double_spend``, frozen.  A code that is not genuine (the phone's
    signature fails: a faulty or tampered terminal) is reversed the same way and raised as an
    alarm, without blaming the account.  A record that names no phone code is applied as the
    terminal recorded it (the terminal vouches for it, as for a card sale).
``qr-reverse``
    The money moved when the phone paid (:mod:`sync.server.reverse`); the record is linked to
    that payment through ``x.order`` and moves nothing.  A record without a payment is an
    alarm (the terminal accepted a proof the server never gave).
"""

from __future__ import annotations

from sync import codes
from sync.bounds import parse_id
from sync.crypto import VerifyKey
from sync.db import Tx
from sync.errors import CodeError, ProtocolError
from sync.records import JournalRecord


def _parse_cred(cred: str) -> tuple[int, int] | None:
    parts = cred.split(":")
    if len(parts) != 3 or parts[0] != "qr":
        return None
    serial, counter = parse_id(parts[1]), parse_id(parts[2])  # sync.bounds: ASCII, in range
    return None if serial is None or counter is None else (serial, counter)


def forward_problem(tx: Tx, tid: str, seq: int, rec: JournalRecord, now_ms: int) -> str | None:
    """Claim the code of a qr-forward sale; ``None`` when this sale may keep its charge, else
    why the charge is reversed (``double_spend: …`` or ``bad_code: …``)."""
    ids = _parse_cred(rec.cred)
    if ids is None:  # names no phone code: applied as the terminal recorded it, like a card sale
        return None
    serial, counter = ids
    text = rec.x_value("code")
    try:
        if not isinstance(text, str):
            raise CodeError("garbage", "the record does not carry the code")
        code = codes.parse_code(codes.unpack_text(text), (codes.Kind.PAY,))
        if (code.serial, code.counter) != (serial, counter):
            raise CodeError("forged", "the code is not the one the credential names")
        row = tx.one("SELECT account_id, pubkey FROM wallet_certs WHERE serial = ?", (serial,))
        if row is None:
            raise CodeError("unknown_cert", f"no wallet certificate {serial}")
        if row["account_id"] != rec.acct:
            raise CodeError("forged", "the code pays another account")
        if not VerifyKey.from_b64(row["pubkey"]).ok(code.sig, code.signed):
            raise CodeError("forged", "the code's signature does not verify")
    except (CodeError, ProtocolError) as exc:
        return f"bad_code: {exc}"
    used = tx.one(
        "SELECT terminal_id, seq FROM code_uses WHERE serial = ? AND counter = ?",
        (serial, counter),
    )
    if used is None:
        tx.execute(
            "INSERT INTO code_uses (serial, counter, kind, terminal_id, seq, ts_ms) "
            "VALUES (?, ?, 'pay', ?, ?, ?)",
            (serial, counter, tid, seq, now_ms),
        )
        return None
    if (used["terminal_id"], used["seq"]) == (tid, seq):
        return None
    where = f"{used['terminal_id']}:{used['seq']}" if used["terminal_id"] else "a gate"
    return f"double_spend: code {serial}:{counter} was already used at {where}"


def reverse_problem(tx: Tx, tid: str, seq: int, rec: JournalRecord) -> str | None:
    """Link a qr-reverse record to the payment the phone made; ``None`` when it matches."""
    order = rec.x_value("order")
    if not isinstance(order, int) or isinstance(order, bool):
        return "the qr-reverse record names no order"
    row = tx.one(
        "SELECT id, amount, journal_seq FROM reverse_payments "
        "WHERE terminal_id = ? AND order_no = ?",
        (tid, order),
    )
    if row is None:
        return f"order {order} was never paid by a phone, but the terminal accepted a proof"
    if row["amount"] != rec.amt:
        return f"order {order} was paid {row['amount']} fen, the record says {rec.amt}"
    if row["journal_seq"] is not None and row["journal_seq"] != seq:
        return f"order {order} is already journaled as record {row['journal_seq']}"
    tx.execute("UPDATE reverse_payments SET journal_seq = ? WHERE id = ?", (seq, row["id"]))
    return None
