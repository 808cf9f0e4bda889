"""Child processes on loopback, for the benchmarks and the tests' harness: a free port, polling
another process's state (there is no event to await across processes), and a polite stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(pred: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Call ``pred`` every ``interval`` seconds until it returns something true, and return
    that; None once ``timeout`` seconds have passed without it."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def stop(
    procs: Iterable[subprocess.Popen[bytes]], sig: int = signal.SIGTERM, grace: float = 15
) -> None:
    """Send ``sig`` to every process still running, then wait for each; one still running
    after ``grace`` seconds is killed."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.send_signal(sig)
    for p in running:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
