"""Phone-code sales arriving in terminal journals (called by :mod:`sync.server.ingest`).

``qr-forward``
    The record names the code (``cred`` = ``qr:<cert serial>:<counter>``, ``x.code`` = its
    text).  The server re-checks the phone's signature and claims the code in its seen-set
    ``code_uses``.  A code already claimed by another *journaled* sale (two offline terminals,
    or one offline terminal and an online one whose record has synced) is a double spend: the
    sale is applied as recorded and then reversed by a new correcting transfer, the account is
    flagged ``double_spend`` and an alarm raised for the desk.  The account is not frozen: the
    same code at two tills is also what a screenshot of the holder's code replayed by someone
    else looks like, so it is no evidence against the holder (R12, docs/security.md).  A code
    that is not genuine (the phone's signature fails: a faulty or tampered terminal) is
    reversed the same way and raised as an alarm, without blaming the account.  A record that
    names no phone code is applied as the terminal recorded it (the terminal vouches for it,
    as for a card sale).

    A claim made by an online authorization is *provisional* until the record at that
    terminal's sequence number syncs: the terminal may have crashed before journaling the sale
    (then it reuses the number for another record, and the claim is released:
    :func:`sync.server.authorize.release`).  A journaled sale that meets a provisional claim
    takes the code over; if the authorized sale is journaled after all, it is the one found
    double-spent when it syncs.  So a sale that was never journaled never makes another one a
    double spend.
``qr-reverse``
    The money moved when the phone paid (:mod:`sync.server.reverse`); the record is linked to
    that payment (:mod:`sync.server.reconcile`) and moves nothing.
"""

from __future__ import annotations

from sync import codes
from sync.bounds import parse_id
from sync.crypto import VerifyKey
from sync.db import Tx
from sync.errors import CodeError, ProtocolError
from sync.records import JournalRecord


def code_ids(cred: str) -> tuple[int, int] | None:
    """(certificate serial, counter) of a ``qr:<serial>:<counter>`` credential, or None."""
    return _parse_cred(cred)


def _parse_cred(cred: str) -> tuple[int, int] | None:
    parts = cred.split(":")
    if len(parts) != 3 or parts[0] != "qr":
        return None
    serial, counter = parse_id(parts[1]), parse_id(parts[2])  # sync.bounds: ASCII, in range
    return None if serial is None or counter is None else (serial, counter)


def forward_problem(
    tx: Tx, tid: str, seq: int, rec: JournalRecord, now_ms: int, run_last: int
) -> str | None:
    """Claim the code of a qr-forward sale; ``None`` when this sale may keep its charge, else
    why the charge is reversed (``double_spend: …`` or ``bad_code: …``).  ``run_last`` is the
    last sequence number of the run being applied (terminal ``tid``'s head once it commits)."""
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
    if _provisional(tx, used["terminal_id"], used["seq"], tid, run_last):
        # an online approval whose record has not synced (and may never exist): this
        # journaled sale takes the code; the other is the double spend if it syncs after all
        tx.execute(
            "UPDATE code_uses SET terminal_id = ?, seq = ?, ts_ms = ? "
            "WHERE serial = ? AND counter = ?",
            (tid, seq, now_ms, serial, counter),
        )
        return None
    where = f"{used['terminal_id']}:{used['seq']}" if used["terminal_id"] else "a gate"
    return f"double_spend: code {serial}:{counter} was already used at {where}"


def _provisional(tx: Tx, claim_tid: str | None, claim_seq: int | None, tid: str, last: int) -> bool:
    """Whether a claim on a code was made by an online authorization whose record has not
    synced: its sequence number lies beyond its terminal's synced head."""
    if claim_tid is None or claim_seq is None:  # a gate admitted it (an authentication code)
        return False
    if claim_tid == tid:
        return bool(claim_seq > last)
    head = tx.scalar("SELECT head_seq FROM terminals WHERE id = ?", (claim_tid,))
    return head is not None and claim_seq > int(head)
