"""The benchmarks' one error: the system under test misbehaved (a sale declined, a record lost,
a server that would not start).  ``ykt bench`` exits 1 with its message; timings never raise."""

from __future__ import annotations

from sim.errors import SimError


class BenchmarkError(SimError):
    pass
