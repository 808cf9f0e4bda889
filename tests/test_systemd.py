"""systemd units: they verify, their command lines parse, and the services speak the notify
protocol (READY=1, then WATCHDOG=1 while healthy) as Type=notify with WatchdogSec= expects."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, PosProc, ServerProc

UNITS = sorted((ROOT / "systemd").glob("*.service"))
VENV_YKT = str(Path(sys.executable).parent / "ykt")


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text().replace("/opt/ykt/.venv/bin/ykt", VENV_YKT)
    copy = tmp_path / unit.name
    copy.write_text(text)
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian package systemd) is needed to check the units"
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    problems = [ln for ln in out.stderr.splitlines() if unit.name in ln]
    assert out.returncode == 0 and not problems, out.stderr


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    return sock, path


def _messages_until(sock: socket.socket, wanted: set[str]) -> set[str]:
    seen: set[str] = set()
    while not wanted <= seen:
        seen.update(sock.recv(4096).decode().splitlines())
    return seen


def test_server_notifies_ready_and_feeds_the_watchdog(tmp_path: Path) -> None:
    sock, path = _notify_socket(tmp_path)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    server = ServerProc(tmp_path / "server", env=env).start()
    try:
        assert {"READY=1", "WATCHDOG=1"} <= _messages_until(sock, {"READY=1", "WATCHDOG=1"})
    finally:
        server.stop()
        sock.close()


def test_pos_notifies_ready_and_feeds_the_watchdog(tmp_path: Path, server: ServerProc) -> None:
    sock, path = _notify_socket(tmp_path)
    pos = PosProc(
        tmp_path / "pos",
        server,
        token=server.enroll_token("notify-1"),
        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"},
    ).start()
    try:
        assert {"READY=1", "WATCHDOG=1"} <= _messages_until(sock, {"READY=1", "WATCHDOG=1"})
    finally:
        pos.stop()
        sock.close()
