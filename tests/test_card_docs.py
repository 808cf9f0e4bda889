"""Every command of the card path is documented in the README, and has --help."""

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


def test_readme_documents_the_card_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [c for c in COMMANDS if c.split()[-1] not in readme or c not in readme]
    assert not missing
    assert (ROOT / "docs" / "card-format.md").exists()


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
