"""Card-present operations of a kiosk (issue 5 part 2): R5, R6, R11, R17, R20, and the card
proof that every one of them needs."""

from __future__ import annotations

from typing import Any

import pytest

from sync.client import ServerClient
from sync.errors import AuthError, ServerRefused
from tests.live import Live, Pos, proof


def kcall(k: ServerClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return k.request("POST", path, body=body)


def test_r20_kiosk_reads_the_card_on_its_reader(live: Live) -> None:
    card = live.add_account("K1", 31, topup_fen=1234)
    k = live.terminal("kiosk")
    out = kcall(k, "/v1/kiosk/card", {"card": proof(card)})
    assert (out["number"], out["balance_fen"], out["limit_fen"]) == ("K1", 1234, 5000)


@pytest.mark.parametrize(
    "forge",
    [
        {"tag": "00" * 16},  # data not read from the genuine card
        {"uid": "DEADBEEF"},  # the card's data on another chip (a clone)
        {"generation": 2},  # a generation that was never issued
        {"card_no": "99999999"},
    ],
)
def test_kiosk_cannot_act_without_the_cards_proof(live: Live, forge: dict[str, Any]) -> None:
    """A kiosk cannot do a card-present operation without the card's proof."""
    card = live.add_account("K2", 32)
    k = live.terminal("kiosk")
    bad = {**proof(card), **forge}
    for path, extra in (
        ("/v1/kiosk/card", {}),
        ("/v1/kiosk/card/limit", {"query_password": card["password"], "limit_fen": 9900}),
        (
            "/v1/kiosk/card/consume-password",
            {"query_password": card["password"], "new_password": "654321"},
        ),
        ("/v1/kiosk/card/correction", {}),
    ):
        with pytest.raises(AuthError) as err:
            kcall(k, path, {"card": bad, **extra})
        assert err.value.code == "bad_card_proof"
    assert live.admin("GET", "/v1/admin/accounts/K2")["limit_fen"] == 5000


def test_card_present_operations_need_a_kiosk_not_a_pos_nor_a_bare_request(live: Live) -> None:
    card = live.add_account("K3", 33)
    pos = live.terminal("pos")
    with pytest.raises(AuthError) as err:
        kcall(pos, "/v1/kiosk/card", {"card": proof(card)})
    assert err.value.code == "wrong_role"
    unsigned = live.call("POST", "/v1/kiosk/card", {"card": proof(card)})
    assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "unsigned"


def test_r5_consumption_password_changed_with_the_card(live: Live) -> None:
    """R5: changed only with the card; the query password confirms; POS then takes the new one
    over the limit (R6)."""
    card = live.add_account("K4", 34, topup_fen=20000)
    k = live.terminal("kiosk")
    body = {"card": proof(card), "query_password": "000000", "new_password": "246810"}
    with pytest.raises(AuthError):
        kcall(k, "/v1/kiosk/card/consume-password", body)
    out = kcall(k, "/v1/kiosk/card/consume-password", {**body, "query_password": card["password"]})
    assert out["changed"] == "consume_password" and out["write"]["pin_tries"] == 0
    assert out["write"]["pin_verifier"].startswith("scrypt$")
    pos = Pos(live.terminal("pos"))
    assert pos.sell(card, 6000)["code"] == "needs_pin"
    assert pos.sell(card, 6000, pin=card["password"])["code"] == "wrong_pin"
    assert pos.sell(card, 6000, pin="246810")["approved"]


def test_r6_daily_limit_changed_with_the_card(live: Live) -> None:
    card = live.add_account("K5", 35, topup_fen=20000)
    k = live.terminal("kiosk")
    out = kcall(
        k,
        "/v1/kiosk/card/limit",
        {"card": proof(card), "query_password": card["password"], "limit_fen": 10000},
    )
    assert out["write"] == {"limit_fen": 10000}
    pos = Pos(live.terminal("pos"))
    assert pos.sell(card, 8000)["approved"]  # under the new limit: no password
    assert pos.sell(card, 3000)["code"] == "needs_pin"
    with pytest.raises(ServerRefused) as err:  # amounts are positive and bounded
        kcall(
            k,
            "/v1/kiosk/card/limit",
            {"card": proof(card), "query_password": card["password"], "limit_fen": 0},
        )
    assert err.value.status == 422


def test_r20_card_correction_rewrites_the_servers_data(live: Live) -> None:
    """R20 card correction: basic data and validity (here after an extension, R13)."""
    card = live.add_account("K6", 36)
    live.admin("POST", "/v1/admin/accounts/K6/extend", {"expires": "2031-07-31"})
    out = kcall(live.terminal("kiosk"), "/v1/kiosk/card/correction", {"card": proof(card)})
    w = out["write"]
    assert (w["card_no"], w["expires"], w["tag"], w["type"]) == (
        card["card_no"],
        "2031-07-31",
        card["tag"],
        "student",
    )


def test_r11_kiosk_reissue_is_idempotent_and_the_old_card_dies(live: Live) -> None:
    """R11: identity by number + ID-card number; the fee once per order even when the kiosk
    retries (with another blank); the old card is refused everywhere once the new one exists."""
    card = live.add_account("K7", 37, topup_fen=5000)
    k = live.terminal("kiosk")
    pos = Pos(live.terminal("pos"))
    body = {"order_id": "order-0001", "uid": "0A0B0C0D", "number": "K7", "id_card": card["id_card"]}
    first = kcall(k, "/v1/kiosk/reissue", body)
    fee = live.ctx.policy()["reissue_fee_fen"]
    assert first["created"] and first["fee_fen"] == fee and first["balance_fen"] == 5000 - fee
    new = first["card"]
    assert new["generation"] == 2 and new["uid"] == "0A0B0C0D"
    # the encoding failed; the kiosk retries with another blank: no second charge
    retry = kcall(k, "/v1/kiosk/reissue", {**body, "uid": "0A0B0C0E"})
    assert not retry["created"] and retry["balance_fen"] == 5000 - fee
    assert retry["card"]["card_no"] == new["card_no"] and retry["card"]["uid"] == "0A0B0C0E"
    done = k.request("POST", "/v1/kiosk/reissue/order-0001/done")
    assert done["status"] == "done"
    again = kcall(k, "/v1/kiosk/reissue", {**body, "uid": "0A0B0C0E"})
    assert again["status"] == "done" and again["balance_fen"] == 5000 - fee
    # the old card: refused at the POS and at the kiosk
    assert "replaced" in pos.sell(card, 100)["reason"]
    with pytest.raises(ServerRefused) as err:
        kcall(k, "/v1/kiosk/card", {"card": proof(card)})
    assert err.value.code == "card_replaced"
    assert pos.sell(retry["card"], 100)["approved"]
    acct = live.admin("GET", "/v1/admin/accounts/K7")
    assert [b["kind"] for b in acct["flow"] if b.get("amount_fen")].count("fee") == 1


def test_r11_kiosk_reissue_checks_identity_and_card_type(live: Live) -> None:
    """R11: the ID-card number must match; consumer and temporary cards go to the desk."""
    live.add_account("K8", 38, topup_fen=5000)
    consumer = live.add_account("K9", 39, kind="consumer", topup_fen=5000)
    k = live.terminal("kiosk")
    from tests.helpers import id_card

    wrong = {"order_id": "order-0002", "uid": "0A0B0C01", "number": "K8", "id_card": id_card(40)}
    with pytest.raises(AuthError) as err:
        kcall(k, "/v1/kiosk/reissue", wrong)
    assert err.value.code == "identity_mismatch"
    with pytest.raises(ServerRefused) as err2:
        kcall(
            k,
            "/v1/kiosk/reissue",
            {**wrong, "number": "K9", "id_card": consumer["id_card"], "order_id": "order-0003"},
        )
    assert err2.value.code == "desk_only"
    with pytest.raises(ServerRefused) as err3:  # GB 11643 checksum validated on the field
        kcall(k, "/v1/kiosk/reissue", {**wrong, "id_card": "510102200401010021"})
    assert err3.value.status == 422


def test_r11_reissue_fee_needs_the_balance(live: Live) -> None:
    card = live.add_account("K10", 41)
    with pytest.raises(ServerRefused) as err:
        kcall(
            live.terminal("kiosk"),
            "/v1/kiosk/reissue",
            {
                "order_id": "order-0004",
                "uid": "0A0B0C02",
                "number": "K10",
                "id_card": card["id_card"],
            },
        )
    assert err.value.code == "insufficient"


def test_r17_found_card_put_on_a_kiosk_reader(live: Live) -> None:
    card = live.add_account("K11", 42)
    out = kcall(
        live.terminal("kiosk"), "/v1/kiosk/found-cards", {"card": proof(card), "place": "二食堂"}
    )
    assert out["registered"]
    tok = live.login("K11", card["password"])
    live.call("POST", "/v1/app/report-loss", token=tok)
    assert (
        live.call("GET", "/v1/app/found-cards", token=tok).json()["found"][0]["place"] == "二食堂"
    )
