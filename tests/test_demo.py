"""`make demo` (`ykt demo`): it starts the server, a POS on simulated hardware and a stand-in
payment provider, prints its instructions, and every command it prints works as printed, in
order: card sales with and without the PIN, the receipt printed and verified, the account, a phone payment code, a top-up paid at
the provider, selling through a server outage, the queue draining and the ledger check.  The README shows the same commands (with the default
ports and data directory)."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, wait_until, ykt, ykt_cmd


def _run(tmp_path: Path, line: str) -> str:
    argv = shlex.split(line.split("#", 1)[0])
    assert argv[0] == "ykt", line
    done = ykt(*argv[1:], check=False, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_demo_runs_and_every_printed_command_works(tmp_path: Path) -> None:
    data = tmp_path / ".demo"
    sport, cport, gport, kport = free_port(), free_port(), free_port(), free_port()
    demo = subprocess.Popen(
        ykt_cmd(
            *("demo", "--data", str(data)),
            *("--server-port", str(sport), "--control-port", str(cport)),
            *("--paygate-port", str(gport), "--kiosk-port", str(kport)),
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        printed: list[str] = []
        for line in demo.stdout:  # the instructions end with the ledger check
            printed.append(line)
            if "ledger check" in line:
                break
        text = "".join(printed)
        assert f"http://127.0.0.1:{cport}/cashier" in text, text
        commands = [line.strip() for line in printed if line.startswith("  ykt ")]
        assert f"http://127.0.0.1:{kport}/kiosk" in text, text
        assert len(commands) == 14, commands
        readme = {_command(line) for line in README.read_text(encoding="utf-8").splitlines()}
        as_printed_by_default = [_default(c, data, sport, cport, kport) for c in commands]
        missing = [c for c in as_printed_by_default if c not in readme]
        assert not missing, f"README.md's demo does not show {missing}"

        out = {line: _run(tmp_path, line) for line in commands}
        said = list(out.values())
        assert "APPROVED ¥12.50" in said[0] and "balance ¥87.50" in said[0]
        assert "APPROVED ¥45.00" in said[1] and "balance ¥42.50" in said[1]  # with the PIN (R6)
        # the receipt printer: GB18030 text with the amount, a QR that verifies
        assert "金额 Amount:   ￥12.50" in said[2] and (tmp_path / "RECEIPT.png").exists()
        assert said[3].startswith("GENUINE: sale")
        assert "bills (账单)" in said[4] and "-¥45.00" in said[4]
        assert "signed in as" in said[5] and (tmp_path / "CODE.png").exists()
        assert "APPROVED ¥9.00" in said[7] and "balance ¥91.00" in said[7]  # the phone's code
        # R7: a top-up order paid at the demo's payment provider, credited by its notification
        assert "topped up ¥20.00 by wechat" in said[8] and "balance ¥111.00" in said[8]
        # the kiosk reissues 李老师's card: the fee (¥20.00) once, from the balance
        assert "at the mouth" in said[9] and "balance ¥91.00" in said[9], said[9]
        assert "stopped" in said[10]
        assert "APPROVED ¥3.00" in said[11] and "offline" in said[11]  # through the outage
        assert "started" in said[12]
        assert "ledger OK" in said[13]

        # the offline sale drains to the server, once
        show = commands[4] + " --json"

        def sales() -> list[int]:
            bills = json.loads(_run(tmp_path, show))["bills"]
            return [-b["amount_fen"] for b in bills if b["kind"] == "sale"]

        assert wait_until(lambda: sales() == [1250, 4500, 300], timeout=30)
        assert "ledger OK" in _run(tmp_path, commands[13])
    finally:
        # SIGTERM (kill, a service manager) stops the demo and all it started, as Ctrl-C does;
        # SIGINT would not do here: a test run started in the background ignores it
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
    assert demo.returncode == 0
    for port in (sport, cport, gport, kport):  # the server, POS, provider, kiosk: all gone
        assert wait_until(lambda port=port: _closed(port), timeout=15), port


README = ROOT / "README.md"


def _command(line: str) -> str:
    """A command line without its comment, spaces collapsed."""
    return " ".join(line.split("#", 1)[0].split())


def _default(line: str, data: Path, sport: int, cport: int, kport: int) -> str:
    """What the demo prints with its default ports, run from the directory holding ``.demo``."""
    line = line.replace(f" --server-port {sport}", "")
    line = line.replace(f"127.0.0.1:{sport}", "127.0.0.1:8700")
    line = line.replace(f"127.0.0.1:{cport}", "127.0.0.1:8701")
    line = line.replace(f"127.0.0.1:{kport}", "127.0.0.1:8703")
    return _command(line.replace(str(data), ".demo"))


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0
