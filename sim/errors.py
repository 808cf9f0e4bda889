"""Exceptions of the simulator, in the tree :mod:`sync.errors` draws.

::

    YktError                        (drivers.errors)
    └── SimError                    the simulator failed, or the thing it drives misbehaved
        ├── SimUsageError               a simulator command used wrongly (unknown device, bad card)
        ├── Torn                        (sim.mifare) a simulated card pulled away mid-write
        ├── Closed                      (sim.vicc) vpcd closed the simulated card's connection
        ├── BenchmarkError              (sim.bench.errors) the system under a benchmark misbehaved
        │   └── HttpError                   (sim.bench.http11) a benchmark's HTTP/1.1 exchange failed
        ├── PaygateRefused              (sim.paygate) the stand-in provider refuses a payment
        ├── KioskRefused                (sim.kiosk_cli) the kiosk refused a holder's action
        ├── StartFailed                 (sim.harness.procs) a child process did not get ready
        └── PgUnavailable               (sim.harness.pg) no PostgreSQL to start a cluster with
"""

from __future__ import annotations

from sync.errors import YktError


class SimError(YktError):
    """Base of every error raised by the simulator."""

    http_status = 409
    code = "sim"


class SimUsageError(SimError):
    pass
