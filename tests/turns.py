"""A loopback TCP relay that counts round trips (:class:`tests.netcut.NetCut`, watching its
traffic): how many times a client spoke again after its server had answered (a pipeline of
statements is one, however many it holds).  For the tests of what the database layer sends
together (tests/test_db.py)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

from tests.netcut import NetCut


class Turns(NetCut):
    """Relays connections to the loopback port ``target_port`` and counts their round trips."""

    def __init__(self, target_port: int) -> None:
        self._count = 0
        self._answered: dict[int, bool] = {}  # a connection's server spoke last
        super().__init__(target_port)

    @classmethod
    def for_url(cls, url: str) -> tuple[Turns, str]:
        """A relay to the (loopback) PostgreSQL server of ``url``, and the URL through it."""
        parts = urlsplit(url)
        relay = cls(parts.port or 5432)
        user = f"{parts.username}@" if parts.username else ""
        return relay, urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{relay.port}"))

    def reset(self) -> None:
        with self._lock:
            self._count = 0

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def _forward(self, dst: socket.socket, data: bytes, client: socket.socket, asks: bool) -> None:
        with self._lock:  # the count and the traffic agree
            if asks and self._answered.get(id(client), True):
                self._count += 1
            self._answered[id(client)] = not asks
            dst.sendall(data)
