"""Every `ykt` command is documented in the README (CONVENTIONS 10) and has --help."""

from __future__ import annotations

import argparse
import re

from edge.cli import build_parser
from tests.helpers import ROOT


def _leaves(p: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [
        leaf
        for a in subs
        for name, sp in a.choices.items()
        for leaf in _leaves(sp, [*prefix, name])
    ]


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = []
    for leaf in _leaves(build_parser(), ["ykt"]):
        # "ykt admin account report-loss|unlock" documents both
        words = [re.escape(w) for w in leaf]
        pattern = r"\s+".join(rf"(?:[\w-]+\\?\|)*{w}(?:\\?\|[\w-]+)*" for w in words)
        if not re.search(pattern, readme):
            missing.append(" ".join(leaf))
    assert not missing, f"commands not in README.md: {missing}"
