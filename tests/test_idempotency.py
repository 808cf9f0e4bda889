"""Issue 10 item 18: an idempotency key (``request_id``, ``order_id``) makes a *retry* harmless;
reused for a different request it is refused (409 ``request_id_reused``), never answered as if
that different request had been applied.  Every idempotency key of the API is tried here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.handterm import error_of
from tests.live import Live, Pos, open_live


@pytest.fixture(scope="module")
def live_m(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[Live]:
    s = open_live(Path(tmp_path_factory.mktemp("idem")))
    s.admin(
        "POST",
        "/v1/admin/electricity/buildings",
        {"code": "E1", "name": "一号", "rooms": ["101", "102"]},
    )
    yield s
    s.stop()


_n = iter(range(600, 999))


def account(live: Live, topup_fen: int = 10_000) -> dict[str, Any]:
    n = next(_n)
    card = live.add_account(f"ID{n}", n, topup_fen=topup_fen)
    return {**card, "token": live.login(card["number"], card["password"])}


def shown(live: Live, number: str) -> dict[str, Any]:
    return live.admin("GET", f"/v1/admin/accounts/{number}")


def room(live: Live, r: str) -> int:
    return int(live.admin("GET", f"/v1/admin/electricity/buildings/E1/rooms/{r}")["balance_fen"])


def test_electricity_request_id_reused_for_another_room_or_amount_is_refused(
    live_m: Live,
) -> None:
    a = account(live_m)
    before = (room(live_m, "101"), room(live_m, "102"))

    def pay(r: str, amount: int, rid: str = "elec-rid-0001") -> Any:
        body = {"building": "E1", "room": r, "amount_fen": amount, "request_id": rid}
        return live_m.call("POST", "/v1/app/electricity", body, a["token"])

    first = pay("101", 500).json()
    assert first["applied"] is True
    retry = pay("101", 500).json()  # the same request again: harmless
    assert retry["applied"] is False and retry["transfer_id"] == first["transfer_id"]
    for r, amount in (("102", 500), ("101", 600), ("102", 900)):
        resp = pay(r, amount)
        assert resp.status_code == 409, (r, amount, resp.text)
        assert error_of(resp)["code"] == "request_id_reused"
    assert (room(live_m, "101"), room(live_m, "102")) == (before[0] + 500, before[1])
    assert shown(live_m, a["number"])["balance_fen"] == 10_000 - 500
    # the same key of another holder is another request
    b = account(live_m)
    body = {"building": "E1", "room": "102", "amount_fen": 700, "request_id": "elec-rid-0001"}
    assert live_m.call("POST", "/v1/app/electricity", body, b["token"]).json()["applied"] is True
    assert live_m.admin("GET", "/v1/admin/ledger/check")["ok"]


def _sale(live: Live, a: dict[str, Any], amount: int) -> str:
    Pos(live.terminal("pos")).sell(a, amount)
    bills = shown(live, a["number"])["bills"]
    return str(next(b["id"] for b in bills if b["kind"] == "sale"))


def test_refund_request_id_reused_for_another_refund_is_refused(live_m: Live) -> None:
    a = account(live_m)
    sale = _sale(live_m, a, 1000)
    other = _sale(live_m, account(live_m), 800)
    refund = {"transfer_id": sale, "amount_fen": 200, "reason": "cold", "request_id": "rf-reuse-01"}
    first = live_m.admin("POST", "/v1/admin/refunds", refund)
    assert first["applied"] is True
    again = live_m.admin("POST", "/v1/admin/refunds", refund)
    assert again["applied"] is False and again["transfer_id"] == first["transfer_id"]
    for changed in ({"amount_fen": 300}, {"transfer_id": other}, {"reason": "hot"}):
        body = {**refund, **changed}
        resp = live_m.call("POST", "/v1/admin/refunds", body, live_m.token)
        assert resp.status_code == 409, (changed, resp.text)
        assert error_of(resp)["code"] == "request_id_reused"
    assert shown(live_m, a["number"])["balance_fen"] == 10_000 - 1000 + 200
    assert live_m.admin("GET", "/v1/admin/ledger/check")["ok"]


def test_cash_topup_request_id_reused_for_another_account_or_amount_is_refused(
    live_m: Live,
) -> None:
    a, b = account(live_m, 0), account(live_m, 0)
    path = f"/v1/admin/accounts/{a['number']}/topups"
    body = {"amount_fen": 300, "channel": "cash", "request_id": "cash-reuse-1"}
    assert live_m.admin("POST", path, body)["applied"] is True
    assert live_m.admin("POST", path, body)["applied"] is False
    for p, changed in (
        (path, {"amount_fen": 301}),
        (f"/v1/admin/accounts/{b['number']}/topups", {}),
    ):
        resp = live_m.call("POST", p, {**body, **changed}, live_m.token)
        assert resp.status_code == 409, resp.text
        assert error_of(resp)["code"] == "request_id_reused"
    assert (
        shown(live_m, a["number"])["balance_fen"],
        shown(live_m, b["number"])["balance_fen"],
    ) == (
        300,
        0,
    )


def test_desk_reissue_order_reused_without_the_fee_is_refused(live_m: Live) -> None:
    a = account(live_m)
    path = f"/v1/admin/accounts/{a['number']}/reissue"
    first = live_m.admin("POST", path, {"order_id": "desk-reuse-001"})
    assert first["fee_fen"] == 2000
    again = live_m.admin("POST", path, {"order_id": "desk-reuse-001"})
    assert again["created"] is False and again["card"]["card_no"] == first["card"]["card_no"]
    resp = live_m.call(
        "POST", path, {"order_id": "desk-reuse-001", "charge_fee": False}, live_m.token
    )
    assert resp.status_code == 409, resp.text
    assert error_of(resp)["code"] == "request_id_reused"
    assert shown(live_m, a["number"])["balance_fen"] == 10_000 - 2000
