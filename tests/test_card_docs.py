"""Every command of the card path is documented in docs/hardware.md (the README points there),
and has --help."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT, ykt

COMMANDS = [
    "sim reader start",
    "sim reader stop",
    "sim reader restart",
    "sim reader status",
    "sim card new",
    "sim card present",
    "sim card tear",
    "sim card remove",
    "sim card dump",
    "admin … card issue",
    "card read",
    "keys export",
    "bench --only card",
]


def test_the_hardware_docs_document_the_card_commands() -> None:
    hardware = (ROOT / "docs" / "hardware.md").read_text(encoding="utf-8")
    missing = [c for c in COMMANDS if c.split()[-1] not in hardware or c not in hardware]
    assert not missing
    assert (ROOT / "docs" / "card-format.md").exists()
    assert "docs/hardware.md" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "cmd",
    [
        ["sim", "reader", "start"],
        ["sim", "card", "tear"],
        ["sim", "card", "dump"],
        ["admin", "card", "issue"],
        ["admin", "keys", "export"],
        ["bench"],
    ],
)
def test_help(cmd: list[str]) -> None:
    out = ykt(*cmd, "--help", check=False, timeout=30)
    assert out.returncode == 0 and "usage:" in out.stdout
