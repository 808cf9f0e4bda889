"""The issue's acceptance path, end to end with real processes."""

from __future__ import annotations

from sim.control import AgentControl
from tests.helpers import PosProc, ServerProc


def test_sale_online_then_over_limit_with_pin(server: ServerProc, pos: PosProc) -> None:
    card = server.add_account("S2023001", 1, topup_fen=10000)
    pos.wait_card_known(card["card_no"])
    ctl = AgentControl(pos.url)
    first = ctl.sale(1250, card["card_no"])
    assert first["approved"] and first["balance_fen"] == 8750 and not first["offline"]
    asked = ctl.sale(4500, card["card_no"])
    assert not asked["approved"] and asked["needs_pin"]
    second = ctl.sale(4500, card["card_no"], pin=card["password"])
    assert second["approved"] and second["balance_fen"] == 4250
    pos.wait_synced()
    acct = server.account("S2023001")
    assert acct["balance_fen"] == 4250
    assert [b["amount_fen"] for b in acct["bills"]] == [10000, -1250, -4500]
