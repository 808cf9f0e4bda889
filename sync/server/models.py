"""Request bodies of the server's API (pydantic models; they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, model_validator, with_config
from typing_extensions import TypedDict  # pydantic wants this one before Python 3.12

from sync.bounds import CardByte, CardCount, CardWord, Fen, PosId
from sync.server.api_models import IdCard, Number, Password6, Strict

#: Every model here is :class:`Strict` (``true``, ``"100"`` and ``100.0`` are not integers) and
#: every integer has the bounds of sync/bounds.py.


class AccountIn(Strict):
    number: Number
    name: str = Field(min_length=1, max_length=64)
    type: Literal["temporary", "student", "staff", "consumer"]
    id_card: IdCard
    limit_fen: Fen | None = None
    expires: str | None = Field(default=None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class RosterIn(Strict):
    csv: str = Field(
        max_length=1_000_000,
        description="CSV text: number,name,type,id_card[,limit][,expires] (the request body is "
        "at most 1 MiB: `ykt admin roster import` sends a larger file in parts)",
    )


class StatusIn(Strict):
    action: Literal["report-loss", "unlock", "freeze", "unfreeze"]


class CardIn(Strict):
    uid: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Fa-f:]{8,29}$",
        description="card UID in hex, 4, 7 or 10 bytes (colons allowed: 04:A1:B2:C3)",
    )


class TopupIn(Strict):
    """R7 at the desk: cash only (the other channels are orders paid at a payment provider,
    sync.server.topups)."""

    amount_fen: Fen
    channel: Literal["cash"] = "cash"
    request_id: str | None = Field(
        default=None,
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="makes a retried top-up harmless",
    )


class RestoredIn(Strict):
    reason: str = Field(
        "restored from a backup",
        min_length=1,
        max_length=200,
        description="what was restored (kept in the alarm)",
    )


class ResumeIn(Strict):
    force: StrictBool = Field(
        False,
        description="end the recovering state although terminals are still to push (their "
        "sales since the backup are not known yet: docs/operations.md)",
    )


class TokenIn(Strict):
    role: Literal["pos", "kiosk", "gate"]
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",  # ASCII: what the OpenAPI (ECMA) pattern means too
        description="the terminal's name: ASCII letters, digits, _ . -",
    )
    simulated: StrictBool = Field(
        False,
        description="a test or demo terminal with simulated (sim://) card readers: the feed "
        "sends it the cards' signed identities, consumption-password verifiers included. "
        "Never on a live campus.",
    )
    merchant: str = Field(
        default="DEFAULT",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="the merchant whose account the terminal's sales credit",
    )


class PolicyIn(Strict):
    values: dict[str, Any]


class LoginIn(Strict):
    number: str = Field(min_length=1, max_length=32, description="staff/student or card number")
    password: Password6 = Field(description="query password (R4)")
    public_key: str | None = Field(
        default=None,
        min_length=40,
        max_length=64,
        description="the phone's Ed25519 public key, base64: certify it for payment and "
        "authentication codes (wallet enrollment, R18)",
    )


class ConfirmIn(Strict):
    password: Password6 = Field(description="query password (R4)")
    serial: int | None = Field(
        default=None,
        ge=1,
        lt=2**32,
        strict=True,
        description="the phone's certificate serial of the payment code this confirmation is "
        "for (with counter): online authorization of that code over the daily limit (R6) "
        "spends it",
    )
    counter: int | None = Field(
        default=None,
        ge=0,
        lt=2**32,
        strict=True,
        description="the counter of that payment code",
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> ConfirmIn:
        if (self.serial is None) != (self.counter is None):
            raise ValueError("serial and counter come together")
        return self


class CodeTextIn(Strict):
    text: str = Field(min_length=1, max_length=1000, description="the code's QR text")


class ReversePayIn(Strict):
    request: str = Field(min_length=1, max_length=1000, description="the terminal's QR text")
    password: Password6 | None = Field(
        default=None,
        description="query password, when the payment goes over the daily limit (R6)",
    )
    grant: str | None = Field(
        default=None,
        min_length=8,
        max_length=128,
        description="a recent confirmation (POST /v1/app/codes/confirm) instead of the password",
    )


class EnrollIn(Strict):
    token: str = Field(min_length=8, max_length=128)
    public_key: str = Field(min_length=40, max_length=64, description="Ed25519 public key, base64")
    role: Literal["pos", "kiosk", "gate"] | None = Field(
        default=None,
        description="the role the enrolling agent is; a token for another role "
        "is refused without being used up",
    )


class CardFactsIn(Strict):
    """What the POS read from the card (R6 counters, R11 generation) and decided with it."""

    generation: CardWord
    day: str | None = Field(default=None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
    spent_fen: CardCount
    taps: CardCount
    tries: CardByte = Field(default=0, description="wrong consumption passwords (R5)")
    epoch: CardByte | None = Field(default=None, description="the desk reset the tries count from")
    pin: Literal["none", "ok"] = "none"


class AuthorizeIn(Strict):
    seq: PosId
    card_no: str | None = Field(default=None, min_length=1, max_length=32)
    uid: str | None = Field(default=None, max_length=32)
    amount_fen: Fen
    method: Literal["card", "qr-forward"] = "card"
    pin: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    card: CardFactsIn | None = Field(
        default=None, description="the card's own facts; R6 is then decided from them"
    )
    qr: str | None = Field(
        default=None, min_length=1, max_length=1000, description="payment code text (qr-forward)"
    )

    @model_validator(mode="after")
    def _credential(self) -> AuthorizeIn:
        if self.method == "card" and self.card_no is None:
            raise ValueError("a card sale needs card_no")
        if self.method == "qr-forward" and self.qr is None:
            raise ValueError("a qr-forward sale needs qr (the payment code's text)")
        return self


@with_config(ConfigDict(extra="forbid", strict=True))
class WireRecord(TypedDict):
    """One journal record on the wire.  A TypedDict, not a model: a batch holds up to 2000 and
    ingest wants plain dicts (no model instances to build and dump on the hot path)."""

    body: Annotated[str, Field(max_length=4096)]
    sig: Annotated[str, Field(max_length=128)]


class JournalIn(Strict):
    records: list[WireRecord] = Field(max_length=2000)
    #: the head the server had acked to the terminal before this push (above what the server
    #: holds: it was restored from a backup, :mod:`sync.server.recovery`)
    acked: int | None = Field(default=None, ge=0, le=2**62)
