"""Request and response models of the card-holder, kiosk and service-desk API (pydantic; they
make the OpenAPI document at ``/openapi.json``).  Every field is validated here: amounts are
positive and bounded, passwords are six digits, ID-card numbers pass the GB 11643 check digit.

Request models are **strict** (:class:`Strict`): ``true``, ``"100"`` and ``100.0`` are not
integers, ``1`` and ``"true"`` are not booleans, and every integer has the bounds of
:mod:`sync.bounds` (issue 10 items 7 and 20).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sync import rules
from sync.bounds import CardWord, Fen
from sync.server.codes_models import WalletOut

# -- field types ---------------------------------------------------------------------------------
Password6 = Annotated[str, Field(pattern=r"^[0-9]{6}$", description="six digits (R3)")]
Number = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$",
        description="staff/student number, or card number for temporary cards",
    ),
]
CardNo = Annotated[str, Field(pattern=r"^[0-9]{1,32}$", description="card number")]
Uid = Annotated[
    str,
    Field(
        pattern=r"^(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{14}|[0-9A-Fa-f]{20})$",
        description="card UID, 4, 7 or 10 bytes of hex",
    ),
]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
RequestId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{8,64}$",
        description="idempotency key: a retried request with it applies once",
    ),
]
Date = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="YYYY-MM-DD")]


def _id_card(value: str) -> str:
    return rules.validate_id_card(value)  # RuleError is a ValueError: pydantic reports it


IdCard = Annotated[
    str,
    Field(min_length=18, max_length=24, description="ID-card number (GB 11643 check digit)"),
    AfterValidator(_id_card),
]


class Strict(BaseModel):
    """A request body: no unknown fields, and strict types (no ``true`` for an integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# -- errors ----------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. bad_session")
    message: str
    details: list[Any] | None = None
    retry_after_s: int | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "a paging cursor the server did not hand out (bad_cursor)"),
        (401, "missing or bad credentials (bad_session, bad_admin_token, unsigned, …)"),
        (403, "not allowed (wrong_role, not_permitted, locked, bad_card_proof, …)"),
        (404, "no such account, card, room, order, …"),
        (409, "a state that does not allow the operation (bad_status, insufficient, …)"),
        (413, "a request body over the limit (1 MiB): too_large"),
        (422, "a field that breaks a rule or a format (invalid, bad_password, …)"),
        (429, "rate limited (card-less operations R10, wrong query passwords of a client)"),
        (503, "the database is unavailable"),
    )
}


# -- shared response shapes -------------------------------------------------------------------------
class CardOut(BaseModel):
    card_no: str
    uid: str
    generation: int
    status: str
    issued_ms: int


class LedgerLine(BaseModel):
    """A line of the bills or the flow as the desk sees it (oldest first)."""

    model_config = ConfigDict(populate_by_name=True)
    id: str
    time: str
    ts_ms: int
    kind: str
    amount_fen: int | None = None
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    memo: str | None = None
    detail: str | None = None
    actor: str | None = None


class AccountOut(BaseModel):
    id: int
    number: str
    name: str
    type: str
    status: str
    balance_fen: int
    transition_fen: int
    limit_fen: int
    spent_today_fen: int
    pin_tries: int
    pin_locked: bool
    expires: str | None
    flags: list[str]
    cards: list[CardOut]


class AccountHistoryOut(AccountOut):
    bills: list[LedgerLine] = Field(description="R9 bills: top-ups and purchases")
    flow: list[LedgerLine] = Field(description="R9 flow: account operations, top-ups, purchases")


class TopupOut(AccountOut):
    transfer_id: str
    applied: bool


class CancelOut(AccountOut):
    paid_out_fen: int = Field(description="R14: the remaining balance paid out in cash")


class MeOut(AccountOut):
    virtual_card_expires: str | None = Field(
        description="R13: the phone's virtual card is valid as long as the account"
    )


class HolderAccount(BaseModel):
    id: int
    number: str
    name: str
    type: str
    status: str


class LoginOut(BaseModel):
    token: str
    expires_ms: int
    account: HolderAccount
    wallet: WalletOut | None = Field(
        default=None,
        description="with public_key: the phone's certificate for payment and authentication "
        "codes (docs/codes.md)",
    )


class LogoutOut(BaseModel):
    logged_out: bool
    certificates_revoked: int = Field(default=0, description="phone certificates revoked")


class PageLine(BaseModel):
    id: str
    time: str
    ts_ms: int
    kind: str
    amount_fen: int | None = Field(description="+ into the account, - out of it; null: no money")
    memo: str
    actor: str


class PageOut(BaseModel):
    items: list[PageLine]
    next_cursor: str | None = Field(description="pass as cursor for the next (older) page")


class StatusOut(BaseModel):
    number: str
    status: str


class ChangedOut(BaseModel):
    changed: bool


# -- card holders -----------------------------------------------------------------------------------
class HolderCredentialsIn(Strict):
    number: Number
    password: Password6


class ChangePasswordIn(Strict):
    old_password: Password6
    new_password: Password6


class ElectricityIn(Strict):
    building: Code
    room: Code
    amount_fen: Fen
    request_id: RequestId | None = None


class ElectricityOut(BaseModel):
    transfer_id: str
    applied: bool
    building: str
    room: str
    amount_fen: int
    balance_fen: int
    transition_fen: int


class BuildingOut(BaseModel):
    code: str
    name: str
    rooms: int


class BuildingsOut(BaseModel):
    buildings: list[BuildingOut]


class RoomsOut(BaseModel):
    building: str
    rooms: list[str]


class RoomOut(BaseModel):
    building: str
    room: str
    balance_fen: int


class FoundCardIn(Strict):
    card_no: CardNo
    place: str = Field(min_length=1, max_length=200, description="where the card is now")
    note: str = Field(default="", max_length=500)


class FoundRegisteredOut(BaseModel):
    card_no: str
    registered: bool
    time: str


class FoundCard(BaseModel):
    id: int
    card_no: str
    place: str
    note: str
    time: str
    status: str


class FoundListOut(BaseModel):
    found: list[FoundCard]


class FoundClosedOut(BaseModel):
    id: int
    status: str


class SsoStartOut(BaseModel):
    authorization_url: str
    state: str


class SsoFinishIn(Strict):
    state: str = Field(min_length=16, max_length=128)
    code: str = Field(min_length=1, max_length=512)


# -- kiosks -----------------------------------------------------------------------------------------
class CardProof(Strict):
    """What the kiosk read from the card on its reader (see docs/card-present.md)."""

    card_no: CardNo
    uid: Uid
    generation: CardWord = Field(ge=1)
    tag: str = Field(pattern=r"^[0-9A-Fa-f]{32}$", description="the card's proof tag")


class KioskCardIn(Strict):
    card: CardProof


class KioskQueryPasswordIn(Strict):
    card: CardProof
    old_password: Password6
    new_password: Password6


class KioskConsumePasswordIn(Strict):
    """The holder confirms with the query password (R4) or the current consumption password
    (R5, its wrong tries counted toward the lock): exactly one of them."""

    card: CardProof
    query_password: Password6 | None = None
    consume_password: Password6 | None = None
    new_password: Password6


class KioskLimitIn(Strict):
    """As :class:`KioskConsumePasswordIn`: the query or the consumption password confirms."""

    card: CardProof
    query_password: Password6 | None = None
    consume_password: Password6 | None = None
    limit_fen: Fen


class KioskFoundIn(Strict):
    card: CardProof
    place: str = Field(min_length=1, max_length=200)


class KioskReadOut(BaseModel):
    recent: list[PageLine] = Field(description="the last lines of the transaction flow (R9)")
    card_no: str
    number: str
    name: str
    type: str
    status: str
    balance_fen: int
    transition_fen: int
    limit_fen: int
    expires: str | None


class TransitionOut(BaseModel):
    card_no: str
    moved_fen: int = Field(description="what moved from the transition balance (0: nothing)")
    balance_fen: int
    transition_fen: int


class CardCounters(BaseModel):
    """The R5 and R6 counters a newly written card starts with (a correction leaves them
    alone)."""

    day: str | None = Field(description="campus date the amount belongs to (None: nothing yet)")
    spent_fen: int = Field(
        ge=0, description="spent that day since midnight or the last correct consumption password"
    )
    pin_tries: int = Field(
        default=0, ge=0, le=255, description="the account's wrong consumption passwords (R5)"
    )
    pin_epoch: int = Field(
        default=0, ge=0, le=255, description="the desk's reset (mod 256) the tries count in"
    )


class CardData(BaseModel):
    """What is written onto a card (R11 reissue, R20 correction)."""

    card_no: str
    uid: str
    generation: int
    account_id: int
    number: str
    name: str
    type: str
    expires: str | None
    limit_fen: int
    counters: CardCounters
    tag: str
    identity: str = Field(
        description="the issuer-signed identity to write (base64; docs/card-format.md)"
    )


class CardWriteOut(BaseModel):
    card_no: str
    changed: str
    write: dict[str, Any] = Field(description="the fields the kiosk writes onto the card")


class KioskReissueIn(Strict):
    order_id: RequestId = Field(description="the kiosk's order id: a retry never charges twice")
    uid: Uid = Field(description="UID of the blank card the kiosk will encode")
    number: Number | None = None
    id_card: IdCard | None = None
    auth_code: str | None = Field(default=None, min_length=8, max_length=512)


class KioskQuoteIn(Strict):
    number: Number | None = None
    id_card: IdCard | None = None
    auth_code: str | None = Field(default=None, min_length=8, max_length=512)


class ReissueQuoteOut(BaseModel):
    """What a kiosk shows before the holder confirms a reissue (R11)."""

    number: str
    name: str
    type: str
    via: str
    fee_fen: int
    balance_fen: int
    balance_after_fen: int


class ReissueOut(BaseModel):
    order_id: str
    status: str
    created: bool
    fee_fen: int
    balance_fen: int
    transition_fen: int
    card: CardData


# -- service desk -------------------------------------------------------------------------------------
class DeskReissueIn(Strict):
    order_id: RequestId | None = None
    uid: Uid | None = None
    charge_fee: bool = True


class ExtendIn(Strict):
    expires: Date


class RefundIn(Strict):
    transfer_id: str = Field(min_length=1, max_length=200)
    amount_fen: Fen | None = Field(default=None, description="default: all that is left")
    reason: str = Field(min_length=1, max_length=200)
    request_id: RequestId | None = None


class RefundOut(BaseModel):
    transfer_id: str
    original: str
    amount_fen: int
    reason: str
    applied: bool
    number: str
    balance_fen: int
    transition_fen: int


class StaffIn(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{1,31}$")
    role: Literal["superuser", "operator", "desk", "finance", "auditor"]


class StaffOut(BaseModel):
    name: str
    role: str
    status: str
    token: str | None = Field(default=None, description="shown once, when created")
    created_ms: int | None = None
    created_by: str | None = None


class StaffListOut(BaseModel):
    staff: list[StaffOut]


class AuditEntry(BaseModel):
    id: int
    ts_ms: int
    actor: str
    role: str
    action: str
    target: str
    outcome: str
    detail: str


class AuditOut(BaseModel):
    entries: list[AuditEntry]
    next_before_id: int | None


class BuildingIn(Strict):
    code: Code
    name: str = Field(min_length=1, max_length=64)
    rooms: list[Code] = Field(default_factory=list, max_length=5000)


# -- existing admin responses ------------------------------------------------------------------------
class IssuedCardOut(BaseModel):
    card_no: str
    uid: str
    generation: int
    account_id: int
    number: str
    tag: str = Field(description="the card's proof tag, written onto the card (R20)")
    identity: str = Field(
        description="the issuer-signed identity written onto the card (base64: blocks 4-6 "
        "and the signature, docs/card-format.md)"
    )
    counters: CardCounters
    already_issued: bool = Field(
        default=False, description="this UID was already the account's card: the same card again"
    )


class RosterError(BaseModel):
    line: int
    error: str


class RosterOut(BaseModel):
    added: int
    errors: list[RosterError]


class KeystoreOut(BaseModel):
    """A role-limited card keystore (docs/card-format.md); secret: store it with mode 0600."""

    format: str
    version: int
    campus_id: str
    role: str
    key_version: int
    issuer_public: str = Field(description="the issuer's Ed25519 public key, base64")
    masters: dict[str, str] = Field(description="master keys by name, hex")


class EnrollTokenOut(BaseModel):
    token: str
    role: str
    name: str
    merchant: str
    expires_ms: int
    simulated: bool


class TerminalOut(BaseModel):
    id: str
    name: str
    role: str
    status: str
    head_seq: int
    enrolled_ms: int
    last_seen_ms: int
    merchant: str
    reported_head: int
    simulated: bool


class TerminalsOut(BaseModel):
    terminals: list[TerminalOut]


class WaitedTerminalOut(BaseModel):
    id: str
    name: str
    role: str
    head_seq: int = Field(description="the journal head the server holds")
    reported_head: int = Field(description="the journal head the terminal last reported")
    reported_ms: int = Field(description="when it reported it (before the restore: not yet)")


class RecoveryOut(BaseModel):
    recovering: bool = Field(
        description="restored from a backup: no pay-outs, refunds out of a balance or online "
        "approvals until every terminal has pushed again (docs/operations.md)"
    )
    since_ms: int | None
    reason: str
    by: str
    waiting: list[WaitedTerminalOut] = Field(description="the terminals still to push")


class RevokedOut(BaseModel):
    terminal_id: str
    status: str
    holds_released: int = Field(
        default=0, description="holds of its approved, never-synced sales released"
    )
    reverse_refunded: int = Field(
        default=0, description="reverse-scan payments waiting for its record, refunded"
    )


class Mismatch(BaseModel):
    account: str
    balance: int
    computed: int


class LedgerCheckOut(BaseModel):
    ok: bool
    sum_fen: int
    mismatched: list[Mismatch]
    transfers: int


class Alarm(BaseModel):
    id: int
    ts_ms: int
    terminal_id: str | None
    kind: str
    detail: str


class AlarmsOut(BaseModel):
    alarms: list[Alarm]


class HealthOut(BaseModel):
    ok: bool
    campus_id: str
    time_ms: int
    version: int


class EnrolledOut(BaseModel):
    terminal_id: str
    name: str
    role: str
    merchant: str
    campus_id: str
    tz: str
    server_time_ms: int
