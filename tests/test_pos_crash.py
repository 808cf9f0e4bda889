"""Exactly once under crashes, and restarts that resume (docs/architecture.md).

A stream of sales, online and offline (the server goes away part of the time), while the agent
is killed with SIGKILL at random points (delays from a seeded RNG) and restarted with the same
data directory.  At the end every sale the agent reported approved is on the server exactly
once, nothing else is, the terminal's journal chain verifies and so does the chain the server
stored.  A crash may cost the sale in flight (no approval was shown, and then it is either not
charged or charged once); it may never cost or duplicate a reported one.
"""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path

import requests

from sim.control import AgentControl
from sim.errors import SimError
from tests.helpers import PosProc, ServerProc, wait_until
from tests.phone_helpers import Phone, wait_codes_known
from tests.posutil import (
    dead_url,
    journal_rows,
    open_journal,
    restart_server,
    sale_amounts,
    server_records,
    set_policy,
    verify_server_chain,
    wait_feed_current,
)

SEED = 20261126


def test_sigkill_during_a_stream_of_sales_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    server = ServerProc(tmp_path / "server").start()
    pos = PosProc(tmp_path / "pos", server, token=server.enroll_token("crash-1")).start()
    pos.token = None  # later starts reuse the identity
    try:
        set_policy(
            server,
            offline_max_purchase_fen=100000,
            offline_max_card_day_fen=10_000_000,
            offline_max_card_fen=65535,
            offline_max_total_fen=10_000_000,
        )
        cards = [
            server.add_account(f"K{n}", n, topup_fen=1_000_000, limit_fen=10_000_000)
            for n in range(3)
        ]
        wait_feed_current(server, pos)

        reported: dict[int, str] = {}  # amount -> card number, the agent said approved
        in_doubt: set[int] = set()  # the agent died before saying
        amount = 100
        kills = online = 0
        rounds = 10
        for rnd in range(rounds):
            if rnd == 3:
                server.stop(signal.SIGKILL)  # rounds 3 and 4 are offline
            if rnd == 5:
                restart_server(server)
            ctl = AgentControl(pos.url, timeout=5)
            proc = pos.proc
            assert proc is not None
            calm = rng.randint(1, 6)  # sales before the kill is armed, then a random delay
            timer = threading.Timer(rng.uniform(0.0, 0.3), proc.send_signal, (signal.SIGKILL,))
            sold = 0
            while proc.poll() is None:
                if sold == calm:
                    timer.start()
                amount += 1
                card = cards[amount % len(cards)]
                try:
                    out = ctl.sale(amount, card["card_no"])
                except SimError:
                    in_doubt.add(amount)
                    break
                assert out["approved"], out
                if 3 <= rnd < 5:
                    assert out["offline"], out
                online += not out["offline"]
                reported[amount] = card["number"]
                sold += 1
            assert sold >= calm, f"round {rnd}: the agent died before it was killed"
            timer.join()
            proc.wait(10)
            kills += 1
            pos.stop()  # closes the log of the killed process
            pos.proc = None
            pos.start()

        assert kills == rounds and len(reported) >= rounds and 0 < online < len(reported)
        st = pos.wait_synced(20)
        pos.stop()

        # the terminal's own journal: gapless, chained, signed
        journal = open_journal(pos.data)
        try:
            assert journal.verify() == st["journal_head"]
        finally:
            journal.db.close()
        rows = journal_rows(pos.data)
        # the server stored exactly the terminal's records, chained and signed
        stored = server_records(server, rows[0]["term"])
        assert [(r["body"], r["sig"]) for r in stored] == [(r["_body"], r["_sig"]) for r in rows]
        assert verify_server_chain(server, rows[0]["term"]) == len(rows)

        on_server: dict[int, str] = {}
        for card in cards:
            for amt in sale_amounts(server.account(card["number"])):
                assert amt not in on_server, f"sale of {amt} fen applied twice"
                on_server[amt] = card["number"]
        for amt, number in reported.items():
            assert on_server.get(amt) == number, f"approved sale of {amt} fen is not on the server"
        extra = set(on_server) - set(reported)
        assert extra <= in_doubt, f"sales nobody was told about: {sorted(extra - in_doubt)}"
        assert sorted(on_server) == sorted(r["amt"] for r in rows if r["kind"] == "sale")
        assert server.admin().call("GET", "/v1/admin/ledger/check")["ok"] is True
        alarms = server.admin().call("GET", "/v1/admin/alarms")["alarms"]
        assert alarms == []
    finally:
        pos.stop(signal.SIGKILL)
        server.stop(signal.SIGKILL)


def test_restart_resumes_identity_sequence_and_cache(tmp_path: Path) -> None:
    server = ServerProc(tmp_path / "server").start()
    token = server.enroll_token("resume-1")
    pos = PosProc(tmp_path / "pos", server, token=token).start()
    try:
        card = server.add_account("R1", 1, topup_fen=10000)
        pos.wait_card_known(card["card_no"])
        before = pos.status()
        assert AgentControl(pos.url).sale(100, card["card_no"])["seq"] == 1
        pos.wait_synced()
        pos.stop()
        # same data dir, the spent token passed again: no new enrollment, same terminal
        pos.proc = None
        pos.start()
        after = pos.status()
        assert after["terminal_id"] == before["terminal_id"]
        assert after["journal_head"] == 1 and after["acked"] == 1
        assert after["feed_version"] >= before["feed_version"]
        assert AgentControl(pos.url).sale(200, card["card_no"])["seq"] == 2
        pos.wait_synced()
        terminals = server.admin().call("GET", "/v1/admin/terminals")["terminals"]
        assert [t["id"] for t in terminals] == [before["terminal_id"]]
        pos.stop()
        # pointed at a dead server it still knows the card: the cache survived the restart
        pos.server = ServerProc(tmp_path / "nowhere", port=int(dead_url().rsplit(":", 1)[1]))
        pos.token = None
        pos.start()
        st = pos.status()
        assert st["terminal_id"] == before["terminal_id"] and st["cache"]["cards"] >= 1
        out = AgentControl(pos.url).sale(300, card["card_no"])
        assert out["approved"] and out["offline"] and out["seq"] == 3, out
        assert out["balance_fen"] == 10000 - 600
        pos.stop()
        pos.server = server
        pos.start()
        pos.wait_synced()
        assert sale_amounts(server.account("R1")) == [100, 200, 300]
    finally:
        pos.stop(signal.SIGKILL)
        server.stop(signal.SIGKILL)


def test_killed_agent_restarts_with_its_offline_queue(tmp_path: Path) -> None:
    """Sales queued offline survive a SIGKILL and drain after the restart."""
    server = ServerProc(tmp_path / "server").start()
    pos = PosProc(tmp_path / "pos", server, token=server.enroll_token("resume-2")).start()
    try:
        card = server.add_account("R2", 2, topup_fen=10000)
        pos.wait_card_known(card["card_no"])
        wait_feed_current(server, pos)
        server.stop(signal.SIGKILL)
        ctl = AgentControl(pos.url)
        for fen in (110, 120, 130):
            assert ctl.sale(fen, card["card_no"])["offline"]
        assert pos.status()["queued"] == 3
        pos.stop(signal.SIGKILL)
        pos.proc = None
        restart_server(server)
        pos.start()
        wait_until(lambda: pos.status()["queued"] == 0, 15, 0.05)
        assert sale_amounts(server.account("R2")) == [110, 120, 130]
        assert requests.get(pos.url + "/control/state", timeout=5).json()["state"] == "idle"
    finally:
        pos.stop(signal.SIGKILL)
        server.stop(signal.SIGKILL)


def test_a_lost_journal_is_reported_and_the_agent_lives_on(tmp_path: Path) -> None:
    """The journal is lost (deleted, restored from an old backup) while the identity remains:
    the server refuses the new records under old sequence numbers as tampering and acks a
    sequence beyond the new head.  The agent reports it and keeps running (and retrying)."""
    server = ServerProc(tmp_path / "server").start()
    pos = PosProc(tmp_path / "pos", server, token=server.enroll_token("lost-1")).start()
    pos.token = None
    try:
        card = server.add_account("R3", 3, topup_fen=10000)
        pos.wait_card_known(card["card_no"])
        ctl = AgentControl(pos.url)
        for fen in (100, 200):
            assert ctl.sale(fen, card["card_no"])["approved"]
        pos.wait_synced()
        pos.stop()
        for f in pos.data.glob("journal.db*"):
            f.unlink()
        server.stop(signal.SIGKILL)
        pos.start()
        assert AgentControl(pos.url).sale(300, card["card_no"])["offline"]
        restart_server(server)

        def alarms() -> list[dict[str, object]]:
            got = server.admin().call("GET", "/v1/admin/alarms")["alarms"]
            return [a for a in got if a["kind"] == "tamper"]

        wait_until(lambda: pos.status()["push_error"], 15, 0.05)
        wait_until(lambda: len(alarms()) >= 2, 15, 0.1)  # it tried again: the pusher lives
        assert pos.proc is not None and pos.proc.poll() is None
        st = pos.status()
        assert st["queued"] == 1 and "ack" in st["push_error"]
        assert sale_amounts(server.account("R3")) == [100, 200]  # nothing refused was applied
    finally:
        pos.stop(signal.SIGKILL)
        server.stop(signal.SIGKILL)


def test_sigkill_during_reverse_scan_sales_leaves_a_sale_or_a_refund(tmp_path: Path) -> None:
    """Reverse scan (R8) moves the money when the phone pays, before the terminal journals
    anything.  The agent is killed with SIGKILL while a paid request waits for its proof, right
    after the proof was accepted, and at a random instant while the proof is being keyed; it
    restarts with the network back.  Every payment then ends as the sale the journal holds
    (charged once) or refunded: nothing charged without a journaled sale (docs/security.md)."""
    rng = random.Random(SEED)
    server = ServerProc(tmp_path / "server").start()
    card = server.add_account("RV1", 41, topup_fen=10000)
    phone = Phone(server, "RV1", card["password"], tmp_path / "w.json")
    pos = PosProc(tmp_path / "pos", server, token=server.enroll_token("rv-crash")).start()
    pos.token = None  # later starts reuse the identity
    try:
        wait_codes_known(pos)
        paid: dict[int, int] = {}  # order -> amount the phone paid
        reported: set[int] = set()  # orders the agent said were sold
        for rnd in range(6):
            pos.stop()
            pos.proc = None
            pos.server_url = dead_url()  # the terminal's network is cut: reverse scan
            pos.start()
            ctl = AgentControl(pos.url, timeout=5)
            amount = 100 + rnd
            s = ctl.reverse(amount)
            got = phone.scan(s["request_text"])
            paid[s["order"]] = amount
            proc = pos.proc
            assert proc is not None
            how = rnd % 3
            if how == 1:  # killed right after the sale was approved
                out = ctl.proof_code(got["proof_code"])
                assert out["approved"], out
                reported.add(s["order"])
            elif how == 2:  # killed at a random instant while the proof is keyed
                timer = threading.Timer(rng.uniform(0.0, 0.05), proc.send_signal, (signal.SIGKILL,))
                timer.start()
                try:
                    if ctl.proof_code(got["proof_code"])["approved"]:
                        reported.add(s["order"])
                except SimError:
                    pass  # died before it answered: in doubt
                timer.join()
            proc.send_signal(signal.SIGKILL)  # how == 0: killed while the proof is awaited
            proc.wait(10)
            pos.stop()
            pos.proc = None
        pos.server_url = ""  # the network is back
        pos.start()
        pos.wait_synced(30)
        pos.stop()

        rows = journal_rows(pos.data)
        sold = {r["x"]["order"] for r in rows if r["kind"] == "sale"}
        assert reported <= sold, "an approved reverse-scan sale is missing from the journal"
        acct = server.account("RV1")
        assert acct["balance_fen"] == 10000 - sum(paid[o] for o in sold)
        refunds = sorted(b["amount_fen"] for b in acct["bills"] if b["kind"] == "refund")
        assert refunds == sorted(paid[o] for o in paid if o not in sold)
        assert server.admin().call("GET", "/v1/admin/alarms")["alarms"] == []
        assert server.admin().call("GET", "/v1/admin/ledger/check")["ok"] is True
    finally:
        pos.stop(signal.SIGKILL)
        server.stop(signal.SIGKILL)
