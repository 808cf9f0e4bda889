"""The ``ykt`` command line as a test engineer uses it: ``ykt sim sale`` (text and ``--json``)
against a running agent, and ``--help`` on ``ykt`` and every subcommand."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.helpers import PosProc, ServerProc, free_port, ykt
from tests.posutil import Shop, running_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory, "cli") as running:
        yield running


def sim_sale(pos: PosProc, *args: str) -> tuple[int, str, str]:
    r = ykt("sim", "sale", "--agent", pos.url, *args, check=False)
    return r.returncode, r.stdout, r.stderr


def test_sim_sale_json_prints_one_object(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    card = server.add_account("C1", 1, topup_fen=10000)
    pos.wait_card_known(card["card_no"])
    rc, out, err = sim_sale(pos, "--card", card["card_no"], "--amount", "12.50", "--json")
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 1
    o = json.loads(out)
    assert o["approved"] is True and o["balance_fen"] == 8750 and o["reason"] == "approved"
    assert o["amount_fen"] == 1250 and o["offline"] is False and o["seq"] >= 1
    # over the ¥50.00 limit without --pin: not approved, the password is asked for (R6)
    rc, out, err = sim_sale(pos, "--card", card["card_no"], "--amount", "45.00", "--json")
    o = json.loads(out)
    assert rc == 0 and o["approved"] is False and o["needs_pin"] is True and "R6" in o["reason"]
    rc, out, err = sim_sale(
        pos, "--card", card["card_no"], "--amount", "45.00", "--pin", card["password"], "--json"
    )
    o = json.loads(out)
    assert rc == 0 and o["approved"] is True and o["balance_fen"] == 4250
    rc, out, err = sim_sale(pos, "--card", "77777777", "--amount", "1", "--json")
    o = json.loads(out)
    assert rc == 0 and o["approved"] is False and "unknown card" in o["reason"]
    pos.wait_synced()
    r = ykt(
        "admin",
        "--server",
        server.url,
        "--token-file",
        str(server.token_file),
        "account",
        "show",
        "--number",
        "C1",
        "--json",
        check=False,
    )
    assert json.loads(r.stdout)["balance_fen"] == 4250


def test_sim_sale_text(shop: tuple[ServerProc, PosProc]) -> None:
    server, pos = shop
    card = server.add_account("C2", 2, topup_fen=1000)
    pos.wait_card_known(card["card_no"])
    rc, out, _ = sim_sale(pos, "--card", card["card_no"], "--amount", "3")
    assert rc == 0 and out.startswith("APPROVED ¥3.00") and "balance ¥7.00" in out
    rc, out, _ = sim_sale(pos, "--card", card["card_no"], "--amount", "8")
    assert rc == 0 and out.startswith("DECLINED: insufficient balance")


@pytest.mark.parametrize(
    ("args", "rc", "expect"),
    [
        (["--card", "1", "--amount", "0"], 2, "positive"),
        (["--card", "1", "--amount", "-1"], 2, "--amount"),
        (["--card", "1", "--amount", "1.234"], 2, "two decimals"),
        (["--card", "1", "--amount", "abc"], 2, "--amount"),
        (["--card", "1", "--amount", "1", "--pin", "12345"], 1, "six digits"),
        (["--amount", "1"], 2, "--card"),
    ],
)
def test_sim_sale_bad_arguments(
    shop: tuple[ServerProc, PosProc], args: list[str], rc: int, expect: str
) -> None:
    _, pos = shop
    got, _, err = sim_sale(pos, *args)
    assert got == rc and expect in err and "Traceback" not in err, err


def test_sim_sale_without_an_agent_fails_clearly() -> None:
    r = ykt(
        "sim",
        "sale",
        "--agent",
        f"http://127.0.0.1:{free_port()}",
        "--card",
        "1",
        "--amount",
        "1",
        check=False,
    )
    assert r.returncode == 1 and "cannot reach the agent" in r.stderr
    assert "Traceback" not in r.stderr


def test_ykt_help_process_exits_0() -> None:
    r = ykt("--help", check=False)
    assert r.returncode == 0 and "COMMAND" in r.stdout
    for cmd in ("server", "pos", "admin", "sim", "demo", "bench"):
        assert cmd in r.stdout
