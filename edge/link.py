"""What the terminal believes about its link to the server.

The uplink and the online authorization report successes and failures; decisions ask
:meth:`Link.try_online` so a terminal that just failed to reach the server does not wait on
a timeout at every tap, and probes again after ``retry_s``.
"""

from __future__ import annotations

import threading

from sync.clock import Clock


class Link:
    def __init__(self, clock: Clock, retry_s: float = 3.0) -> None:
        self.clock = clock
        self.retry_ms = int(retry_s * 1000)
        self._lock = threading.Lock()
        self._online = False
        self._down_since: int | None = None
        self._last_fail = -(10**15)
        self.last_error = ""

    @property
    def online(self) -> bool:
        with self._lock:
            return self._online

    def up(self) -> None:
        with self._lock:
            self._online = True
            self._down_since = None
            self.last_error = ""

    def down(self, error: str) -> None:
        with self._lock:
            now = self.clock.now_ms()
            if self._online or self._down_since is None:
                self._down_since = now
            self._online = False
            self._last_fail = now
            self.last_error = error

    def try_online(self) -> bool:
        """True when an online attempt is worth making now."""
        with self._lock:
            return self._online or self.clock.now_ms() - self._last_fail >= self.retry_ms
