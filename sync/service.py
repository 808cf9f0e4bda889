"""One of ykt's HTTP processes (the central server, an agent's control API) run as a service:
uvicorn as both use it, the banner once it listens, and systemd's notify protocol
(:mod:`sync.systemd`: ``READY=1`` then, ``WATCHDOG=1`` while the process says it is alive,
``STOPPING=1`` at the end)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from sync.systemd import Watchdog, notify


def serve(
    app: FastAPI,
    host: str,
    port: int,
    *,
    banner: Callable[[], str],
    alive: Callable[[], bool],
    sock: socket.socket | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on ``host``:``port`` (or on ``sock``, already bound) until a signal stops
    it.  Once it listens: print ``banner()`` and tell systemd it is ready.  The watchdog is fed
    while it listens and ``alive()``.  ``on_stop`` runs as soon as a stop begins (the server
    answers its long-polls with it, so they do not hold the stop up)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,  # long-polls must not hold a stop
        )
    )

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            print(banner(), flush=True)
            notify("READY=1")
        if on_stop is not None:
            while not server.should_exit:
                time.sleep(0.05)
            on_stop()

    threading.Thread(target=announce, name="announce", daemon=True).start()
    dog = Watchdog(lambda: bool(server.started) and alive())
    dog.start()
    try:
        server.run(sockets=None if sock is None else [sock])
    finally:
        dog.stop()
        notify("STOPPING=1")
