"""The systemd units in ``systemd/``, read as text: a notify service with a watchdog and a
dedicated user, and a command line the ``ykt`` parser accepts (``tests/test_systemd.py``
verifies them with systemd-analyze and runs the services)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from edge.cli import build_parser
from tests.helpers import ROOT

#: the ykt services; the kiosk's screen (Chromium showing the kiosk agent's page) is checked apart
SCREEN = ROOT / "systemd" / "ykt-kiosk-screen.service"
UNITS = sorted(u for u in (ROOT / "systemd").glob("*.service") if u != SCREEN)


def _exec_start(unit: Path) -> list[str]:
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError(f"{unit.name} has no ExecStart")


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_is_notify_with_watchdog_and_a_dedicated_user(unit: Path) -> None:
    text = unit.read_text()
    for line in ("Type=notify", "User=ykt", "Restart=on-failure", "StateDirectory=ykt/"):
        assert line in text, f"{unit.name} lacks {line}"
    assert "WatchdogSec=" in text


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_command_line_parses(unit: Path) -> None:
    argv = _exec_start(unit)
    assert argv[0] == "/opt/ykt/.venv/bin/ykt"
    args = build_parser().parse_args(argv[1:])
    assert args.command in ("server", "pos", "kiosk")


def test_the_kiosk_screen_shows_the_kiosk_agents_page_in_chromiums_kiosk_mode() -> None:
    text = SCREEN.read_text()
    argv = _exec_start(SCREEN)
    assert argv[0] == "/usr/bin/chromium" and "--kiosk" in argv
    example = (ROOT / "systemd" / "kiosk.toml.example").read_text()
    assert "control_port = 8702" in example
    assert "--app=http://127.0.0.1:8702/kiosk" in argv  # the agent's default port and page
    assert "After=ykt-kiosk.service" in text.replace(" graphical.target", "")
    assert "Restart=always" in text and "User=ykt-screen" in text
