"""Request and response models of R7 top-ups by order (sync/server/topups.py): the holder's
orders, the payment providers' notifications, the operators' registry of providers and the
daily reconciliation.  Request models are strict (sync.server.api_models.Strict)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sync.bounds import Fen
from sync.server.api_models import Password6, RequestId, Strict

ProviderChannel = Literal["app", "wechat", "alipay", "bank"]


class AppTopupIn(Strict):
    amount_fen: Fen
    channel: ProviderChannel
    password: Password6 = Field(description="query password confirms the top-up order (R7)")
    request_id: RequestId | None = None


class PayOrderOut(BaseModel):
    """What the app hands the payment provider to pay the order (sync.paygate.PayOrder)."""

    order_id: str
    channel: str
    amount_fen: int
    currency: str
    notify_url: str
    attach: str = Field(description="echoed by the provider: the account's number")
    expires_ms: int


class PayOut(BaseModel):
    provider_url: str = Field(description="the channel's payment provider")
    order: PayOrderOut


class TopupOrderOut(BaseModel):
    order_id: str
    status: Literal["open", "credited", "expired"] = Field(
        description="open: waiting for the payment; credited: the provider's signed "
        "notification arrived and the money is in the ledger; expired: not paid in time"
    )
    amount_fen: int
    channel: str
    currency: str
    created_ms: int
    expires_ms: int
    txn_id: str | None = Field(description="the provider's transaction id, once credited")
    paid_ms: int | None
    credited_ms: int | None
    problem: str | None = Field(
        description="why the last notification for this order was refused (not credited)"
    )
    balance_fen: int
    transition_fen: int
    pay: PayOut | None = Field(description="how to pay the order, while it is open")


class NotifyOut(BaseModel):
    code: Literal["SUCCESS"] = Field(description="the acknowledgement the provider waits for")
    message: str
    order_id: str
    credited: bool = Field(description="false: a redelivery of a notification credited before")


class PaygateIn(Strict):
    url: str = Field(min_length=8, max_length=500, description="the provider's base URL")
    public_key: str = Field(
        min_length=40, max_length=64, description="the provider's Ed25519 public key, base64"
    )
    notify_url: str | None = Field(
        default=None,
        min_length=8,
        max_length=500,
        description="where the provider delivers notifications (default: this server's "
        "/v1/paygate/{channel}/notify as the request reached it)",
    )


class PaygateOut(BaseModel):
    channel: str
    url: str
    public_key: str
    notify_url: str
    updated_ms: int
    actor: str


class PaygatesOut(BaseModel):
    paygates: list[PaygateOut]


class ReportSource(BaseModel):
    channel: str
    provider_url: str | None
    source: Literal["provider", "notified"] = Field(
        description="provider: its signed statement; notified: what it notified (it could "
        "not be reached: see error)"
    )
    error: str | None
    paid_count: int
    paid_fen: int
    credited_count: int
    credited_fen: int


class ReportPayment(BaseModel):
    txn_id: str
    amount_fen: int
    currency: str
    paid_ms: int


class ReportCredit(BaseModel):
    txn_id: str
    amount_fen: int
    transfer_id: str
    paid_ms: int


class ReportOrder(BaseModel):
    order_id: str
    channel: str
    number: str | None
    paid: list[ReportPayment] = Field(description="what the provider says it was paid")
    credited: ReportCredit | None = Field(description="what the ledger credited")
    problem: (
        Literal["paid_not_credited", "credited_not_paid", "amounts_differ", "paid_twice"] | None
    )


class ReportOrderless(BaseModel):
    transfer_id: str
    channel: str
    amount_fen: int
    ts_ms: int
    account_id: int | None


class TopupReportOut(BaseModel):
    date: str
    from_ms: int
    to_ms: int
    channels: list[ReportSource]
    orders: list[ReportOrder]
    credited_without_order: list[ReportOrderless] = Field(
        description="top-ups on a provider channel with no order behind them"
    )
    differences: int
    ok: bool = Field(description="no difference, and every provider's statement was read")
