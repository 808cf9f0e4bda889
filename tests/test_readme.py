"""README.md documents every `ykt` command (CONVENTIONS 10) and the two make commands."""

from __future__ import annotations

import argparse

from edge.cli import build_parser
from tests.helpers import ROOT


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}"
                children = _commands(sub, path)
                out.extend(children or [path])
    return out


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = _commands(build_parser(), "ykt")
    assert len(commands) > 10
    missing = [c for c in commands if c not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
