"""``ykt`` imports only the module of the subcommand it runs (edge/cli.py): the simulator
does not pay for the server's web app, nor the server for the simulator (a fresh interpreter:
the test process has imported everything)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["sim", "fleet"], ("sync.server.app", "edge.pos.agent", "sim.cli", "fastapi")),
        (["server"], ("sim.cli", "sim.fleet.run", "edge.pos.agent")),
        (["--help"], ("sync.server.cli", "sim.cli", "edge.pos.cli", "fastapi")),
    ],
)
def test_only_the_named_command_is_imported(argv: list[str], absent: tuple[str, ...]) -> None:
    code = (
        "import sys; from edge.cli import build_parser; "
        f"build_parser({argv!r}); "
        f"print(sorted(m for m in {absent!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
