"""A loopback TCP relay that counts round trips: how many times a client spoke again after
its server had answered (a pipeline of statements is one, however many it holds).  For the
tests of what the database layer sends together (tests/test_db.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

from tests.helpers import free_port


class Turns:
    """Relays connections to ``target`` (``host``, ``port``) and counts their round trips."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._count = 0
        self._answered: dict[int, bool] = {}  # a connection's server spoke last
        self._srv = socket.create_server(("127.0.0.1", self.port))
        self._socks: list[socket.socket] = [self._srv]
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def for_url(cls, url: str) -> tuple[Turns, str]:
        """A relay to the PostgreSQL server of ``url``, and the URL that goes through it."""
        parts = urlsplit(url)
        relay = cls((parts.hostname or "127.0.0.1", parts.port or 5432))
        user = f"{parts.username}@" if parts.username else ""
        through = parts._replace(netloc=f"{user}127.0.0.1:{relay.port}")
        return relay, urlunsplit(through)

    def reset(self) -> None:
        with self._lock:
            self._count = 0

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            up = socket.create_connection(self.target, timeout=10)
            with self._lock:
                self._socks += [conn, up]
                self._answered[id(conn)] = True
            threading.Thread(
                target=self._pipe, args=(conn, up, id(conn), True), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(up, conn, id(conn), False), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, key: int, asks: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                with self._lock:
                    if asks and self._answered[key]:
                        self._count += 1
                    self._answered[key] = not asks
                    dst.sendall(data)  # under the lock: the count and the traffic agree
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
