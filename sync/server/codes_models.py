"""Response models of the phone-code API (docs/codes.md); they make its part of the OpenAPI
document.  Request models are in :mod:`sync.server.models`."""

from __future__ import annotations

from pydantic import BaseModel, Field


class IssuerKeyOut(BaseModel):
    kid: int = Field(description="key id, as certificates and proofs name it")
    public_key: str = Field(description="Ed25519 public key, base64")


class CodeKeysOut(BaseModel):
    campus_id: str
    campus_tag: int = Field(description="the 2-byte campus tag codes carry")
    keys: list[IssuerKeyOut] = Field(description="the code issuer's public keys")
    code_valid_s: int = Field(description="validity window of a code, seconds")
    code_skew_s: int = Field(description="clock-skew tolerance either way, seconds")


class WalletOut(CodeKeysOut):
    cert: str = Field(description="the phone's wallet certificate (116 bytes), base64")
    serial: int = Field(description="the certificate's serial")
    not_after_ms: int = Field(description="the certificate ends with the session")


class ConfirmOut(BaseModel):
    confirmed: bool
    grant: str = Field(
        description="covers one over-limit payment (R6): the payment code named by serial and "
        "counter, or a reverse-scan payment that presents the grant"
    )
    expires_ms: int


class ReverseRequestOut(BaseModel):
    terminal_id: str
    terminal_name: str | None
    order: int
    amount_fen: int
    amount: str


class ReversePaidOut(BaseModel):
    proof_text: str = Field(description="the payment proof as QR text (digits)")
    proof_code: str = Field(description="the proof's 8-digit code for the PIN pad")
    terminal_id: str
    order: int
    amount_fen: int
    payment_id: int
    balance_fen: int
    already_paid: bool = Field(description="this request was paid before: nothing charged now")
    confirmed: bool = Field(description="the query password (or a confirmation) was used (R6)")


class CodeHolderOut(BaseModel):
    number: str
    name: str
    type: str
    status: str


class CodeVerifyOut(BaseModel):
    valid: bool = Field(description="the code is genuine, current and of this campus")
    allowed: bool = Field(description="access allowed (R18): valid, unused, account not blocked")
    code: str = Field(description="ok, or why not: expired, forged, replayed, account_blocked …")
    reason: str
    kind: str | None = None
    account: CodeHolderOut | None = None
    cert: int | None = None
    counter: int | None = None
    code_time_ms: int | None = None
