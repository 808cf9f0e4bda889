"""Child processes on loopback, for the tests, the benchmarks and the demo: a free port, the
``ykt`` command line, polling another process's state (there is no event to await across
processes), the one wait until a child answers HTTP, and a polite stop.

Under pytest-xdist (``PYTEST_XDIST_WORKER`` = ``gwN``, ``PYTEST_XDIST_WORKER_COUNT``) each worker
takes its ports from its own residue class, so two workers never pick the same free port in
the moment between choosing it and their child binding it.  (Linux hands ``bind(port 0)`` odd
ports only, so the class is that of ``port // 2``.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

from sim.errors import SimError


class StartFailed(SimError):
    """A process the harness started exited, or did not answer, before it was ready."""


def worker_slice() -> tuple[int, int]:
    """``(index, count)`` of this pytest-xdist worker; ``(0, 1)`` outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not name.startswith("gw") or not name[2:].isdigit() or count < 2:
        return 0, 1
    return int(name[2:]) % count, count


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie child of ours does not: it is reaped here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:  # not our child: os.kill said it is there
        return True


def recv_line(sock: socket.socket, bufsize: int = 4096) -> bytes:
    """Read from ``sock`` up to a newline or the end: one message of the simulated devices'
    JSON-lines control protocols."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(bufsize)
        if not chunk:
            break
        data += chunk
    return data


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (of this xdist worker's
    residue class)."""
    index, count = worker_slice()
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if (port // 2) % count == index:
            return port
    raise StartFailed("no free port on 127.0.0.1")


def ykt_cmd(*args: str) -> list[str]:
    """The command line of ``ykt ARGS`` with this interpreter (no console script needed)."""
    return [sys.executable, "-m", "edge.cli", *args]


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


def log_tail(log: Path | None, chars: int = 3000) -> str:
    if log is None:
        return ""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_http(
    url: str,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval: float = 0.05,
) -> None:
    """Wait until ``GET url`` answers 2xx.  :class:`StartFailed` when ``proc`` exits first (with
    the end of its ``log``) or nothing answers within ``timeout`` seconds."""

    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise StartFailed(
                f"process exited with {proc.returncode} before {url} answered\n{log_tail(log)}"
            )
        try:
            return requests.get(url, timeout=1).ok
        except requests.RequestException:
            return False

    if not poll(up, timeout, interval):
        raise StartFailed(f"{url} did not answer within {timeout:.0f}s\n{log_tail(log)}")


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
