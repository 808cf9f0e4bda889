"""Bad input never kills the agent (docs/hardware.md): the control API answers every malformed request
with a clear error in one shape and keeps selling; configuration errors stop ``ykt pos`` before
it starts, with exit code 2 and a message that says what to fix."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.cli import main
from sim.control import AgentControl
from sim.errors import SimUsageError
from tests.helpers import PosProc, ServerProc, free_port, ykt
from tests.posutil import Shop, running_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory, "bad") as running:
        yield running


@pytest.fixture(scope="module")
def card(shop: tuple[ServerProc, PosProc]) -> dict[str, Any]:
    server, pos = shop
    c = server.add_account("B1", 1, topup_fen=100000, limit_fen=1000)
    pos.wait_card_known(c["card_no"])
    return c


def refused(pos: PosProc, method: str, path: str, status: int, **kw: Any) -> str:
    """Send one bad request; it gets ``status`` and an error message; the agent lives on."""
    headers = {**pos.control_headers(), **kw.pop("headers", {})}
    r = requests.request(method, pos.url + path, timeout=10, headers=headers, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] and err["message"], r.text
    assert pos.proc is not None and pos.proc.poll() is None
    return str(err["message"])


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "JSON"),
        (b"\xff\xfe\x00garbage", "JSON"),
        (b"[1, 2]", "body"),
        (b'"1250"', "body"),
        (b"{}", "amount_fen"),
        (b'{"amount_fen": -1}', "amount_fen"),
        (b'{"amount_fen": 0}', "amount_fen"),
        (b'{"amount_fen": 10000001}', "amount_fen"),
        (b'{"amount_fen": 1' + b"0" * 400 + b"}", "amount_fen"),
        (b'{"amount_fen": 12.5}', "amount_fen"),
        (b'{"amount_fen": "1250"}', "amount_fen"),
        (b'{"amount_fen": true}', "amount_fen"),
        (b'{"amount_fen": null}', "amount_fen"),
        (b'{"amount_fen": 100, "tip": 5}', "tip"),
        (b'{"amount_fen": 100, "confirm": "yes"}', "confirm"),
        (b'{"amount_fen": 100, "confirm": 1}', "confirm"),
    ],
)
def test_bad_amounts_are_refused(shop: tuple[ServerProc, PosProc], body: bytes, field: str) -> None:
    _, pos = shop
    AgentControl(pos.url).cancel()
    msg = refused(pos, "POST", "/control/amount", 422, data=body, headers=JSON)
    assert field.lower() in msg.lower()
    assert AgentControl(pos.url).state()["state"] == "idle"  # nothing was keyed


@pytest.mark.parametrize(
    "pin",
    ["12345", "1234567", "abcdef", "12345a", " 123456", "١٢٣٤٥٦", "１２３４５６", 123456, None],
)
def test_malformed_pins_are_refused_and_cost_no_try(
    shop: tuple[ServerProc, PosProc], card: dict[str, Any], pin: Any
) -> None:
    server, pos = shop
    ctl = AgentControl(pos.url)
    s = ctl.amount(2000)  # over this account's ¥10.00 limit
    ctl.present(card["card_no"])
    asked = ctl.wait(s["version"], ("wait_pin", "approved", "declined"), 10)
    assert asked["state"] == "wait_pin", asked
    msg = refused(pos, "POST", "/control/pin", 422, json={"pin": pin})
    assert "pin" in msg.lower()
    assert ctl.state()["state"] == "wait_pin"  # still waiting for a well-formed password
    ctl.cancel()
    assert server.account(card["number"])["pin_tries"] == 0


def test_pin_when_none_is_asked_is_refused(shop: tuple[ServerProc, PosProc]) -> None:
    _, pos = shop
    AgentControl(pos.url).cancel()
    msg = refused(pos, "POST", "/control/pin", 409, json={"pin": "123456"})
    assert "no consumption password is asked" in msg


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"card_no": ""}, "card_no"),
        ({"card_no": "9" * 33}, "card_no"),
        ({"card_no": "1", "uid": "xyz"}, "uid"),
        ({"card_no": "1", "uid": "12"}, "uid"),
        ({}, "card_no"),
        ({"card_no": 12345678}, "card_no"),
    ],
)
def test_bad_simulated_cards_are_refused(
    shop: tuple[ServerProc, PosProc], body: dict[str, Any], field: str
) -> None:
    _, pos = shop
    assert field in refused(pos, "POST", "/control/sim/card", 422, json=body)


@pytest.mark.parametrize(
    "query", ["after=abc", "after=-5&wait=1", "after=1&wait=-1", "after=1&wait=1e9", "wait=nan"]
)
def test_bad_state_queries_are_refused(shop: tuple[ServerProc, PosProc], query: str) -> None:
    _, pos = shop
    refused(pos, "GET", f"/control/state?{query}", 422)


def test_unknown_paths_and_methods(shop: tuple[ServerProc, PosProc]) -> None:
    _, pos = shop
    refused(pos, "GET", "/control/nothing", 404)
    refused(pos, "GET", "/control/amount", 405)
    refused(pos, "DELETE", "/control/state", 405)


def test_unknown_card_is_declined_and_the_agent_sells_on(
    shop: tuple[ServerProc, PosProc], card: dict[str, Any]
) -> None:
    _, pos = shop
    ctl = AgentControl(pos.url)
    out = ctl.sale(100, "00000000")
    assert not out["approved"] and "unknown card" in str(out["reason"])
    out = ctl.sale(100, "ZZ-not-a-card")
    assert not out["approved"]
    assert ctl.sale(100, card["card_no"])["approved"]


def test_after_all_that_the_agent_still_sells(
    shop: tuple[ServerProc, PosProc], card: dict[str, Any]
) -> None:
    _, pos = shop
    assert pos.proc is not None and pos.proc.poll() is None
    out = AgentControl(pos.url).sale(500, card["card_no"])
    assert out["approved"] and not out["offline"]


def test_sim_sale_with_a_malformed_pin_keys_nothing(
    shop: tuple[ServerProc, PosProc], card: dict[str, Any]
) -> None:
    """`ykt sim sale --pin 12345` says what is wrong and leaves no sale hanging."""
    _, pos = shop
    ctl = AgentControl(pos.url)
    before = ctl.cancel()
    with pytest.raises(SimUsageError, match="six digits"):
        ctl.sale(2000, card["card_no"], pin="12345")
    after = ctl.state()
    assert after["state"] == "idle" and after["version"] == before["version"]
    assert ctl.sale(100, card["card_no"])["approved"]


def test_card_on_a_reader_that_is_not_simulated(
    shop: tuple[ServerProc, PosProc], tmp_path: Path
) -> None:
    server, _ = shop
    other = PosProc(
        tmp_path / "pos", server, token=server.enroll_token("bad-2"), reader="pcsc://ACS ACR122U"
    ).start()
    try:
        # the simulator's routes exist only on an agent with sim:// devices (sim.devices) ...
        refused(other, "POST", "/control/sim/card", 404, json={"card_no": "10000001"})
        # ... and `ykt sim` says why in words
        with pytest.raises(SimUsageError, match="not a simulated reader"):
            AgentControl(other.url).present("10000001")
        st = other.status()
        assert st["reader_status"] == "unavailable" and "pcsc" in st["reader_error"]
    finally:
        other.stop()


# -- configuration errors -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ('data = "x"\nwhat = 1\n', "unknown key 'what'"),
        ('data = "x"\ncontrol_port = "8701"\n', "control_port must be an integer"),
        ('data = "x"\ncontrol_port = true\n', "control_port must be an integer"),
        ("data = 5\n", "data must be a string"),
        ('data = "x"\ncontrol_port = 70000\n', "not a port number"),
        ("data = [\n", "cannot read config"),
        (b"\xff\xfe = 1\n", "cannot read config"),
        ('reader = "sim://r1"\n', "--data DIR is required"),
    ],
)
def test_config_file_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, expect: str
) -> None:
    cfg = tmp_path / "bad.toml"
    if isinstance(text, bytes):
        cfg.write_bytes(text)
    else:
        cfg.write_text(text)
    assert main(["pos", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ykt pos: ") and expect in err and "Traceback" not in err


def test_unreadable_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (tmp_path / "missing.toml", tmp_path):  # absent; a directory
        assert main(["pos", "--config", str(path)]) == 2
        assert "cannot read config" in capsys.readouterr().err


def test_config_error_exit_code_of_the_process(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('data = "x"\nunknown_key = 1\n')
    r = ykt("pos", "--config", str(cfg), check=False)
    assert r.returncode == 2 and "unknown key 'unknown_key'" in r.stderr
    assert "Traceback" not in r.stderr


def test_not_enrolled_without_token_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in ([], ["--server", "http://127.0.0.1:9"]):
        assert main(["pos", "--data", str(tmp_path / "fresh"), *extra]) == 2
        err = capsys.readouterr().err
        assert "not enrolled" in err and "ykt admin terminal enroll" in err and "--enroll" in err
    assert not (tmp_path / "fresh" / "terminal.key").exists()


def test_enrollment_failures_exit_2(
    shop: tuple[ServerProc, PosProc], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = shop
    cases = [
        (["--server", server.url, "--enroll", "no-such-token-123"], "enrollment"),
        (["--server", f"http://127.0.0.1:{free_port()}", "--enroll", "whatever-123"], "failed"),
        (["--server", "not-a-url", "--enroll", "whatever-123"], "failed"),
    ]
    for i, (args, expect) in enumerate(cases):
        assert main(["pos", "--data", str(tmp_path / f"d{i}"), *args]) == 2
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err
        assert not (tmp_path / f"d{i}" / "terminal.json").exists()


def test_data_path_that_is_a_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "afile"
    f.write_text("not a directory")
    assert (
        main(["pos", "--data", str(f), "--server", "http://127.0.0.1:9", "--enroll", "t" * 12]) == 2
    )
    assert str(f) in capsys.readouterr().err


def test_busy_control_port_exits_2(shop: tuple[ServerProc, PosProc], tmp_path: Path) -> None:
    server, _ = shop
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = ykt(
            "pos",
            "--data",
            str(tmp_path / "p"),
            "--server",
            server.url,
            "--enroll",
            server.enroll_token("bad-3"),
            "--control-port",
            str(port),
            check=False,
            timeout=30,
        )
    assert r.returncode == 2, r.stderr
    assert str(port) in r.stderr and "Traceback" not in r.stderr
