"""HTTP routes of R7 top-ups by order (sync/server/topups.py): the holder's orders
(``/v1/app/topups``), the payment providers' notifications (``/v1/paygate/{channel}/notify``,
authenticated by the provider's signature), the registry of providers and the reconciliation
(``/v1/admin/…``).  Routes are thin: they authenticate, then call the service."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from sync.server import hot, topup_report, topups
from sync.server.api_auth import ApiAuth
from sync.server.api_models import Date
from sync.server.context import Context
from sync.server.staff import Actor
from sync.server.topup_models import (
    AppTopupIn,
    NotifyOut,
    PaygateIn,
    PaygateOut,
    PaygatesOut,
    ProviderChannel,
    TopupOrderOut,
    TopupReportOut,
)

OrderPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
ChannelPath = Annotated[ProviderChannel, Path()]


def create_router(ctx: Context, auth: ApiAuth) -> APIRouter:
    r = APIRouter()
    Holder = Annotated[dict[str, Any], Depends(auth.holder)]
    Registry = Annotated[Actor, auth.staff("paygate")]
    LedgerRead = Annotated[Actor, auth.staff("ledger")]

    @r.post("/v1/app/topups", tags=["app"], response_model=TopupOrderOut)
    def app_topup(body: AppTopupIn, who: Holder) -> dict[str, Any]:
        """R7: a top-up order by a channel (switched on or off by the operator), confirmed
        with the query password.  No money moves: pay the order at the channel's payment
        provider (``pay``); it is credited when the provider's signed notification arrives.
        Alipay lands in the transition balance and moves in at the next card transaction on
        a POS.  A retry with the same ``request_id`` returns the same order."""
        return topups.create_order(
            ctx, who, body.amount_fen, body.channel, body.password, body.request_id
        )

    @r.get("/v1/app/topups/{order_id}", tags=["app"], response_model=TopupOrderOut)
    async def app_topup_order(
        order_id: OrderPath,
        who: Holder,
        wait: Annotated[float, Query(ge=0, le=hot.MAX_WAIT_S)] = 0,
    ) -> dict[str, Any]:
        """One of your top-up orders; with ``wait``, answers once it is no longer open (or
        after ``wait`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        notifier = ctx.notifier
        while True:
            seen = notifier.generation
            out = await run_in_threadpool(topups.get_order, ctx, who, order_id)
            remaining = deadline - loop.time()
            if out["status"] != "open" or remaining <= 0 or notifier.closing:
                return out
            await notifier.wait(seen, min(remaining, 1.0))

    @r.post("/v1/paygate/{channel}/notify", tags=["paygate"], response_model=NotifyOut)
    async def paygate_notify(channel: ChannelPath, request: Request) -> dict[str, Any]:
        """R7: the payment provider's signed payment notification (sync.paygate.Notification;
        headers ``X-Paygate-Timestamp``, ``X-Paygate-Nonce``, ``X-Paygate-Signature``).  The
        order is credited once per provider transaction; a redelivery is acknowledged without
        crediting again.  A forged, stale, late or mismatched notification is refused and
        raised as an alarm."""
        body = await request.body()
        headers = {k: v for k, v in request.headers.items()}
        return await run_in_threadpool(topups.notify, ctx, channel, body, headers)

    @r.get("/v1/admin/paygates", tags=["admin"], response_model=PaygatesOut)
    def paygates(actor: Registry) -> dict[str, Any]:
        """The payment providers registered per channel (R7)."""
        return {"paygates": topups.gates(ctx)}

    @r.put("/v1/admin/paygates/{channel}", tags=["admin"], response_model=PaygateOut)
    def paygate_set(
        channel: ChannelPath, body: PaygateIn, request: Request, actor: Registry
    ) -> dict[str, Any]:
        """Register (or replace) the payment provider of a channel: its URL and the public key
        its notifications are signed with (permission ``paygate``: whoever holds it decides
        whose signature puts money into the ledger)."""
        notify_url = body.notify_url or str(request.base_url).rstrip("/") + (
            f"/v1/paygate/{channel}/notify"
        )
        return topups.register(ctx, channel, body.url, body.public_key, notify_url, actor.name)

    @r.get("/v1/admin/reports/topups", tags=["admin"], response_model=TopupReportOut)
    def report_topups(date: Annotated[Date, Query()], actor: LedgerRead) -> dict[str, Any]:
        """R7 daily reconciliation: orders paid at each provider (its signed statement, or
        what it notified when it cannot be reached) against what the ledger credited, with
        every difference flagged."""
        return topup_report.report(ctx, date)

    return r
