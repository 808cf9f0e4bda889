"""Issue 5's acceptance, as a new user runs it: real `ykt server` and `ykt pos` processes, the
admin CLI and the simulated wallet CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sim.control import AgentControl
from sim.harness.ykt import PaygateProcess
from tests.helpers import PosProc, ServerProc, id_card, wait_until, ykt
from tests.live import initial_pw


def run(*args: str) -> Any:
    out = ykt(*args, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if "--json" in args else out.stdout


def test_acceptance_card_holder_business(server: ServerProc, pos: PosProc, tmp_path: Path) -> None:
    admin = ("admin", "--server", server.url, "--token-file", str(server.token_file))
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "number,name,type,id_card\n"
        f"S2023002,张三,student,{id_card(2)}\n"
        f"S2023003,李四,student,{id_card(3)}\n"
        "S2023004,坏,student,123\n",
        encoding="utf-8",
    )
    got = run(*admin, "roster", "import", str(roster), "--json")
    assert got["added"] == 2 and [e["line"] for e in got["errors"]] == [4]
    card = run(*admin, "card", "issue", "--number", "S2023002", "--json")
    run(*admin, "topup", "--number", "S2023002", "--amount", "30.00", "--channel", "cash", "--json")
    run(
        *admin,
        "electricity",
        "add-building",
        "--code",
        "B1",
        "--name",
        "一号公寓",
        "--rooms",
        "101-110",
    )
    pos.wait_card_known(card["card_no"])
    ctl = AgentControl(pos.url)

    w = str(tmp_path / "W.json")
    wallet = ("sim", "wallet")
    run(
        *wallet,
        "login",
        "--server",
        server.url,
        "--number",
        "S2023002",
        "--password",
        initial_pw(2),
        "--wallet",
        w,
    )

    # R10: after report-loss the POS declines the card within 3 s; after unlock it sells again
    run(*wallet, "report-loss", "--wallet", w)
    reported = time.monotonic()
    declined = ctl.sale(100, card["card_no"])
    assert not declined["approved"] and "lost" in declined["reason"]
    assert time.monotonic() - reported < 3.0
    run(*wallet, "unlock", "--wallet", w)
    assert ctl.sale(100, card["card_no"])["approved"]

    # R7: the Alipay top-up (an order paid at the provider, credited when its signed
    # notification arrives) lands in the transition balance, then moves in at the next sale
    with PaygateProcess(tmp_path / "paygate") as gate:
        run(
            *admin,
            "paygate",
            "set",
            "--channel",
            "alipay",
            "--url",
            gate.url,
            "--public-key",
            str(gate.data / "provider.pub"),
        )
        paid = run(
            *wallet,
            "topup",
            "--wallet",
            w,
            "--channel",
            "alipay",
            "--amount",
            "20.00",
            "--password",
            initial_pw(2),
            "--json",
        )
        assert paid["status"] == "credited" and paid["order_id"]
    shown = run(*admin, "account", "show", "--number", "S2023002", "--json")
    assert (shown["balance_fen"], shown["transition_fen"], shown["status"], shown["limit_fen"]) == (
        2900,
        2000,
        "normal",
        5000,
    )
    assert ctl.sale(500, card["card_no"])["approved"]
    pos.wait_synced()
    shown = run(*admin, "account", "show", "--number", "S2023002", "--json")
    assert (shown["balance_fen"], shown["transition_fen"]) == (4400, 0)

    # the rest of the app's business
    assert run(*wallet, "balance", "--wallet", w, "--json")["balance_fen"] == 4400
    run(
        *wallet,
        "electricity",
        "--wallet",
        w,
        "--building",
        "B1",
        "--room",
        "105",
        "--amount",
        "4.00",
    )
    bills = run(*wallet, "bills", "--wallet", w, "--json")["items"]
    assert [b["kind"] for b in bills] == ["electricity", "sale", "topup", "sale", "topup"]
    flow = run(*wallet, "flow", "--wallet", w, "--all", "--json")["items"]
    assert {"lost", "restore", "transition"} <= {f["kind"] for f in flow}
    run(*wallet, "change-password", "--wallet", w, "--old", initial_pw(2), "--new", "135790")

    finder = str(tmp_path / "F.json")
    run(
        *wallet,
        "login",
        "--server",
        server.url,
        "--number",
        "S2023003",
        "--password",
        initial_pw(3),
        "--wallet",
        finder,
    )
    run(
        *wallet,
        "found-card",
        "register",
        "--wallet",
        finder,
        "--card-no",
        card["card_no"],
        "--place",
        "图书馆",
    )
    run(*wallet, "report-loss", "--wallet", w)
    found = run(*wallet, "found-card", "lookup", "--wallet", w, "--json")["found"]
    assert [f["place"] for f in found] == ["图书馆"]
    assert run(*admin, "ledger", "check", "--json")["ok"]
    wait_until(lambda: "lost" in ctl.sale(100, card["card_no"])["reason"], 3)
