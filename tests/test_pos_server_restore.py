"""A central server restored from a backup has lost sales it had already acked.  The terminals
still hold every record (the journal never deletes one), notice that the server's ack fell
behind theirs (in the feed, or in the answer to a push) and send those records again: every
sale ends up on the ledger exactly once (docs/architecture.md, nothing lost).  Until they have,
the server is *recovering* (sync/server/recovery.py): entered by ``ykt server restore``, or
detected when the terminal's feed request reports an ack the server does not hold; meanwhile
a cancellation is refused and a sale is decided offline."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from sim.control import AgentControl
from tests.handterm import admin_raw, error_of
from tests.helpers import PosProc, ServerProc, wait_until, ykt
from tests.posutil import (
    admin_args,
    journal_rows,
    restart_server,
    sale_amounts,
    verify_server_chain,
    wait_feed_current,
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("then", "how"), [("idle", "copy"), ("new sale", "ykt server restore")])
def test_server_restored_from_a_backup_gets_the_lost_sales_again(
    tmp_path: Path, then: str, how: str
) -> None:
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
        # the terminal is off meanwhile (else it may send its sales again before the restored
        # server is looked at below)
        pos.stop()
        if how == "copy":  # by hand: the terminal's feed request shows the server went back
            shutil.rmtree(server.data)
            shutil.copytree(backup, server.data)
        else:  # the server waits for the terminal
            db = str(backup / "ykt.db")
            out = ykt("server", "restore", "--data", str(server.data), "--from", db).stdout
            assert "recovering until 1 terminals have pushed again" in out, out
        restart_server(server)
        assert sale_amounts(server.account(number)) == [500]
        if how == "copy":
            pos.start()
        else:
            assert server.admin().call("GET", "/v1/admin/recovery")["recovering"] is True
            r = admin_raw(server, "POST", f"/v1/admin/accounts/{number}/cancel")
            assert (r.status_code, error_of(r)["code"]) == (409, "recovering"), r.text
            shown = ykt(*admin_args(server), "server", "status").stdout
            assert "recovering since" in shown and "waiting for T00001" in shown, shown
            pos.start()
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
        wait_until(lambda: not server.admin().call("GET", "/v1/admin/recovery")["recovering"], 10)
        alarms = server.admin().call("GET", "/v1/admin/alarms")["alarms"]
        assert [a["kind"] for a in alarms] == ["server_recovered", "server_recovering"]
        assert ("detected" in alarms[1]["detail"]) == (how == "copy"), alarms
    finally:
        pos.stop()
        server.stop(signal.SIGKILL)
