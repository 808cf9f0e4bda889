"""Offline selling (docs/architecture.md): with the server away the POS sells from its caches within the
risk limits the policy sets (per purchase, per card per day, total unsynced amount); each limit
declines with a clear reason; when the server returns the queue drains and every sale is on the
ledger exactly once."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from sim.control import AgentControl
from tests.helpers import PosProc, ServerProc, ykt
from tests.posutil import (
    admin_args,
    journal_rows,
    restart_server,
    sale_amounts,
    set_policy,
    wait_feed_current,
    wait_policy_cached,
)


def test_risk_limits_decline_offline_and_the_queue_drains(tmp_path: Path) -> None:
    server = ServerProc(tmp_path / "server").start()
    pos = PosProc(tmp_path / "pos", server, token=server.enroll_token("off-1")).start()
    try:
        r = ykt(
            *admin_args(server),
            "policy",
            "set",
            "offline_max_purchase_fen=3000",
            "offline_max_card_day_fen=5000",
            "offline_max_total_fen=9000",
            "--json",
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["offline_max_total_fen"] == 9000
        wait_policy_cached(
            pos,
            offline_max_purchase_fen=3000,
            offline_max_card_day_fen=5000,
            offline_max_total_fen=9000,
        )
        cards = {
            who: server.add_account(f"O{n}", n, topup_fen=20000, limit_fen=100000)
            for n, who in ((1, "a"), (2, "b"), (3, "c"))
        }
        wait_feed_current(server, pos)
        ctl = AgentControl(pos.url)

        def sale(who: str, fen: int) -> dict[str, object]:
            return ctl.sale(fen, cards[who]["card_no"])

        server.stop()  # a graceful stop, as an operator would
        over = sale("a", 3001)
        assert not over["approved"] and over["offline"] and over["code"] == "risk_limit"
        assert "per purchase (¥30.00)" in str(over["reason"])
        for fen, bal in ((3000, 17000), (2000, 15000)):
            ok = sale("a", fen)
            assert ok["approved"] and ok["offline"] and ok["balance_fen"] == bal, ok
        day = sale("a", 1)
        assert day["code"] == "risk_limit" and "per card per day (¥50.00)" in str(day["reason"])
        assert sale("b", 3000)["approved"]  # 8000 unsynced on this terminal
        total = sale("b", 1001)
        assert total["code"] == "risk_limit" and "unsynced" in str(total["reason"])
        assert sale("b", 1000)["approved"]  # exactly 9000
        assert "unsynced" in str(sale("c", 1)["reason"])
        st = pos.status()
        assert st["online"] is False and st["queued"] == 4 and st["unsynced_offline_fen"] == 9000

        restart_server(server)
        st = pos.wait_synced(15)
        assert st["queued"] == 0 and st["unsynced_offline_fen"] == 0
        r = ykt(
            *admin_args(server),
            "account",
            "show",
            "--number",
            cards["a"]["number"],
            "--json",
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert sale_amounts(json.loads(r.stdout)) == [3000, 2000]
        # the same as text: bills, and a flow that has lines without money (the card's issue)
        r = ykt(
            *admin_args(server), "account", "show", "--number", cards["a"]["number"], check=False
        )
        assert r.returncode == 0, r.stderr
        assert "-¥30.00" in r.stdout and "card_issue" in r.stdout, r.stdout
        for who, sales in (("a", [3000, 2000]), ("b", [3000, 1000]), ("c", [])):
            acct = server.account(cards[who]["number"])
            assert sale_amounts(acct) == sales
            assert acct["balance_fen"] == 20000 - sum(sales)
        r = ykt(*admin_args(server), "ledger", "check", "--json", check=False)
        assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stdout + r.stderr
        assert [x["amt"] for x in journal_rows(pos.data)] == [3000, 2000, 3000, 1000]

        # the total limit is freed by the drain; the per-card-per-day one is not
        server.stop(signal.SIGKILL)
        assert sale("a", 1)["code"] == "risk_limit"
        assert sale("b", 1000)["approved"]
        assert sale("c", 3000)["approved"]
        restart_server(server)
        pos.wait_synced(15)
        assert sale_amounts(server.account(cards["c"]["number"])) == [3000]
        assert sale_amounts(server.account(cards["b"]["number"])) == [3000, 1000, 1000]
    finally:
        pos.stop()
        server.stop(signal.SIGKILL)


def test_offline_balance_is_tracked_across_offline_sales(tmp_path: Path) -> None:
    server = ServerProc(tmp_path / "server").start()
    pos = PosProc(tmp_path / "pos", server, token=server.enroll_token("off-2")).start()
    try:
        card = server.add_account("O10", 10, topup_fen=5000, limit_fen=100000)
        pos.wait_card_known(card["card_no"])
        ctl = AgentControl(pos.url)
        assert ctl.sale(1000, card["card_no"])["balance_fen"] == 4000  # online
        wait_feed_current(server, pos)
        server.stop(signal.SIGKILL)
        out = ctl.sale(3000, card["card_no"])
        assert out["approved"] and out["offline"] and out["balance_fen"] == 1000
        short = ctl.sale(1001, card["card_no"])
        assert not short["approved"] and short["code"] == "insufficient"
        assert "¥10.00" in str(short["reason"])
        assert ctl.sale(1000, card["card_no"])["balance_fen"] == 0
        restart_server(server)
        pos.wait_synced(15)
        acct = server.account(card["number"])
        assert acct["balance_fen"] == 0 and sale_amounts(acct) == [1000, 3000, 1000]
    finally:
        pos.stop()
        server.stop(signal.SIGKILL)


def test_offline_double_spend_on_two_terminals_is_applied_and_flagged(tmp_path: Path) -> None:
    """Two terminals each sell within the cached balance; at sync both sales are applied, the
    balance goes negative and the account is flagged and frozen (docs/architecture.md, R12)."""
    server = ServerProc(tmp_path / "server").start()
    # one card, two tills: the agents share the simulated card (each its own would be a clone)
    reader = f"sim://r1?cards={tmp_path / 'cards'}"
    one = PosProc(
        tmp_path / "pos1", server, token=server.enroll_token("off-3"), reader=reader
    ).start()
    two = PosProc(
        tmp_path / "pos2", server, token=server.enroll_token("off-4"), reader=reader
    ).start()
    try:
        set_policy(server, offline_max_purchase_fen=10000)
        card = server.add_account("O20", 20, topup_fen=5000, limit_fen=100000)
        for p in (one, two):
            wait_feed_current(server, p)
        server.stop(signal.SIGKILL)
        for p in (one, two):
            out = AgentControl(p.url).sale(4000, card["card_no"])
            assert out["approved"] and out["offline"] and out["balance_fen"] == 1000
        restart_server(server)
        one.wait_synced(15)
        two.wait_synced(15)
        acct = server.account(card["number"])
        assert acct["balance_fen"] == -3000 and sale_amounts(acct) == [4000, 4000]
        assert "overdrawn" in acct["flags"] and acct["status"] == "frozen"
        out = AgentControl(one.url).sale(100, card["card_no"])
        assert not out["approved"] and "frozen" in str(out["reason"])
        assert server.admin().call("GET", "/v1/admin/ledger/check")["ok"] is True
    finally:
        one.stop()
        two.stop()
        server.stop(signal.SIGKILL)
