"""``--help`` on ``ykt`` and every subcommand, in-process (the parser the ``ykt`` entry point
builds); ``tests/test_cli_pos_sim.py`` runs ``ykt --help`` as a process."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from edge.cli import build_parser


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = sorted(_commands(build_parser()))


def test_the_command_tree_is_walked() -> None:
    assert ("pos",) in COMMANDS and ("sim", "sale") in COMMANDS
    assert ("admin", "account", "pin-reset") in COMMANDS and len(COMMANDS) > 25


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "ykt")
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ykt") and " ".join(path) in out.splitlines()[0]
    assert len(out.splitlines()) > 2
