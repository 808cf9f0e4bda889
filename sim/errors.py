"""Exceptions of the simulator.

::

    SimError
    └── SimUsageError       a simulator command used wrongly (unknown device, bad card)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


class SimError(Exception):
    """Base of every error raised by the simulator."""


class SimUsageError(SimError):
    pass


def run_command(
    fn: Callable[[argparse.Namespace], Any], args: argparse.Namespace, prog: str = "ykt sim"
) -> int:
    """Run a command's function: its exit status, or 1 after a SimError's message on stderr."""
    try:
        rc: int = fn(args)
        return rc
    except SimError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
