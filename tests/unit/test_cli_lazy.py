"""``ykt`` imports only the module of the subcommand it runs (edge/cli.py): the names and help
it lists for the others must be what their modules register."""

from __future__ import annotations

import argparse

import pytest

from edge.cli import COMMANDS, build_parser, command_in


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help for a in action._choices_actions}
    raise AssertionError("no subcommands")


def test_the_listed_help_is_the_modules_own() -> None:
    full = _subcommands(build_parser())
    assert full == {name: text for name, _module, text in COMMANDS}
    assert _subcommands(build_parser([])) == full  # `ykt --help`: nothing imported


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["sim", "fleet", "--seed", "7"], "sim"),
        (["--log-level", "DEBUG", "server", "--data", "x"], "server"),
        (["--log-level=INFO", "pos"], "pos"),
        (["--help"], None),
        ([], None),
        (["--", "sim"], None),
    ],
)
def test_the_command_is_found_in_argv(argv: list[str], want: str | None) -> None:
    assert command_in(argv) == want


def test_one_command_parses_as_with_the_whole_tree() -> None:
    line = ["--log-level", "ERROR", "sim", "fleet", "--seed", "3", "--terminals", "2"]
    lazy, full = build_parser(line).parse_args(line), build_parser().parse_args(line)
    assert vars(lazy).keys() == vars(full).keys()
    assert {k: v for k, v in vars(lazy).items() if k != "func"} == {
        k: v for k, v in vars(full).items() if k != "func"
    }


def test_an_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser(["nonsense"]).parse_args(["nonsense"])
    assert exc.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_a_command_built_alone_has_the_help_of_the_whole_tree(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ykt sim fleet`` is built without the rest of ``ykt sim`` (edge.cli.ALONE)."""
    texts = []
    for parser in (build_parser(["sim", "fleet", "--help"]), build_parser()):
        with pytest.raises(SystemExit):
            parser.parse_args(["sim", "fleet", "--help"])
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and "--terminals" in texts[0]
