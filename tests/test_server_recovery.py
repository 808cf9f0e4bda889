"""A server restored from a backup is *recovering* until every terminal has pushed again
(sync/server/recovery.py, docs/operations.md; the fleet simulator's finding 5): it refuses
cancellation pay-outs, refunds out of a balance, transfers out and online approvals (503: the
terminal decides offline), names the terminals still to push, and leaves the state by itself
once each has reported its head and pushed up to it, or when an administrator forces it.  The
state is in the database: a crash or restart keeps it.  On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync.clock import ManualClock
from sync.errors import ServerUnavailable
from sync.server import recovery
from sync.server.context import Context
from tests.handterm import HandTerminal
from tests.inproc import NOON_MS
from tests.live import Live, open_live

DAY_MS = 86_400_000


@pytest.fixture
def live(tmp_path: Path, db_kind: str) -> Iterator[Live]:
    server = open_live(tmp_path / "server", clock=ManualClock(NOON_MS))
    yield server
    server.stop()


def clock(live: Live) -> ManualClock:
    c = live.ctx.clock
    assert isinstance(c, ManualClock)
    return c


def terminal(live: Live, name: str) -> HandTerminal:
    return HandTerminal.enroll(live, name, clock=clock(live))


def refused(live: Live, method: str, path: str, body: Any = None) -> dict[str, Any]:
    r = live.call(method, path, body, live.token)
    assert r.status_code == 409, r.text
    return dict(r.json()["error"])


def report(t: HandTerminal, acked: int | None = None) -> None:
    """A feed request reporting the terminal's journal head (and the ack it holds)."""
    t.client.feed(0, head=len(t.journal), acked=acked)


def waiting(live: Live) -> list[str]:
    st = live.admin("GET", "/v1/admin/recovery")
    assert st["recovering"], st
    return [w["id"] for w in st["waiting"]]


def alarm_kinds(live: Live) -> list[str]:
    return sorted(a["kind"] for a in live.admin("GET", "/v1/admin/alarms")["alarms"])


def test_while_recovering_no_payout_or_online_approval_until_every_terminal_pushed(
    live: Live,
) -> None:
    card = live.add_account("R1", 1, topup_fen=1000)
    aid = int(live.admin("GET", "/v1/admin/accounts/R1")["id"])
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    assert live.admin("GET", "/v1/admin/recovery")["recovering"] is False
    # a PostgreSQL pg_restore (or SQLite: ykt server restore does it)
    st = live.admin("POST", "/v1/admin/recovery", {"reason": "pg_restore of last night"})
    assert st["recovering"] and st["reason"] == "pg_restore of last night"
    assert waiting(live) == [t1.terminal_id, t2.terminal_id]

    # an online approval: 503, so the terminal decides offline (ServerUnavailable)
    with pytest.raises(ServerUnavailable) as exc:
        t1.authorize(1, card["card_no"], 300, uid=card["uid"])
    assert exc.value.code == "recovering" and t2.terminal_id in exc.value.message
    # the desk: no cancellation pay-out, no refund out of the balance
    err = refused(live, "POST", "/v1/admin/accounts/R1/cancel")
    assert err["code"] == "recovering" and t1.terminal_id in err["message"], err
    topup = next(
        b for b in live.admin("GET", "/v1/admin/accounts/R1")["bills"] if b["kind"] == "topup"
    )
    err = refused(
        live, "POST", "/v1/admin/refunds", {"transfer_id": topup["id"], "reason": "by mistake"}
    )
    assert err["code"] == "recovering", err

    report(t1)  # t1 has sold nothing: heard from, nothing to push
    assert waiting(live) == [t2.terminal_id]
    # t2 sold offline meanwhile (the sales the restore took away come back the same way)
    sales = [t2.record(aid, 200), t2.record(aid, 300)]
    report(t2, acked=0)
    st = live.admin("GET", "/v1/admin/recovery")
    assert [(w["id"], w["head_seq"], w["reported_head"]) for w in st["waiting"]] == [
        (t2.terminal_id, 0, 2)
    ]
    assert t2.push(sales[:1])["ack"] == 1
    assert waiting(live) == [t2.terminal_id]
    assert t2.push(sales[1:])["ack"] == 2  # the last one waited for: the state ends
    assert live.admin("GET", "/v1/admin/recovery")["recovering"] is False
    assert alarm_kinds(live) == ["server_recovered", "server_recovering"]

    out = live.admin("POST", "/v1/admin/accounts/R1/cancel")
    assert out["paid_out_fen"] == 500  # the balance less the sales the terminals pushed again
    assert t1.authorize(1, card["card_no"], 100, uid=card["uid"])["approved"] is False


def test_a_terminal_offline_for_days_keeps_it_recovering_until_it_pushes_or_force(
    live: Live,
) -> None:
    live.add_account("R2", 2, topup_fen=1000)
    t1, t2, t3 = terminal(live, "t1"), terminal(live, "t2"), terminal(live, "t3")
    recovery.enter(live.ctx, "restored from ykt-0301.db", "ykt server restore")
    report(t1)
    report(t2)
    clock(live).advance(3 * DAY_MS)
    report(t1)
    assert waiting(live) == [t3.terminal_id]  # three days on, t3 has not been heard from
    assert refused(live, "POST", "/v1/admin/accounts/R2/cancel")["code"] == "recovering"
    # without --force the administrator cannot end it while a terminal is waited for
    err = refused(live, "POST", "/v1/admin/recovery/end", {"force": False})
    assert err["code"] == "recovering" and t3.terminal_id in err["message"]
    st = live.admin("POST", "/v1/admin/recovery/end", {"force": True})
    assert st["recovering"] is False
    audit = live.admin("GET", "/v1/admin/audit?limit=20")["entries"]
    forced = [e for e in audit if e["action"] == "recovery_end" and "true" in e["detail"]]
    assert [e["outcome"] for e in forced] == ["ok"], audit
    ended = [a for a in live.admin("GET", "/v1/admin/alarms")["alarms"] if "force" in a["detail"]]
    assert len(ended) == 1 and t3.terminal_id in ended[0]["detail"]
    assert live.admin("POST", "/v1/admin/accounts/R2/cancel")["paid_out_fen"] == 1000


def test_revoking_the_terminal_that_never_comes_back_ends_the_wait(live: Live) -> None:
    t1, t2 = terminal(live, "t1"), terminal(live, "t2")
    HandTerminal.enroll(live, "k1", role="kiosk", clock=clock(live))  # pushes no journal
    recovery.enter(live.ctx, "restored", "ykt server restore")
    report(t1)
    assert waiting(live) == [t2.terminal_id]  # not the kiosk: the server holds no journal of it
    live.admin("POST", f"/v1/admin/terminals/{t2.terminal_id}/revoke")
    assert live.admin("POST", "/v1/admin/recovery/end", {"force": False})["recovering"] is False


def test_a_terminal_reporting_an_ack_the_server_does_not_hold_puts_it_in_recovery(
    live: Live,
) -> None:
    """The safety net: the database went back behind the operator's back (restored without
    ``ykt server restore``): the terminal's feed request says the server acked record 2, the
    server holds none of its records."""
    card = live.add_account("R3", 3, topup_fen=1000)
    aid = int(live.admin("GET", "/v1/admin/accounts/R3")["id"])
    t1 = terminal(live, "t1")
    sales = [t1.record(aid, 100), t1.record(aid, 150)]
    report(t1, acked=0)  # an ack at or below the server's head is normal
    assert live.admin("GET", "/v1/admin/recovery")["recovering"] is False
    report(t1, acked=2)
    st = live.admin("GET", "/v1/admin/recovery")
    assert st["recovering"] and st["by"] == "detected" and "record 2" in st["reason"]
    with pytest.raises(ServerUnavailable):
        t1.authorize(3, card["card_no"], 100, uid=card["uid"])
    assert t1.push(sales)["ack"] == 2  # pushed again: nothing is waited for
    assert live.admin("GET", "/v1/admin/recovery")["recovering"] is False
    assert alarm_kinds(live) == ["server_recovered", "server_recovering"]


def test_a_push_from_beyond_the_servers_head_puts_it_in_recovery_before_it_applies(
    live: Live,
) -> None:
    """The safety net when a terminal pushes before any feed request: its push says the server
    had acked record 1; the server holds none of its records, so it is recovering before the
    push is applied, and stays so until the terminal has also reported its head."""
    card = live.add_account("R4", 4, topup_fen=1000)
    aid = int(live.admin("GET", "/v1/admin/accounts/R4")["id"])
    t1 = terminal(live, "t1")
    sales = [t1.record(aid, 100), t1.record(aid, 150)]
    assert t1.push(sales[:1], acked=0)["ack"] == 1  # the normal case
    assert live.admin("GET", "/v1/admin/recovery")["recovering"] is False
    t2 = terminal(live, "t2")
    later = [t2.record(aid, 200)]
    assert t2.push(later, acked=1)["ack"] == 1  # as if the server had lost t2's record 1
    st = live.admin("GET", "/v1/admin/recovery")
    assert st["recovering"] and st["by"] == "detected" and "record 1" in st["reason"]
    with pytest.raises(ServerUnavailable):
        t1.authorize(4, card["card_no"], 100, uid=card["uid"])
    report(t1)
    report(t2)
    assert waiting(live) == [t1.terminal_id]  # its record 2 is not pushed yet
    assert t1.push(sales[1:], acked=1)["ack"] == 2
    assert live.admin("GET", "/v1/admin/recovery")["recovering"] is False


def test_a_crash_while_recovering_stays_recovering(live: Live) -> None:
    t1 = terminal(live, "t1")
    recovery.enter(live.ctx, "restored", "ykt server restore")
    live.stop()  # the process dies (the state was committed); it starts again
    ctx = Context.open(live.ctx.config, clock=live.ctx.clock)
    try:
        st = recovery.status(ctx)
        assert st["recovering"] and [w["id"] for w in st["waiting"]] == [t1.terminal_id]
    finally:
        ctx.db.close()
