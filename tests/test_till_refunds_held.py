"""Refunds at the till against the other ways money goes back (docs/security.md, "Operators at
the till"): a sale reversed as a double spend has nothing left for a till refund; a till refund
and the desk's never add up to more than the sale.  In-process server (both databases) with
hand-built terminals and a phone's codes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.clock import ManualClock
from tests.handterm import HandTerminal
from tests.inproc import NOON_MS
from tests.live import Live, open_live
from tests.test_held_money import Holder, code_sale, ledger_ok, refused, terminal


@pytest.fixture
def live(tmp_path: Path, db_kind: str) -> Iterator[Live]:
    server = open_live(tmp_path / "server", clock=ManualClock(NOON_MS))
    yield server
    server.stop()


SUP = "SUP1"


def supervisor(live: Live) -> None:
    live.admin(
        "POST",
        "/v1/admin/operators",
        {"merchant": "DEFAULT", "number": SUP, "name": "主管", "role": "supervisor",
         "pin": "975310"},
    )  # fmt: skip


def till_refund(term: HandTerminal, sale_seq: int, amt: int) -> dict[str, str]:
    sale = term.journal[sale_seq - 1][0]
    return term.record(
        sale.acct,
        amt,
        kind="refund",
        method=sale.method,
        cred=sale.cred,
        x={"refund": {"seq": sale_seq, "sup": SUP}},
    )


def test_a_double_spent_sale_has_nothing_left_for_a_till_refund(live: Live, tmp_path: Path) -> None:
    supervisor(live)
    h = Holder(live, tmp_path, 9, topup=5000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    text = h.code()
    assert t1.push([code_sale(t1, h, 700, text)])["ack"] == 1
    out = t2.push([code_sale(t2, h, 700, text)])
    assert [a["kind"] for a in out["alarms"]] == ["double_spend"]
    assert h.balance == 4300
    # the reversed sale: the till's refund of it moves nothing
    out = t2.push([till_refund(t2, 1, 700)])
    assert [a["kind"] for a in out["alarms"]] == ["refund_refused"]
    assert "more than the 0 fen left" in out["alarms"][0]["detail"]
    assert h.balance == 4300
    # the kept sale: refunded at the till, and then the desk finds nothing left of it
    assert t1.push([till_refund(t1, 1, 700)])["alarms"] == []
    assert h.balance == 5000
    err = refused(
        live, "POST", "/v1/admin/refunds",
        {"transfer_id": f"sale:{t1.terminal_id}:1", "reason": "again"},
    )  # fmt: skip
    assert err["code"] == "over_refund", err
    ledger_ok(live)


def test_a_double_spend_found_in_the_same_batch_as_the_refund(live: Live, tmp_path: Path) -> None:
    """The sale, its reversal and the refund in one ingest run: the run's own reversal counts."""
    supervisor(live)
    h = Holder(live, tmp_path, 10, topup=5000)
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    text = h.code()
    assert t1.push([code_sale(t1, h, 400, text)])["ack"] == 1
    out = t2.push([code_sale(t2, h, 400, text), till_refund(t2, 1, 400)])
    assert sorted(a["kind"] for a in out["alarms"]) == ["double_spend", "refund_refused"]
    assert h.balance == 4600
    ledger_ok(live)
