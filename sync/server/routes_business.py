"""HTTP routes of the card holders' business (the app, WeChat, the website: ``/v1/app/…``;
card-less operations: ``/v1/holder/…``), of kiosks' card-present operations (``/v1/kiosk/…``)
and of the service desk (``/v1/admin/…``).  Routes are thin: they authenticate, then call the
service modules."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from sync.bounds import MAX_ID
from sync.server import (
    desk,
    electricity,
    found_cards,
    holder_ops,
    kiosk,
    queries,
    reissue,
    sso,
    staff,
)
from sync.server.api_auth import ApiAuth, client_of
from sync.server.api_models import (
    AuditOut,
    BuildingIn,
    BuildingOut,
    BuildingsOut,
    CancelOut,
    CardWriteOut,
    ChangedOut,
    ChangePasswordIn,
    Date,
    DeskReissueIn,
    ElectricityIn,
    ElectricityOut,
    ExtendIn,
    FoundCardIn,
    FoundClosedOut,
    FoundListOut,
    FoundRegisteredOut,
    HolderCredentialsIn,
    KioskCardIn,
    KioskConsumePasswordIn,
    KioskFoundIn,
    KioskLimitIn,
    KioskQueryPasswordIn,
    KioskQuoteIn,
    KioskReadOut,
    KioskReissueIn,
    LoginOut,
    MeOut,
    PageOut,
    RefundIn,
    RefundOut,
    ReissueOut,
    ReissueQuoteOut,
    RoomOut,
    RoomsOut,
    SsoFinishIn,
    SsoStartOut,
    StaffIn,
    StaffListOut,
    StaffOut,
    StatusOut,
    TransitionOut,
)
from sync.server.context import Context
from sync.server.staff import Actor

NumberPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
CodePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
OrderPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
Cursor = Annotated[str | None, Query()]  # bounded and checked by queries (400 bad_cursor)
Limit = Annotated[int, Query(ge=1, le=queries.MAX_PAGE)]
DateQ = Annotated[Date | None, Query()]


def create_router(ctx: Context, auth: ApiAuth) -> APIRouter:
    r = APIRouter()
    Holder = Annotated[dict[str, Any], Depends(auth.holder)]
    Kiosk = Annotated[dict[str, Any], Depends(auth.terminal)]  # kiosks only (sync.server.roles)

    # staff with one permission each (every call audited, see ApiAuth.staff)
    Cards = Annotated[Actor, auth.staff("cards")]
    Refund = Annotated[Actor, auth.staff("refund")]
    FoundCards = Annotated[Actor, auth.staff("found_cards")]
    Electricity = Annotated[Actor, auth.staff("electricity")]
    Reader = Annotated[Actor, auth.staff("accounts.read")]
    StaffAdmin = Annotated[Actor, auth.staff("staff")]
    Auditor = Annotated[Actor, auth.staff("audit")]

    # == card holders: the app, WeChat, the website =============================================
    @r.get("/v1/app/me", tags=["app"], response_model=MeOut)
    def app_me(who: Holder) -> dict[str, Any]:
        """The signed-in holder's account: balance, transition balance (R7), limit (R6),
        status, validity of the card and the phone's virtual card (R13)."""
        return holder_ops.me(ctx, who)

    @r.get("/v1/app/bills", tags=["app"], response_model=PageOut)
    def app_bills(
        who: Holder,
        from_date: DateQ = None,
        to_date: DateQ = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """R9 bills (账单): top-ups and purchases, newest first; dates are campus days,
        inclusive."""
        return queries.page(
            ctx,
            who["id"],
            "bills",
            from_date=from_date,
            to_date=to_date,
            limit=limit,
            cursor=cursor,
        )

    @r.get("/v1/app/flow", tags=["app"], response_model=PageOut)
    def app_flow(
        who: Holder,
        from_date: DateQ = None,
        to_date: DateQ = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """R9 transaction flow (交易流水): account operations, top-ups and purchases."""
        return queries.page(
            ctx, who["id"], "flow", from_date=from_date, to_date=to_date, limit=limit, cursor=cursor
        )

    @r.post("/v1/app/password", tags=["app"], response_model=ChangedOut)
    def app_password(body: ChangePasswordIn, who: Holder, request: Request) -> dict[str, Any]:
        """R4: change the query password (the current one confirms it)."""
        return holder_ops.change_query_password(
            ctx, who, body.old_password, body.new_password, client=client_of(request)
        )

    @r.post("/v1/app/report-loss", tags=["app"], response_model=StatusOut)
    def app_report_loss(who: Holder) -> dict[str, Any]:
        """R10: report the card lost: card and phone codes stop at once (R2)."""
        return holder_ops.session_status(ctx, who, "report-loss")

    @r.post("/v1/app/unlock", tags=["app"], response_model=StatusOut)
    def app_unlock(who: Holder) -> dict[str, Any]:
        """R10: undo a loss report (a frozen account is unfrozen only at the desk, R12)."""
        return holder_ops.session_status(ctx, who, "unlock")

    @r.get("/v1/app/electricity/buildings", tags=["app"], response_model=BuildingsOut)
    def app_buildings(who: Holder) -> dict[str, Any]:
        """R15: the dorm buildings."""
        return {"buildings": electricity.list_buildings(ctx)}

    @r.get("/v1/app/electricity/buildings/{building}", tags=["app"], response_model=RoomsOut)
    def app_rooms(building: CodePath, who: Holder) -> dict[str, Any]:
        """R15: the rooms of a building."""
        return {"building": building, "rooms": electricity.list_rooms(ctx, building)}

    @r.post("/v1/app/electricity", tags=["app"], response_model=ElectricityOut)
    def app_electricity(body: ElectricityIn, who: Holder) -> dict[str, Any]:
        """R15: transfer from the balance to a dorm room's electricity account."""
        return electricity.transfer(
            ctx, who, body.building, body.room, body.amount_fen, body.request_id
        )

    @r.post("/v1/app/found-cards", tags=["app"], response_model=FoundRegisteredOut)
    def app_found_register(body: FoundCardIn, who: Holder) -> dict[str, Any]:
        """R17: register a card you found (its owner learns where it is, not who you are)."""
        return found_cards.register(
            ctx, body.card_no, body.place, body.note, f"app {who['number']}"
        )

    @r.get("/v1/app/found-cards", tags=["app"], response_model=FoundListOut)
    def app_found_lookup(who: Holder) -> dict[str, Any]:
        """R17: look up your own found cards, after reporting the loss (R10)."""
        return found_cards.lookup(ctx, who)

    @r.get("/v1/app/sso/start", tags=["app"], response_model=SsoStartOut)
    def app_sso_start(
        redirect_uri: Annotated[str, Query(min_length=8, max_length=500)],
    ) -> dict[str, Any]:
        """R16: begin campus single sign-on: send the browser to ``authorization_url``."""
        return sso.start(ctx, redirect_uri)

    @r.post("/v1/app/sso/finish", tags=["app"], response_model=LoginOut)
    def app_sso_finish(body: SsoFinishIn) -> dict[str, Any]:
        """R16: finish campus single sign-on with the code the provider sent back; students
        and staff only."""
        return sso.finish(ctx, body.state, body.code)

    # == card-less operations: website, WeChat, kiosks without the card ==========================
    @r.post("/v1/holder/report-loss", tags=["holder"], response_model=StatusOut)
    def holder_report_loss(body: HolderCredentialsIn, request: Request) -> dict[str, Any]:
        """R10 card-less: number (card number for temporary cards) + query password; rate
        limited per number and per client."""
        return holder_ops.cardless_status(
            ctx, body.number, body.password, "report-loss", client_of(request)
        )

    @r.post("/v1/holder/unlock", tags=["holder"], response_model=StatusOut)
    def holder_unlock(body: HolderCredentialsIn, request: Request) -> dict[str, Any]:
        """R10 card-less unlock; rate limited like the loss report."""
        return holder_ops.cardless_status(
            ctx, body.number, body.password, "unlock", client_of(request)
        )

    # == kiosks: card-present operations (R20) ===================================================
    @r.post("/v1/kiosk/card", tags=["kiosk"], response_model=KioskReadOut)
    def kiosk_read(body: KioskCardIn, term: Kiosk) -> dict[str, Any]:
        """R20 with the card: balance, transition balance, limit, status."""
        return kiosk.read(ctx, term, body.card.model_dump())

    @r.post("/v1/kiosk/card/query-password", tags=["kiosk"], response_model=ChangedOut)
    def kiosk_query_password(body: KioskQueryPasswordIn, term: Kiosk) -> dict[str, Any]:
        """R4 at the kiosk with the card: the old query password confirms."""
        return kiosk.change_query_password(
            ctx, term, body.card.model_dump(), body.old_password, body.new_password
        )

    @r.post("/v1/kiosk/card/consume-password", tags=["kiosk"], response_model=CardWriteOut)
    def kiosk_consume_password(body: KioskConsumePasswordIn, term: Kiosk) -> dict[str, Any]:
        """R5: change the consumption password with the card; answers what to write on it."""
        return kiosk.change_consume_password(
            ctx,
            term,
            body.card.model_dump(),
            body.query_password,
            body.new_password,
            body.consume_password,
        )

    @r.post("/v1/kiosk/card/limit", tags=["kiosk"], response_model=CardWriteOut)
    def kiosk_limit(body: KioskLimitIn, term: Kiosk) -> dict[str, Any]:
        """R6: change the daily limit with the card; answers what to write on it."""
        return kiosk.change_limit(
            ctx,
            term,
            body.card.model_dump(),
            body.query_password,
            body.limit_fen,
            body.consume_password,
        )

    @r.post("/v1/kiosk/card/transition", tags=["kiosk"], response_model=TransitionOut)
    def kiosk_transition(body: KioskCardIn, term: Kiosk) -> dict[str, Any]:
        """R7 with the card: move the transition balance onto the account now."""
        return kiosk.pull_transition(ctx, term, body.card.model_dump())

    @r.post("/v1/kiosk/card/correction", tags=["kiosk"], response_model=CardWriteOut)
    def kiosk_correction(body: KioskCardIn, term: Kiosk) -> dict[str, Any]:
        """R20 card correction: the card's basic data and validity to rewrite."""
        return kiosk.correction(ctx, term, body.card.model_dump())

    @r.post("/v1/kiosk/found-cards", tags=["kiosk"], response_model=FoundRegisteredOut)
    def kiosk_found(body: KioskFoundIn, term: Kiosk) -> dict[str, Any]:
        """R17 at the kiosk: the finder puts the found card on the reader."""
        return kiosk.register_found(ctx, term, body.card.model_dump(), body.place)

    @r.post("/v1/kiosk/reissue/quote", tags=["kiosk"], response_model=ReissueQuoteOut)
    def kiosk_reissue_quote(body: KioskQuoteIn, term: Kiosk) -> dict[str, Any]:
        """R11 before the holder confirms: who it is, the fee, the balance after it; refuses
        what the order would refuse (desk-only card types, a fee over the balance).  Nothing
        is charged or changed."""
        acct = reissue.identify_at_kiosk(
            ctx, number=body.number, id_card=body.id_card, auth_code=body.auth_code, use_code=False
        )
        return reissue.quote(ctx, acct)

    @r.post("/v1/kiosk/reissue", tags=["kiosk"], response_model=ReissueOut)
    def kiosk_reissue(body: KioskReissueIn, term: Kiosk) -> dict[str, Any]:
        """R11 self-service reissue (student and staff cards): identity by number + ID-card
        number or a phone authentication code; the fee comes from the balance; idempotent by
        order id (a retry of an order this kiosk opened is not identified again: the holder
        was, and an authentication code is used up)."""
        acct = reissue.kiosk_order(ctx, body.order_id, term["id"]) or reissue.identify_at_kiosk(
            ctx, number=body.number, id_card=body.id_card, auth_code=body.auth_code
        )
        return reissue.reissue(
            ctx,
            acct["id"],
            order_id=body.order_id,
            uid=body.uid,
            via=acct["via"],
            actor=term["id"],
        )

    @r.post("/v1/kiosk/reissue/{order_id}/done", tags=["kiosk"], response_model=ReissueOut)
    def kiosk_reissue_done(order_id: OrderPath, term: Kiosk) -> dict[str, Any]:
        """R11: the kiosk encoded the new card."""
        return reissue.finish(ctx, order_id, None, term["id"])

    # == service desk ============================================================================
    @r.post("/v1/admin/accounts/{number}/reissue", tags=["desk"], response_model=ReissueOut)
    def desk_reissue(number: NumberPath, body: DeskReissueIn, actor: Cards) -> dict[str, Any]:
        """R11 at the desk: any card type; staff checked the identity."""
        aid = desk.account_id_of(ctx, number)
        order_id = body.order_id or f"desk-{ctx.rng.getrandbits(64):016x}"
        out = reissue.reissue(
            ctx,
            aid,
            order_id=order_id,
            uid=body.uid,
            via="desk",
            actor=actor.name,
            charge_fee=body.charge_fee,
            at_kiosk=False,
        )
        return reissue.finish(ctx, out["order_id"], aid, actor.name)

    @r.post("/v1/admin/accounts/{number}/extend", tags=["desk"], response_model=MeOut)
    def desk_extend(number: NumberPath, body: ExtendIn, actor: Cards) -> dict[str, Any]:
        """R13: extend the validity; the phone's virtual card follows."""
        out = desk.extend(ctx, number, body.expires, actor.name)
        out["virtual_card_expires"] = out["expires"]
        return out

    @r.post("/v1/admin/accounts/{number}/cancel", tags=["desk"], response_model=CancelOut)
    def desk_cancel(number: NumberPath, actor: Cards) -> dict[str, Any]:
        """R14: cancel on leaving; the remaining balance is paid out in cash."""
        return desk.cancel(ctx, number, actor.name)

    @r.post("/v1/admin/refunds", tags=["desk"], response_model=RefundOut)
    def desk_refund(body: RefundIn, actor: Refund) -> dict[str, Any]:
        """A refund: a correcting transfer back from the original's credit side."""
        return desk.refund(
            ctx, body.transfer_id, body.amount_fen, body.reason, body.request_id, actor.name
        )

    @r.get("/v1/admin/accounts/{number}/found-cards", tags=["desk"], response_model=FoundListOut)
    def desk_found(number: NumberPath, actor: FoundCards) -> dict[str, Any]:
        """R17: found-card registrations for an account."""
        return found_cards.desk_list(ctx, desk.account_id_of(ctx, number))

    @r.post("/v1/admin/found-cards/{found_id}/close", tags=["desk"], response_model=FoundClosedOut)
    def desk_found_close(
        found_id: Annotated[int, Path(ge=1, le=MAX_ID)], actor: FoundCards
    ) -> dict[str, Any]:
        """R17: the card went back to its owner (or was destroyed)."""
        return found_cards.close(ctx, found_id, actor.name)

    @r.post("/v1/admin/electricity/buildings", tags=["desk"], response_model=BuildingOut)
    def desk_building(body: BuildingIn, actor: Electricity) -> dict[str, Any]:
        """R15: add or rename a dorm building and add rooms to it."""
        return electricity.add_building(ctx, body.code, body.name, list(body.rooms))

    @r.get("/v1/admin/electricity/buildings", tags=["desk"], response_model=BuildingsOut)
    def desk_buildings(actor: Reader) -> dict[str, Any]:
        return {"buildings": electricity.list_buildings(ctx)}

    @r.get(
        "/v1/admin/electricity/buildings/{building}/rooms/{room}",
        tags=["desk"],
        response_model=RoomOut,
    )
    def desk_room(building: CodePath, room: CodePath, actor: Reader) -> dict[str, Any]:
        """R15: a room's electricity account."""
        return electricity.room_info(ctx, building, room)

    @r.post("/v1/admin/staff", tags=["desk"], response_model=StaffOut, status_code=201)
    def staff_add(body: StaffIn, actor: StaffAdmin) -> dict[str, Any]:
        """A staff account with a role; its token is shown once."""
        return staff.add_staff(ctx, body.name, body.role, actor)

    @r.get("/v1/admin/staff", tags=["desk"], response_model=StaffListOut)
    def staff_list(actor: StaffAdmin) -> dict[str, Any]:
        return {"staff": staff.list_staff(ctx)}

    @r.post("/v1/admin/staff/{name}/disable", tags=["desk"], response_model=StaffOut)
    def staff_disable(
        name: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.-]{1,31}$")], actor: StaffAdmin
    ) -> dict[str, Any]:
        return staff.set_staff_status(ctx, name, "disabled")

    @r.post("/v1/admin/staff/{name}/enable", tags=["desk"], response_model=StaffOut)
    def staff_enable(
        name: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.-]{1,31}$")], actor: StaffAdmin
    ) -> dict[str, Any]:
        return staff.set_staff_status(ctx, name, "active")

    @r.get("/v1/admin/audit", tags=["desk"], response_model=AuditOut)
    def audit_log(
        actor: Auditor,
        limit: Limit = 100,
        before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        who: Annotated[str | None, Query(max_length=32)] = None,
    ) -> dict[str, Any]:
        """The audit log, newest first."""
        return staff.audit_log(ctx, limit=limit, before_id=before_id, actor=who)

    return r
