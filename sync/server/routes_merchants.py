"""HTTP routes of merchants, their operators, shift reports and the daily settlement
(``/v1/admin/merchants``, ``/v1/admin/operators``, ``/v1/admin/reports/…``) and the shift report
a POS pushes (``POST /v1/pos/shift``).  Routes are thin: they authenticate, then call
:mod:`sync.server.merchants` and :mod:`sync.server.settlement`."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from sync.server import merchants, settlement
from sync.server.api_auth import ApiAuth
from sync.server.context import Context
from sync.server.errors import Forbidden
from sync.server.staff import Actor

_B62 = 2**62
Count = Annotated[int, Field(ge=0, le=_B62, strict=True)]
Total = Annotated[int, Field(ge=-_B62, le=_B62, strict=True)]
Ts = Annotated[int, Field(ge=0, le=253_402_300_799_999, strict=True)]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
CodePath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
MethodName = Literal["card", "qr-forward", "qr-reverse"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MerchantIn(Strict):
    code: Code
    name: str = Field(min_length=1, max_length=64)


class OperatorIn(Strict):
    merchant: Code
    number: Code
    name: str = Field(min_length=1, max_length=64)
    role: Literal["cashier", "supervisor"]
    pin: str = Field(pattern=r"^[0-9]{6,12}$", description="6-12 digits")


class Totals(Strict):
    count: Count
    total_fen: Total


class Pending(Strict):
    records: Count
    offline_fen: Total


class ShiftReportIn(Strict):
    """A shift (Z) report, as the POS made it when the shift closed (docs/api.md)."""

    terminal_id: str = Field(min_length=1, max_length=32)
    shift_no: Annotated[int, Field(ge=1, le=_B62, strict=True)]
    opened_ms: Ts
    closed_ms: Ts
    opened_by: str = Field(max_length=32)
    closed_by: str = Field(max_length=32)
    first_seq: Count
    last_seq: Count
    sales: Totals
    sales_by_method: dict[MethodName, Totals]
    offline_sales: Totals
    refunds: Totals
    refunds_by_method: dict[MethodName, Totals]
    net_fen: Total
    pending_sync: Pending


class MerchantOut(BaseModel):
    code: str
    name: str
    created_ms: int
    terminals: list[str]
    operators: int
    balance_fen: int = 0


class MerchantsOut(BaseModel):
    merchants: list[MerchantOut]


class OperatorOut(BaseModel):
    number: str
    merchant: str
    name: str
    role: str
    status: str
    disabled_ms: int
    created_ms: int


class OperatorsOut(BaseModel):
    operators: list[OperatorOut]


class SettlementOut(BaseModel):
    """``merchants``: per merchant its sales, refunds, reversals (``{count, total_fen}``),
    ``net_fen``, ``ledger_net_fen``, ``unsynced_records`` and ``terminals`` (the same figures
    with ``by_method`` and ``by_mode``); ``rows``: one per merchant, terminal, method and mode
    (what ``--csv`` prints)."""

    date: str
    tz: str
    merchants: list[dict[str, Any]]
    totals: dict[str, Any]
    rows: list[dict[str, Any]]


class ShiftReportOut(ShiftReportIn):
    model_config = ConfigDict(extra="allow")
    received_ms: int


class ShiftsOut(BaseModel):
    shifts: list[ShiftReportOut]


class ShiftStoredOut(BaseModel):
    stored: bool
    terminal_id: str
    shift_no: int


def create_merchant_router(ctx: Context, auth: ApiAuth) -> APIRouter:
    r = APIRouter()
    Terminals = Annotated[Actor, auth.staff("terminals")]
    LedgerRead = Annotated[Actor, auth.staff("ledger")]
    Terminal = Annotated[dict[str, Any], Depends(auth.terminal)]

    @r.post("/v1/admin/merchants", tags=["admin"], status_code=201, response_model=MerchantOut)
    def add_merchant(body: MerchantIn, actor: Terminals) -> dict[str, Any]:
        """A merchant (a canteen and its windows): terminals enrolled for it credit its
        ledger account ``mc:<code>``."""
        return merchants.add_merchant(ctx, body.code, body.name)

    @r.get("/v1/admin/merchants", tags=["admin"], response_model=MerchantsOut)
    def list_merchants(actor: Terminals) -> dict[str, Any]:
        return {"merchants": merchants.list_merchants(ctx)}

    @r.post("/v1/admin/operators", tags=["admin"], status_code=201, response_model=OperatorOut)
    def add_operator(body: OperatorIn, actor: Terminals) -> dict[str, Any]:
        """A cashier or supervisor of a merchant; the PIN is kept only as slow hashes."""
        return merchants.add_operator(
            ctx, body.merchant, body.number, body.name, body.role, body.pin
        )

    @r.get("/v1/admin/operators", tags=["admin"], response_model=OperatorsOut)
    def list_operators(
        actor: Terminals, merchant: Annotated[str | None, Query(max_length=32)] = None
    ) -> dict[str, Any]:
        return {"operators": merchants.list_operators(ctx, merchant)}

    @r.post("/v1/admin/operators/{number}/disable", tags=["admin"], response_model=OperatorOut)
    def disable_operator(number: CodePath, actor: Terminals) -> dict[str, Any]:
        """The operator can no longer sign in (terminals learn it from the feed)."""
        return merchants.disable_operator(ctx, number)

    @r.get("/v1/admin/reports/settlement", tags=["admin"], response_model=SettlementOut)
    def settlement_report(
        actor: LedgerRead,
        date: Annotated[str, Query(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")],
        merchant: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = None,
    ) -> dict[str, Any]:
        """Per merchant and terminal: sales, refunds and net of a campus day, by method and
        online/offline, and the records the terminals have not synced yet."""
        return settlement.report(ctx, date, merchant)

    @r.get("/v1/admin/reports/shifts", tags=["admin"], response_model=ShiftsOut)
    def shift_reports(
        actor: LedgerRead,
        terminal: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = None,
    ) -> dict[str, Any]:
        """The shift (Z) reports the terminals pushed."""
        return {"shifts": merchants.shift_reports(ctx, terminal)}

    @r.post("/v1/pos/shift", tags=["terminal"], response_model=ShiftStoredOut)
    def push_shift(body: ShiftReportIn, term: Terminal) -> dict[str, Any]:
        """A POS pushes the report of a closed shift (stored once)."""
        if body.terminal_id != term["id"]:  # the role is checked by sync.server.roles
            raise Forbidden("a terminal reports only its own shifts", "foreign_shift")
        return merchants.store_shift(ctx, term, body.model_dump())

    return r
