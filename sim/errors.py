"""Exceptions of the simulator.

::

    SimError
    └── SimUsageError       a simulator command used wrongly (unknown device, bad card)
"""

from __future__ import annotations


class SimError(Exception):
    """Base of every error raised by the simulator."""


class SimUsageError(SimError):
    pass
