"""A loopback TCP relay between an agent and its server that a test can cut and restore: the
network goes away while both processes keep running (the server stays reachable for the
admin)."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.helpers import free_port


class NetCut:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._srv = socket.create_server(("127.0.0.1", self.port))
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            if not self._up.is_set():
                conn.close()
                continue
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            # the 5 s are for connecting: a held feed stream is quiet for longer (kept, the
            # relay broke it after 5 s without a page, and the terminal went offline)
            up.settimeout(None)
            with self._lock:
                self._open += [conn, up]
            for a, b, asks in ((conn, up, True), (up, conn, False)):
                threading.Thread(target=self._pipe, args=(a, b, conn, asks), daemon=True).start()

    def _pipe(
        self, src: socket.socket, dst: socket.socket, client: socket.socket, asks: bool
    ) -> None:
        try:
            while data := src.recv(65536):
                self._forward(dst, data, client, asks)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _forward(self, dst: socket.socket, data: bytes, client: socket.socket, asks: bool) -> None:
        """Pass ``data`` on to ``dst`` (``asks``: it came from the client ``client``; a relay
        that watches the traffic, :class:`tests.turns.Turns`, looks here)."""
        dst.sendall(data)

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._up.clear()
        with self._lock:
            conns, self._open = self._open, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._stop = True
        self.cut()
        self._srv.close()
