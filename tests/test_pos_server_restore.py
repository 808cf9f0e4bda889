"""A central server restored from a backup has lost sales it had already acked.  The terminals
still hold every record (the journal never deletes one), notice that the server's ack fell
behind theirs (in the feed, or in the answer to a push) and send those records again: every
sale ends up on the ledger exactly once (docs/architecture.md, nothing lost)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from sim.control import AgentControl
from tests.helpers import PosProc, ServerProc, wait_until
from tests.posutil import (
    journal_rows,
    restart_server,
    sale_amounts,
    verify_server_chain,
    wait_feed_current,
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("then", ["idle", "new sale"])
def test_server_restored_from_a_backup_gets_the_lost_sales_again(tmp_path: Path, then: str) -> None:
    # SQLite: the backup is a copy of the stopped server's data directory
    server = ServerProc(tmp_path / "server", db_url=None).start()
    pos = PosProc(tmp_path / "pos", server, token=server.enroll_token("restore-1")).start()
    try:
        card = server.add_account("RB1", 1, topup_fen=20_000, limit_fen=100_000)
        number = card["number"]
        wait_feed_current(server, pos)
        ctl = AgentControl(pos.url)
        assert ctl.sale(500, card["card_no"])["approved"]
        pos.wait_synced()

        server.stop()
        backup = tmp_path / "backup"
        shutil.copytree(server.data, backup)
        restart_server(server)
        for fen in (700, 900):
            assert ctl.sale(fen, card["card_no"])["approved"]
        pos.wait_synced()
        assert sale_amounts(server.account(number)) == [500, 700, 900]

        server.stop()  # the server's disk is lost; last night's backup goes back
        shutil.rmtree(server.data)
        shutil.copytree(backup, server.data)
        restart_server(server)
        assert sale_amounts(server.account(number)) == [500]
        expected = [500, 700, 900]
        if then == "new sale":  # its push is answered with the old ack
            sold = ctl.sale(300, card["card_no"])
            assert sold["approved"], sold
            expected.append(300)
        # idle: the feed tells the terminal the server's ack fell behind its own

        wait_until(lambda: sale_amounts(server.account(number)) == expected, timeout=30)
        st = pos.wait_synced()
        assert st["queued"] == 0 and st["unsynced_offline_fen"] == 0
        assert server.account(number)["balance_fen"] == 20_000 - sum(expected)
        assert verify_server_chain(server, st["terminal_id"]) == len(expected)
        assert [r["amt"] for r in journal_rows(pos.data)] == expected
        check = server.admin().call("GET", "/v1/admin/ledger/check")
        assert check["ok"] is True, check
        alarms = server.admin().call("GET", "/v1/admin/alarms")["alarms"]
        assert alarms == []
    finally:
        pos.stop()
        server.stop(signal.SIGKILL)
