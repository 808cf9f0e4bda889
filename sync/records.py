"""The typed core data both ends share, each built in one place (docs/protocol.md).

=======================  ======================================================================
type                     what
=======================  ======================================================================
:class:`JournalRecord`   a signed journal record (the wire body, short keys)
:class:`Entry`           what a terminal decided to journal: a record before the journal gives it
                         its place in the chain (``v``, ``term``, ``seq``, ``prev``); made by
                         :func:`card_sale`, :func:`card_pin_fail`, :func:`code_sale`,
                         :func:`reverse_sale`, :func:`reverse_void` (the POS) and :func:`offline_sale` (benchmarks,
                         test terminals)
:class:`CardX`           the card's counters after a card record (``x.card``)
:class:`CardFacts`       what the POS read from a card and sends with an authorize request
:class:`AuthorizeRequest`, :class:`AuthorizeAnswer`   ``POST /v1/pos/authorize``
:class:`PushAck`         the answer to ``POST /v1/journal`` (with :class:`Alarm`)
:class:`FeedPage`        a page of ``GET /v1/feed``: :class:`AccountSnapshot`, :class:`CardRow`,
                         :class:`CertRow`, :class:`CodesInfo`, the policy
:class:`CachedAccount`   an account snapshot as the terminal's cache keeps it (``as_of_seq``)
:class:`TerminalPolicy`  the policy values a terminal decides with, and their defaults
=======================  ======================================================================

Records: the body is the canonical JSON encoding (sorted keys, no spaces, UTF-8; the same bytes
:func:`sync.protocol.canonical` makes of the record's fields), so bodies and signatures are what
the dict-based code made (``tests/unit/test_wire_fixtures.py`` checks records signed before
these types existed).  ``x`` stays an open JSON object on the wire: a server accepts what later
terminals add there; :meth:`JournalRecord.card_x` and friends read the known parts.

Why msgspec
    ``tests/unit/measure_record_types.py`` runs the two hot paths on the records of the wire
    fixtures, four ways (µs per record on the shared 2-core machine, median of three runs of
    50,000 records):

    =============================  ======================  ==================================
    way                            POS: validate, encode   ingest: decode, validate, canonical?
    =============================  ======================  ==================================
    dict + hand checks (before)    9.5                     13.8
    dataclass + the same checks    15.5                    20.2
    pydantic, strict model         11.1                    11.5
    msgspec ``Struct`` (this)      3.6                     3.6
    =============================  ======================  ==================================

    msgspec is 3-4 times faster than the dicts on both paths (pydantic gains little, a
    dataclass only adds a copy), checks types strictly (``true`` is not an integer), bounds and
    literals in the type itself, and its structs are immutable with attribute access.  Server
    ingest end to end (``ykt bench --only ingest``) spends 42 µs of server CPU per record
    instead of 56.  msgspec's float formatting differs from ``json``'s (``1e16`` against
    ``1e+16``), so a record whose open ``x`` carries a float is encoded by ``json`` as before,
    and bodies msgspec cannot read (``NaN``, a lone surrogate) take the ``json`` path too:
    exactly the bodies accepted before are accepted now (``tests/unit/test_records.py`` holds
    the old code as the oracle).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from sync.bounds import (
    MAX_ID,
    CardByte,
    CardCount,
    CardWord,
    Fen,
    FenOrZero,
    Id,
    PosId,
    Total,
    Ts,
    parse_id,
)
from sync.card.layout import Counters
from sync.errors import ProtocolError
from sync.rules import DEFAULT_PIN_MAX_TRIES

__all__ = [
    "KINDS",
    "METHODS",
    "PIN_FACTS",
    "RECORD_VERSION",
    "UNSET",
    "AccountSnapshot",
    "Alarm",
    "AuthorizeAnswer",
    "AuthorizeRequest",
    "CachedAccount",
    "CardFacts",
    "CardRow",
    "CardX",
    "CertRow",
    "CodesInfo",
    "Entry",
    "FeedPage",
    "IssuerKey",
    "JournalRecord",
    "OperatorRow",
    "PushAck",
    "RefundX",
    "TerminalPolicy",
    "UnsetType",
    "answer",
    "card_pin_fail",
    "card_sale",
    "code_sale",
    "offline_sale",
    "refund",
    "reverse_sale",
    "reverse_void",
    "to_bytes",
    "to_json",
]

RECORD_VERSION: Literal[1] = 1

#: Record kinds: a sale, a wrong consumption password keyed offline (R5/R6 lockout counting),
#: a reverse-scan request closed without a sale (``void``: its payment, if any, is refunded),
#: a refund of one of the terminal's own sales (``x.refund``: :class:`RefundX`).
Kind = Literal["sale", "pin_fail", "void", "refund"]
Method = Literal["card", "qr-forward", "qr-reverse"]
PinFact = Literal["none", "ok", "fail"]
KINDS = frozenset(get_args(Kind))
METHODS = frozenset(get_args(Method))
PIN_FACTS = frozenset(get_args(PinFact))

#: The integer fields have the bounds of the rest of the system (sync/bounds.py): a sale's
#: amount is one operation (at most ``MAX_AMOUNT_FEN``), ids and sequence numbers at most
#: ``MAX_ID``, the figures the terminal showed (spent, limit, balance) are totals, a terminal
#: time is a real instant (0 .. the end of year 9999).
Seq = PosId
AcctId = Id  # 0 only for a reverse-scan proof keyed as a code
SignedFen = Total
Hex64 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]

T = TypeVar("T")


# -- journal records -----------------------------------------------------------------------------
class JournalRecord(Struct, frozen=True, forbid_unknown_fields=True):
    """One journal record: the signed body (docs/protocol.md).

    ``acct`` is 0 only on a ``qr-reverse`` record whose proof was keyed as a short code (the
    server knows who paid) or that closes a request without a sale (``void``); a sale's
    amount is positive.  A record built in code is checked
    when it is sealed (:meth:`checked_body`); one decoded from the wire, when it is decoded."""

    v: Literal[1]
    term: str
    seq: Seq
    prev: Hex64
    ts: Ts
    kind: Kind
    acct: AcctId
    cred: str
    amt: FenOrZero
    method: Method
    off: bool
    pin: PinFact
    spent: SignedFen
    lim: SignedFen
    bal: SignedFen | None
    op: str
    auth: str | None
    x: dict[str, Any] | UnsetType = UNSET

    def _checked(self) -> JournalRecord:
        """The checks across fields (the types check the rest when a body is decoded)."""
        if self.acct == 0 and self.method != "qr-reverse":
            raise ProtocolError("invalid record: 'acct' is out of range")
        if self.kind in ("sale", "refund") and self.amt == 0:
            raise ProtocolError(f"invalid record: a {self.kind}'s amount must be positive")
        if self.kind == "void" and self.method != "qr-reverse":
            raise ProtocolError("invalid record: a void closes a reverse-scan request")
        if self.x is not UNSET:
            self._check_x(self.x)
        if self.kind == "refund":
            ref = self.refund_x()
            if ref is None or ref.seq >= self.seq:
                raise ProtocolError(
                    "invalid record: a refund names an earlier sale of its terminal and the "
                    "supervisor (x.refund)"
                )
        if self.method == "qr-forward" and self.cred.startswith("qr:"):
            parts = self.cred.split(":")
            if len(parts) != 3 or parse_id(parts[1]) is None or parse_id(parts[2]) is None:
                raise ProtocolError(
                    "invalid record: 'cred' of a phone code is qr:<serial>:<counter>, each "
                    f"0-{MAX_ID}"
                )
        return self

    def _check_x(self, x: dict[str, Any]) -> None:
        """The known parts of the open ``x`` have the types and bounds of the rest (a later
        terminal may add other keys)."""
        for key, kind in _KNOWN_X:
            if key in x:
                try:
                    msgspec.convert(x[key], kind, strict=True)
                except msgspec.ValidationError as exc:
                    raise ProtocolError(f"invalid record: x.{key}: {exc}") from None

    # -- the wire ---------------------------------------------------------------------------
    def body(self) -> bytes:
        """The canonical body (what is signed and hashed)."""
        if self.x is not UNSET and _has_float(self.x):
            return _json_canonical(self.to_dict())
        try:
            return _ENCODER.encode(self)
        except UnicodeEncodeError as exc:
            raise ProtocolError("text that is not valid Unicode (a lone surrogate)") from exc

    @classmethod
    def parse(cls, body: str | bytes) -> JournalRecord:
        """Decode and validate a body received on the wire (``str`` is the faster input);
        :class:`ProtocolError` for anything else."""
        try:
            return _DECODER.decode(body)._checked()
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"invalid record: {exc}") from None
        except (msgspec.DecodeError, UnicodeEncodeError):
            pass  # what msgspec cannot read, json may (NaN, surrogates): decide as before
        try:
            obj = json.loads(body)
        except (ValueError, TypeError) as exc:
            raise ProtocolError("record body is not JSON") from exc
        except RecursionError as exc:
            raise ProtocolError("record body is nested too deeply") from exc
        rec = cls.from_fields(obj)
        if (b"\\u" in body) if isinstance(body, bytes) else ("\\u" in body):
            rec.body()  # an escaped lone surrogate is not Unicode: ProtocolError
        return rec

    @classmethod
    def from_fields(cls, fields: Any) -> JournalRecord:
        """Validate decoded JSON (a mapping of the short keys)."""
        if not isinstance(fields, Mapping):
            raise ProtocolError("a record body must be a JSON object")
        try:
            return msgspec.convert(fields, cls, strict=True)._checked()
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"invalid record: {exc}") from None
        except UnicodeEncodeError:  # a lone surrogate where only a literal or hex may stand
            raise ProtocolError("invalid record: text that is not valid Unicode") from None

    def checked_body(self) -> bytes:
        """The body, after checking every field of it (a struct built in code is not checked
        until then): :class:`ProtocolError` for a record that is not valid."""
        body = self.body()
        JournalRecord.parse(body)
        return body

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.structs.asdict(self)
        if self.x is UNSET:
            del out["x"]
        return out

    # -- reading ----------------------------------------------------------------------------
    @property
    def at_risk(self) -> bool:
        """Money this terminal took offline that the server has not confirmed (a reverse-scan
        sale was paid online by the phone)."""
        return self.off and self.method != "qr-reverse"

    def card_x(self) -> CardX | None:
        """The card's counters after this record (``x.card``), when well-formed."""
        card = self.x.get("card") if self.x is not UNSET else None
        if not isinstance(card, dict):
            return None
        try:
            return msgspec.convert(card, CardX, strict=True)
        except msgspec.ValidationError:
            return None

    def refund_x(self) -> RefundX | None:
        """``x.refund`` of a refund record (the sale it refunds, the supervisor), when
        well-formed."""
        ref = self.x.get("refund") if self.x is not UNSET else None
        if not isinstance(ref, dict):
            return None
        try:
            return msgspec.convert(ref, RefundX, strict=True)
        except msgspec.ValidationError:
            return None

    def x_value(self, key: str) -> Any:
        """``x[key]``, or None."""
        return None if self.x is UNSET else self.x.get(key)

    def x_has(self, key: str) -> bool:
        return self.x is not UNSET and key in self.x


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_canonical(obj: Any) -> bytes:
    try:
        return _JSON.encode(obj).encode()
    except UnicodeEncodeError as exc:
        raise ProtocolError("text that is not valid Unicode (a lone surrogate)") from exc


_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder(JournalRecord)


class Entry(Struct, frozen=True, kw_only=True):
    """A record before the journal chains it (adds ``v``, ``term``, ``seq``, ``prev``)."""

    ts: int
    kind: Kind = "sale"
    acct: int
    cred: str
    amt: int
    method: Method
    off: bool = False
    pin: PinFact = "none"
    spent: int = 0
    lim: int = 0
    bal: int | None = None
    op: str = ""
    auth: str | None = None
    x: dict[str, Any] | UnsetType = UNSET

    def chained(self, term: str, seq: int, prev: str) -> JournalRecord:
        """The record at ``seq`` of terminal ``term``, after the body hashing to ``prev``
        (not yet validated: :func:`sync.protocol.seal` does that)."""
        return JournalRecord(
            v=RECORD_VERSION,
            term=term,
            seq=seq,
            prev=prev,
            ts=self.ts,
            kind=self.kind,
            acct=self.acct,
            cred=self.cred,
            amt=self.amt,
            method=self.method,
            off=self.off,
            pin=self.pin,
            spent=self.spent,
            lim=self.lim,
            bal=self.bal,
            op=self.op,
            auth=self.auth,
            x=self.x,
        )


class CardX(Struct, frozen=True):
    """``x.card`` of a card record: the card's counters after it (docs/card-format.md), each
    as wide as the card stores it."""

    uid: str
    gen: CardWord
    ctr: CardWord
    taps: CardCount
    tries: CardByte
    ep: CardByte


#: ``x.proof`` of a reverse-scan sale: ``"code"`` (the short code was keyed) or the
#: server-signed payment proof the terminal verified, base64 (docs/protocol.md)
ProofX = Annotated[str, msgspec.Meta(min_length=1, max_length=400, pattern="^[A-Za-z0-9+/=]+$")]

#: the parts of a record's open ``x`` the server reads, and their types
_KNOWN_X: tuple[tuple[str, Any], ...] = (
    ("card", CardX),
    ("order", Id),
    ("payment", Id),
    ("proof", ProofX),
)


class RefundX(Struct, frozen=True, forbid_unknown_fields=True):
    """``x.refund`` of a refund record: the sequence number of the sale (of the same
    terminal) it refunds and the supervisor who allowed it."""

    seq: Seq
    sup: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{1,32}$")]


def refund(
    *,
    ts: int,
    sale: JournalRecord,
    amt: int,
    off: bool,
    op: str,
    supervisor: str,
    bal: int | None,
) -> Entry:
    """A refund of ``sale`` (a sale of this terminal), allowed by ``supervisor``."""
    return Entry(
        ts=ts,
        kind="refund",
        acct=sale.acct,
        cred=sale.cred,
        amt=amt,
        method=sale.method,
        off=off,
        bal=bal,
        op=op,
        x={"refund": {"seq": sale.seq, "sup": supervisor}},
    )


def card_cred(card_no: str, uid_hex: str) -> str:
    return f"card:{card_no}:{uid_hex}"


def card_sale(
    *,
    ts: int,
    card_no: str,
    card: CardX,
    acct: int,
    amt: int,
    off: bool,
    pin: PinFact,
    spent: int,
    lim: int,
    bal: int,
    op: str,
    auth: str | None,
) -> Entry:
    """A card sale, online (``auth`` is the server's hold) or offline."""
    return Entry(
        ts=ts,
        acct=acct,
        cred=card_cred(card_no, card.uid),
        amt=amt,
        method="card",
        off=off,
        pin=pin,
        spent=spent,
        lim=lim,
        bal=bal,
        op=op,
        auth=auth,
        x={"card": msgspec.structs.asdict(card)},
    )


def card_pin_fail(
    *, ts: int, card_no: str, card: CardX, acct: int, off: bool, spent: int, lim: int, op: str
) -> Entry:
    """A wrong consumption password checked against the card (R5), counted on it first."""
    return Entry(
        ts=ts,
        kind="pin_fail",
        acct=acct,
        cred=card_cred(card_no, card.uid),
        amt=0,
        method="card",
        off=off,
        pin="fail",
        spent=spent,
        lim=lim,
        op=op,
        x={"card": msgspec.structs.asdict(card)},
    )


def code_sale(
    *,
    ts: int,
    cred: str,
    code_text: str,
    acct: int,
    amt: int,
    off: bool,
    pin: PinFact,
    spent: int,
    lim: int,
    bal: int,
    op: str,
    auth: str | None = None,
) -> Entry:
    """A phone payment code scanned by the terminal (forward scan, R8): ``cred`` is
    ``qr:<certificate serial>:<counter>``, ``x.code`` the code's text."""
    return Entry(
        ts=ts,
        acct=acct,
        cred=cred,
        amt=amt,
        method="qr-forward",
        off=off,
        pin=pin,
        spent=spent,
        lim=lim,
        bal=bal,
        op=op,
        auth=auth,
        x={"code": code_text},
    )


def reverse_sale(
    *,
    ts: int,
    order: int,
    amt: int,
    op: str,
    acct: int,
    payment: int | None,
    proof: bytes | None = None,
) -> Entry:
    """A reverse-scan sale (R8, offline): the phone paid online.  With the proof shown,
    ``acct`` and the server's ``payment``, and the proof itself (``x.proof``, base64: signed
    by the server, it lets ingest charge the payer if the server lost the payment, restored
    from a backup); with the short code keyed, ``acct`` 0 and ``x.proof`` ``"code"``."""
    extra: dict[str, Any] = {"payment": payment} if payment is not None else {"proof": "code"}
    if payment is not None and proof is not None:
        extra["proof"] = base64.b64encode(proof).decode()
    return Entry(
        ts=ts,
        acct=acct,
        cred=f"qr-reverse:{order}",
        amt=amt,
        method="qr-reverse",
        off=True,
        op=op,
        x={"order": order, **extra},
    )


def reverse_void(*, ts: int, order: int, amt: int, op: str) -> Entry:
    """A reverse-scan request closed without a sale (R8): cancelled by the cashier, refused
    after too many wrong proof codes, or found open when the terminal started again.  The
    server refunds the phone's payment for it, if one was made, and refuses one made later."""
    return Entry(
        ts=ts,
        kind="void",
        acct=0,
        cred=f"qr-reverse:{order}",
        amt=amt,
        method="qr-reverse",
        off=True,
        op=op,
        x={"order": order},
    )


def offline_sale(
    *,
    term: str,
    seq: int,
    prev: str,
    ts: int,
    acct: int,
    amt: int,
    cred: str,
    lim: int,
    off: bool = True,
    bal: int | None = None,
    op: str = "",
    auth: str | None = None,
) -> JournalRecord:
    """A card sale without a password and without card counters, chained: what the server
    benchmarks and the tests' hand-built terminals send (offline unless told otherwise)."""
    entry = Entry(
        ts=ts,
        acct=acct,
        cred=cred,
        amt=amt,
        method="card",
        off=off,
        lim=lim,
        bal=bal,
        op=op,
        auth=auth,
    )
    return entry.chained(term, seq, prev)


# -- POST /v1/pos/authorize ----------------------------------------------------------------------
class CardFacts(Struct, frozen=True):
    """What the POS read from the card (R6 counters, R11 generation) and decided with it."""

    generation: CardWord
    day: str | None
    spent_fen: CardCount
    taps: CardCount
    tries: CardByte
    epoch: CardByte
    pin: Literal["none", "ok"]

    @classmethod
    def read(cls, generation: int, counters: Counters, pin: Literal["none", "ok"]) -> CardFacts:
        """The facts of a card whose counters are ``counters`` (``pin``: the consumption
        password was checked correct against the card)."""
        return cls(
            generation=generation,
            day=counters.day,
            spent_fen=counters.spent_fen,
            taps=counters.taps,
            tries=counters.tries,
            epoch=counters.epoch,
            pin=pin,
        )


class AuthorizeRequest(Struct, frozen=True, kw_only=True):
    """A card sale names the card (number, UID, :class:`CardFacts`); a phone-code sale
    carries the code's text (``qr``)."""

    seq: Seq
    card_no: str | UnsetType = UNSET
    uid: str | UnsetType = UNSET
    amount_fen: Fen
    method: Literal["card", "qr-forward"]
    #: the consumption password, for a card sale without card facts (R6 decided at account
    #: level by the server); a POS sends the facts instead
    pin: str | UnsetType = UNSET
    card: CardFacts | UnsetType = UNSET
    qr: str | UnsetType = UNSET


def _absent(value: object) -> bool:
    return value is UNSET


class AuthorizeAnswer(Struct, frozen=True):
    """The server's answer; an approval carries the hold (``auth_id``) and the figures the
    record needs, a decline its code and reason (and what the server knows of the account)."""

    approved: bool
    code: str
    reason: str
    auth_id: str | UnsetType = UNSET
    balance_fen: Total | UnsetType = UNSET
    limit_fen: Total | UnsetType = UNSET
    spent_fen: Total | UnsetType = UNSET
    pin: Literal["none", "ok"] | UnsetType = UNSET
    pin_epoch: Id | UnsetType = UNSET
    tries_left: Id | UnsetType = UNSET
    cred: str | UnsetType = UNSET
    confirmed: bool | UnsetType = UNSET
    account_id: Id | UnsetType = UNSET
    number: str | UnsetType = UNSET
    name: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.approved and any(
            _absent(v)
            for v in (self.auth_id, self.balance_fen, self.limit_fen, self.spent_fen, self.pin)
        ):
            raise ValueError("an approval lacks the hold or the figures of the record")

    def account(self) -> dict[str, Any]:
        """``account_id``, ``number``, ``name`` as far as the answer has them (screens)."""
        return {
            k: v
            for k, v in (
                ("account_id", self.account_id),
                ("number", self.number),
                ("name", self.name),
            )
            if v is not UNSET
        }

    def get(self, name: str) -> Any:
        """A field's value, or None when the answer does not carry it."""
        value = getattr(self, name)
        return None if value is UNSET else value


def decline(code: str, reason: str, **extra: Any) -> AuthorizeAnswer:
    """A declined authorization (the server's one way to say no)."""
    return AuthorizeAnswer(approved=False, code=code, reason=reason, **extra)


# -- POST /v1/journal ----------------------------------------------------------------------------
class Alarm(Struct, frozen=True):
    kind: str
    detail: str


class PushAck(Struct):
    """The answer to a pushed batch: the highest contiguous sequence number taken (applied, or
    refused: in the chain, nothing of it applied, with a ``record_refused`` alarm)."""

    ack: Id
    applied: Id = 0
    duplicates: Id = 0
    pending: Id = 0
    alarms: list[Alarm] = msgspec.field(default_factory=list)
    refused: Id = 0  # a server of an older version does not send it


# -- GET /v1/feed --------------------------------------------------------------------------------
class AccountSnapshot(Struct, frozen=True, kw_only=True):
    """An account as the feed sends it: what a terminal decides offline with."""

    id: Id
    number: str
    name: str
    type: str
    status: str
    balance_fen: Total
    transition_fen: Total
    limit_fen: Total
    spent_day: str
    spent_fen: Total
    pin_tries: Id
    #: always empty: no password hash reaches a terminal (issue 10 item 9; the consumption
    #: password is checked against the card's own verifier, R5).  Kept on the wire for
    #: terminals of an older version, which require the field.
    pin_verifier: str = ""
    pin_epoch: Id = 0  # a server of an older version does not send it
    expires: str | None
    version: Id


class CachedAccount(AccountSnapshot, frozen=True, kw_only=True):
    """An account snapshot in the terminal's cache: ``as_of_seq`` is this terminal's acked
    sequence number when it was taken (its later records go on top of it)."""

    as_of_seq: Id


class CardRow(Struct, frozen=True, kw_only=True):
    """A card as the feed sends it and the terminal caches it (R11)."""

    card_no: str
    account_id: Id
    uid: str
    generation: Id
    status: str
    version: Id | UnsetType = UNSET
    identity: str = ""  # the issuer-signed identity (base64); an older server sends none


class CertRow(Struct, frozen=True, kw_only=True):
    """A wallet certificate (phone codes, docs/codes.md)."""

    serial: Id
    account_id: Id
    raw: str
    revoked: bool
    version: Id | UnsetType = UNSET


class IssuerKey(Struct, frozen=True):
    kid: Id
    public_key: str


class CodesInfo(Struct, frozen=True, kw_only=True):
    """Phone-code parameters from the feed: campus, issuer keys, proof key, window."""

    campus_id: str | UnsetType = UNSET
    campus_tag: Id | UnsetType = UNSET
    keys: list[IssuerKey] = msgspec.field(default_factory=list)
    code_valid_s: Id = 60
    code_skew_s: Id = 30
    proof_key: str = ""


class TerminalPolicy(Struct, frozen=True, kw_only=True):
    """The policy values a terminal decides with.  The defaults hold until the feed brings the
    server's policy: no offline sale is allowed before then."""

    offline_max_purchase_fen: Id = 0
    offline_max_card_day_fen: Id = 0
    #: what a card may spend offline since its last online approval, at every terminal
    #: together (carried on the card; docs/security.md)
    offline_max_card_fen: Id = 0
    offline_max_total_fen: Id = 0
    pin_max_tries: Id = DEFAULT_PIN_MAX_TRIES  # R5
    code_valid_s: Id = 60
    code_skew_s: Id = 30
    #: R11: the fee of a card reissue (a kiosk shows it while the server is unreachable);
    #: None until the feed brings the policy
    reissue_fee_fen: Id | None = None

    @classmethod
    def from_feed(cls, policy: Mapping[str, Any]) -> TerminalPolicy:
        """The terminal's values out of the server's whole policy (other keys are the
        server's own)."""
        try:
            return msgspec.convert(dict(policy), cls, strict=True)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"invalid policy: {exc}") from None


class OperatorRow(Struct, frozen=True, kw_only=True):
    """An operator of the terminal's merchant (a cashier or supervisor) as the feed sends it:
    what the terminal checks a PIN with offline (``verifier``: a slow hash, empty once the
    operator is disabled)."""

    number: str
    name: str
    role: Literal["cashier", "supervisor"]
    status: Literal["active", "disabled"]
    verifier: str
    version: int


class FeedPage(Struct, frozen=True, kw_only=True):
    """One page of the delta feed (docs/architecture.md)."""

    version: Id
    more: bool = False
    reset: bool = False
    ack: Id = 0
    accounts: list[AccountSnapshot] = msgspec.field(default_factory=list)
    cards: list[CardRow] = msgspec.field(default_factory=list)
    certs: list[CertRow] = msgspec.field(default_factory=list)
    #: the operators of the terminal's merchant (an older server sends none)
    operators: list[OperatorRow] = msgspec.field(default_factory=list)
    codes: CodesInfo | UnsetType = UNSET
    campus_id: str | UnsetType = UNSET
    tz: str | UnsetType = UNSET
    #: the name of the terminal's merchant, printed on its receipts ("" for a terminal of no
    #: merchant of its own, ``DEFAULT``; an older server sends none)
    merchant_name: str | UnsetType = UNSET
    server_time_ms: Ts | UnsetType = UNSET
    #: the server's whole policy (sent when it changed): :class:`TerminalPolicy` is what a
    #: terminal reads of it
    policy: dict[str, Any] | UnsetType = UNSET


# -- conversions ---------------------------------------------------------------------------------
def answer(data: bytes | str, kind: type[T]) -> T:
    """A server's JSON answer as ``kind``; :class:`ProtocolError` when it does not fit."""
    try:
        return msgspec.json.decode(data, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(f"the server's answer is not a valid {kind.__name__}: {exc}") from None


def to_json(obj: Struct) -> dict[str, Any]:
    """A typed value as a JSON object of plain values for the HTTP layer; unset fields are
    left out."""
    out = msgspec.to_builtins(obj)
    assert isinstance(out, dict)
    return out


_WIRE_ENCODER = msgspec.json.Encoder()


def to_bytes(obj: Struct) -> bytes:
    """A typed value as the JSON text :func:`to_json` gives the HTTP layer, encoded at once
    (unset fields left out): a route that returns it skips the framework's own encoding."""
    return _WIRE_ENCODER.encode(obj)
