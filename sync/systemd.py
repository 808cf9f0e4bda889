"""The systemd notify protocol (``Type=notify``, ``WatchdogSec=``) without a dependency.

``notify("READY=1")`` tells systemd the service is up; :class:`Watchdog` sends ``WATCHDOG=1``
at half the interval systemd asked for, but only while ``alive()`` says the service's own
loops are turning, so a wedged agent is restarted instead of being kept alive by a thread.
Both are no-ops outside systemd (no ``NOTIFY_SOCKET``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send one notify message; False when not running under systemd (or on error)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd: %s", exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """The watchdog interval systemd set for this process, in seconds, or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


class Watchdog:
    def __init__(self, alive: Callable[[], bool]) -> None:
        self._alive = alive
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        interval = watchdog_interval_s()
        if interval is None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(interval / 2,), name="watchdog", daemon=True
        )
        self._thread.start()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            if self._alive():
                notify("WATCHDOG=1")
            else:
                log.error("service loop stalled: not feeding the systemd watchdog")

    def stop(self) -> None:
        self._stop.set()
