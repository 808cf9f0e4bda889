"""Issue 3's acceptance path with the commands a new user runs (child processes only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import PosProc, ServerProc, ykt

pytestmark = pytest.mark.slow


def test_encode_sell_tear_and_sell_again_on_virtual_readers(tmp_path: Path) -> None:
    r, img, img2 = tmp_path / "R", tmp_path / "C.img", tmp_path / "C2.img"
    started = json.loads(
        ykt("sim", "reader", "start", "--slots", "2", "--dir", str(r), "--json").stdout
    )
    try:
        assert Path(started["socket"]).is_socket() and len(started["slots"]) == 2
        name = started["slots"][0]["name"]
        env = {**os.environ, "PCSCLITE_CSOCK_NAME": started["socket"]}
        ykt("sim", "card", "new", "--uid", "04A1B2C3", "--out", str(img))
        ykt("sim", "card", "present", str(img), "--dir", str(r), "--slot", "0")

        server = ServerProc(tmp_path / "D").start()
        try:
            admin = ["admin", "--server", server.url, "--token-file", str(server.token_file)]
            add = ["--number", "S2023001", "--name", "张三", "--type", "student"]
            ykt(*admin, "account", "add", *add, "--id-card", "510102199901013052")
            ykt(*admin, "topup", "--number", "S2023001", "--amount", "100.00", "--channel", "cash")
            issue = ["card", "issue", "--number", "S2023001", "--reader", f"pcsc://{name}"]
            issued = json.loads(ykt(*admin, *issue, "--json", env=env).stdout)
            assert issued["uid"] == "04A1B2C3" and issued["written"]
            token = ykt(
                *admin, "terminal", "enroll", "--role", "pos", "--name", "canteen-1"
            ).stdout.strip()
            pos = PosProc(
                tmp_path / "P", server, token=token, reader=f"pcsc://{name}", env=env
            ).start()
            try:
                sale = ["sim", "sale", "--agent", pos.url, "--json"]
                first = json.loads(ykt(*sale, "--amount", "12.50").stdout)
                assert first["approved"] and first["balance_fen"] == 8750, first
                ykt("sim", "card", "tear", str(img), "--dir", str(r), "--slot", "0", "--after", "5")
                torn = json.loads(ykt(*sale, "--amount", "3.00").stdout)
                assert torn["state"] == "declined" and "nothing charged" in torn["reason"], torn
                ykt("sim", "card", "present", str(img), "--dir", str(r), "--slot", "0")
                again = json.loads(ykt(*sale, "--amount", "3.00").stdout)
                assert again["approved"] and again["balance_fen"] == 8450, again
                over = json.loads(ykt(*sale, "--amount", "45.00", "--pin", "013052").stdout)
                assert over["approved"] and over["balance_fen"] == 3950, over
                ykt("sim", "card", "remove", "--dir", str(r), "--slot", "0")
                pos.wait_synced()

                # R11 + R6: the desk reissues on another card the same day; the new card
                # starts with the day's tracked amount, so the limit does not start again
                ykt("sim", "card", "new", "--uid", "04D1E2F3", "--out", str(img2))
                ykt("sim", "card", "present", str(img2), "--dir", str(r), "--slot", "1")
                slot1 = started["slots"][1]["name"]
                issue2 = ["card", "issue", "--number", "S2023001", "--reader", f"pcsc://{slot1}"]
                reissued = json.loads(ykt(*admin, *issue2, "--json", env=env).stdout)
                assert reissued["written"] and reissued["counters"]["spent_fen"] == 4500
                ykt("sim", "card", "remove", "--dir", str(r), "--slot", "1")
                pos.wait_card_known(reissued["card_no"])
                ykt("sim", "card", "present", str(img2), "--dir", str(r), "--slot", "0")
                need = json.loads(ykt(*sale, "--amount", "6.00").stdout)
                assert need["code"] == "needs_pin" and "R6" in need["reason"], need
                paid = json.loads(ykt(*sale, "--amount", "6.00", "--pin", "013052").stdout)
                assert paid["approved"] and paid["balance_fen"] == 3350, paid
                ykt("sim", "card", "remove", "--dir", str(r), "--slot", "0")
                pos.wait_synced()
            finally:
                pos.stop()
            acct = json.loads(
                ykt(*admin, "account", "show", "--number", "S2023001", "--json").stdout
            )
            assert acct["balance_fen"] == 3350
            assert [b["amount_fen"] for b in acct["bills"]] == [10000, -1250, -300, -4500, -600]
        finally:
            server.stop()

        # the counter record's version is in its MAC: the dump checks it with the keys
        keystore = ["--keystore", str(tmp_path / "D" / "card-keys.json")]
        dump = json.loads(ykt("sim", "card", "dump", str(img), *keystore, "--json").stdout)
        card = dump["campus_card"]
        assert card["identity"]["card_no"] == issued["card_no"]
        assert dump["sectors"][1]["trailer"]["access"] == "78778869"
        assert all(c["mac_valid"] and c["version"] == 2 for c in card["counters"])
        newest = max(card["counters"], key=lambda c: c["seq"])
        assert newest["taps"] == 3 and newest["spent_fen"] == 4500
        second = json.loads(ykt("sim", "card", "dump", str(img2), *keystore, "--json").stdout)[
            "campus_card"
        ]
        newest = max(second["counters"], key=lambda c: c["seq"])
        # carried 45.00, then 6.00 with the password: the amount counts from that sale
        assert newest["taps"] == 1 and newest["spent_fen"] == 600
        text = ykt("sim", "card", "dump", str(img)).stdout
        assert "ykt issuer signature" in text and "transport configuration" in text
    finally:
        ykt("sim", "reader", "stop", "--dir", str(r))
    assert not Path(started["socket"]).exists()


def test_sim_commands_explain_mistakes(tmp_path: Path) -> None:
    out = ykt("sim", "card", "present", "nope.img", "--dir", str(tmp_path), check=False).stdout
    assert out == ""
    bad = tmp_path / "bad.img"
    bad.write_text("uid: 04A1B2C3\n00: 1234\n")

    res = ykt("sim", "card", "dump", str(bad), check=False)
    assert res.returncode == 1 and "line 2" in res.stderr
    res = ykt("sim", "card", "new", "--uid", "XYZ", "--out", str(tmp_path / "x.img"), check=False)
    assert res.returncode == 1 and "4 or 7 bytes" in res.stderr
    res = ykt("sim", "card", "remove", "--dir", str(tmp_path / "none"), check=False)
    assert res.returncode == 1 and "ykt sim reader start" in res.stderr
