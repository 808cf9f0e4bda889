"""R16 sign-in of card holders and the simulated wallet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim import wallet
from sim.errors import SimError
from tests.helpers import ServerProc, ykt


def test_r16_student_signs_in_with_number_and_query_password(
    server: ServerProc, tmp_path: Path
) -> None:
    card = server.add_account("S2023002", 2, topup_fen=2000)
    out = ykt(
        "sim",
        "wallet",
        "login",
        "--server",
        server.url,
        "--number",
        "S2023002",
        "--password",
        card["password"],
        "--wallet",
        str(tmp_path / "w.json"),
        "--json",
    )
    assert json.loads(out.stdout)["account"]["number"] == "S2023002"
    assert (tmp_path / "w.json").stat().st_mode & 0o777 == 0o600
    me = wallet.Wallet.load(tmp_path / "w.json").call("GET", "/v1/app/me")
    assert me["balance_fen"] == 2000


def test_r16_temporary_card_holder_signs_in_with_card_number(server: ServerProc) -> None:
    card = server.add_account("TMP1", 3, kind="temporary")
    w = wallet.login(server.url, card["card_no"], card["password"])
    assert w.account["number"] == "TMP1"


def test_wrong_query_passwords_lock_sign_in(server: ServerProc) -> None:
    card = server.add_account("S2023003", 4)
    for _ in range(5):
        with pytest.raises(SimError, match="wrong number or query password"):
            wallet.login(server.url, "S2023003", "000000")
    with pytest.raises(SimError, match="locked"):
        wallet.login(server.url, "S2023003", card["password"])


def test_logout_ends_the_session(server: ServerProc) -> None:
    card = server.add_account("S2023004", 5)
    w = wallet.login(server.url, "S2023004", card["password"])
    w.call("POST", "/v1/app/logout")
    with pytest.raises(SimError, match="bad_session"):
        w.call("GET", "/v1/app/me")
