"""The hotlist at the POS: R2 (whatever blocks the account blocks every credential), R10 loss and
unlock, R12 freeze and unfreeze, R11 replaced cards.  Online the server declines at once; once
the delta has reached the terminal, the offline decision declines too; unlock/unfreeze restores.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sim.control import AgentControl
from tests.helpers import PosProc, ServerProc
from tests.posutil import (
    NewCards,
    Shop,
    running_shop,
    sale_amounts,
    server_away,
    status_action,
    wait_account_cached,
)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory, "hot") as running:
        yield running


new_card = NewCards("H", 300, topup_fen=10000)


@pytest.mark.parametrize(
    ("block", "restore", "reason"),
    [("report-loss", "unlock", "lost"), ("freeze", "unfreeze", "frozen")],
)
def test_blocked_account_declined_online_and_offline_until_restored(
    shop: tuple[ServerProc, PosProc], block: str, restore: str, reason: str
) -> None:
    server, pos = shop
    card = new_card(shop)
    ctl = AgentControl(pos.url)
    assert ctl.sale(100, card["card_no"])["approved"]
    status_action(server, card["number"], block)
    # online: declined at once, before any delta could have arrived
    out = ctl.sale(200, card["card_no"])
    assert not out["approved"] and not out["offline"] and reason in out["reason"]
    with server_away(server, pos, settled=True):
        assert wait_account_cached(pos, card["account_id"])["status"] != "normal"
        off = ctl.sale(300, card["card_no"])
        assert not off["approved"] and off["offline"] and reason in off["reason"], off
        assert off["code"] == "declined"
    status_action(server, card["number"], restore)
    assert ctl.sale(400, card["card_no"])["approved"]
    with server_away(server, pos, settled=True):
        off = ctl.sale(500, card["card_no"])
        assert off["approved"] and off["offline"], off
    acct = server.account(card["number"])
    assert acct["status"] == "normal" and sale_amounts(acct) == [100, 400, 500]


def test_replaced_card_declined_online_and_offline(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    old = new_card(shop)
    ctl = AgentControl(pos.url)
    assert ctl.sale(100, old["card_no"])["approved"]
    new = server.admin().call("POST", f"/v1/admin/accounts/{old['number']}/cards", {})
    out = ctl.sale(200, old["card_no"])
    assert not out["approved"] and not out["offline"] and "R11" in out["reason"]
    pos.wait_card_known(new["card_no"])
    assert ctl.sale(300, new["card_no"])["approved"]
    with server_away(server, pos, settled=True):
        off = ctl.sale(400, old["card_no"])
        assert not off["approved"] and off["offline"] and "R11" in off["reason"], off
        ok = ctl.sale(500, new["card_no"])
        assert ok["approved"] and ok["offline"], ok
    assert sale_amounts(server.account(old["number"])) == [100, 300, 500]


def test_card_with_the_wrong_uid_is_declined_online_and_offline(
    shop: tuple[ServerProc, PosProc],
) -> None:
    """A card whose UID is not the one the card number was issued with (a clone)."""
    server, pos = shop
    card = new_card(shop)
    ctl = AgentControl(pos.url)
    clone = "DEADBEEF" if card["uid"] != "DEADBEEF" else "CAFEBABE"
    out = ctl.sale(100, card["card_no"], uid=clone)
    assert not out["approved"] and "UID" in out["reason"]
    with server_away(server, pos, settled=True):
        off = ctl.sale(100, card["card_no"], uid=clone)
        assert not off["approved"] and off["offline"] and "UID" in off["reason"]
    assert sale_amounts(server.account(card["number"])) == []


def test_unknown_card_declined_online_and_offline(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    ctl = AgentControl(pos.url)
    out = ctl.sale(100, "99999999")
    assert not out["approved"] and "unknown card" in out["reason"]
    with server_away(server, pos, settled=True):
        off = ctl.sale(100, "99999999")
        assert not off["approved"] and off["offline"] and "unknown card" in off["reason"]


def test_expired_card_declined_online_and_offline(shop: tuple[ServerProc, PosProc]) -> None:
    """R13: a card past its validity date pays nowhere."""
    server, pos = shop
    card = new_card(shop, expires="2020-12-31")
    ctl = AgentControl(pos.url)
    out = ctl.sale(100, card["card_no"])
    assert not out["approved"] and not out["offline"] and "R13" in out["reason"]
    with server_away(server, pos, settled=True):
        off = ctl.sale(100, card["card_no"])
        assert not off["approved"] and off["offline"] and "R13" in off["reason"]
    assert sale_amounts(server.account(card["number"])) == []
