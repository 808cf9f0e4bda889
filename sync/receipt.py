"""The QR code on a receipt: what the terminal signed about one of its journal records, so that
anyone can check a paper receipt offline (``ykt verify-receipt``) with the terminal's public
key (docs/protocol.md, "Receipts").

The text is ``YKTR1|term|seq|kind|method|amt|bal|ts|hash|sig``: the terminal, the record's
sequence number, kind (``sale``), method, amount and balance after (fen; ``-`` when unknown),
time (epoch ms), the first 32 hex digits of the record's hash (SHA-256 of its signed body, as
the server stores it), then the terminal's Ed25519 signature (base64url, no padding) over
everything before the last ``|``.  Every field printed on the receipt is in it, so a receipt
whose amount, balance, time or number was changed no longer matches its signature.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from sync.crypto import SigningKey, VerifyKey
from sync.errors import ProtocolError
from sync.records import JournalRecord

PREFIX = "YKTR1"
HASH_CHARS = 32
_INT = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_TERM = re.compile(r"^[\w.:-]{1,64}$")
_HASH = re.compile(f"[0-9a-f]{{{HASH_CHARS}}}")


@dataclass(frozen=True)
class ReceiptFacts:
    term: str
    seq: int
    kind: str
    method: str
    amt: int
    bal: int | None
    ts: int
    hash: str  # the first HASH_CHARS hex digits of the record's hash

    def message(self) -> bytes:
        bal = "-" if self.bal is None else str(self.bal)
        return "|".join(
            (
                PREFIX,
                self.term,
                str(self.seq),
                self.kind,
                self.method,
                str(self.amt),
                bal,
                str(self.ts),
                self.hash,
            )
        ).encode()


def facts_of(rec: JournalRecord, record_hash: str) -> ReceiptFacts:
    return ReceiptFacts(
        rec.term,
        rec.seq,
        rec.kind,
        rec.method,
        rec.amt,
        rec.bal,
        rec.ts,
        record_hash[:HASH_CHARS],
    )


def _b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(facts: ReceiptFacts, key: SigningKey) -> str:
    """The QR text of a receipt."""
    msg = facts.message()
    return msg.decode() + "|" + _b64u(key.sign(msg))


def parse(text: str) -> tuple[ReceiptFacts, bytes]:
    """The facts and signature of a receipt's QR text; :class:`ProtocolError` for a text that
    is not one."""
    parts = text.strip().split("|")
    if len(parts) != 10 or parts[0] != PREFIX:
        raise ProtocolError("not a ykt receipt code")
    _, term, seq, kind, method, amt, bal, ts, h, sig = parts
    if not _TERM.match(term) or not _HASH.fullmatch(h):
        raise ProtocolError("not a ykt receipt code (terminal or hash)")
    if not all(_INT.match(v) for v in (seq, amt, ts)) or not (
        bal == "-" or _INT.match(bal.lstrip("-"))
    ):
        raise ProtocolError("not a ykt receipt code (a number is not a number)")
    if not re.fullmatch(r"[a-z-]{1,16}", kind) or not re.fullmatch(r"[a-z-]{1,16}", method):
        raise ProtocolError("not a ykt receipt code (kind or method)")
    try:
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except ValueError:
        raise ProtocolError("not a ykt receipt code (signature)") from None
    facts = ReceiptFacts(
        term, int(seq), kind, method, int(amt), None if bal == "-" else int(bal), int(ts), h
    )
    return facts, raw


def genuine(facts: ReceiptFacts, sig: bytes, key: VerifyKey) -> bool:
    return key.ok(sig, facts.message())
