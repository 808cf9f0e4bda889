"""Test harness: real `ykt server` and `ykt pos` processes on loopback, and small helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from sim.harness import procs
from sim.harness.procs import free_port
from sync.admin.common import AdminClient
from tests import dbs

ROOT = Path(__file__).resolve().parent.parent
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_card(n: int, birth: str = "20040101") -> str:
    """A valid (GB 11643) ID-card number, different for every n."""
    body = f"510102{birth}{n % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


def ykt_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", *args]


def wait_until(pred: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll a condition that has no event to await (another process's state)."""
    got = procs.poll(pred, timeout, interval)
    if not got:
        raise AssertionError(f"condition not met within {timeout}s")
    return got


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return requests.get(url, timeout=1).ok
        except requests.RequestException:
            return False

    wait_until(up, timeout, 0.05)


class _Child:
    """What ServerProc and PosProc share: a ``ykt`` child process answering HTTP on a loopback
    port, its output appended to a log file next to its data directory."""

    data: Path
    port: int
    proc: subprocess.Popen[bytes] | None
    env: dict[str, str]
    log: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], health: str) -> None:
        """Start ``ykt *args`` and wait until ``health`` (a path) answers."""
        log = self.data.parent / f"{self.data.name}.log"
        if self.log is None:
            self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ykt_cmd(*args),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        _wait_http(self.url + health, self.proc, log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            procs.stop([self.proc], sig)
        if self.log is not None and (self.proc is None or self.proc.poll() is not None):
            self.log.close()
            self.log = None


@dataclass
class ServerProc(_Child):
    data: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    log: Any = None
    #: PostgreSQL database URL; None: SQLite in ``data`` (see tests/dbs.py)
    db_url: str | None = field(default_factory=dbs.fresh_url)

    @property
    def token_file(self) -> Path:
        return self.data / "admin.token"

    def start(self) -> ServerProc:
        self.data.mkdir(parents=True, exist_ok=True)
        self._spawn(
            [
                "server",
                "--data",
                str(self.data),
                "--port",
                str(self.port),
                "--password-cost",
                "10",
                *(("--db", self.db_url) if self.db_url else ()),
                *self.extra,
            ],
            "/v1/health",
        )
        return self

    def admin(self) -> AdminClient:
        client = AdminClient(self.url, self.token_file.read_text().strip())
        client.headers["Connection"] = "close"  # no socket outlives the call
        return client

    def add_account(
        self, number: str, n: int, kind: str = "student", topup_fen: int = 0, **kw: Any
    ) -> dict[str, Any]:
        """An account with a card (and money); returns the card."""
        a = self.admin()
        a.call(
            "POST",
            "/v1/admin/accounts",
            {"number": number, "name": f"测试{n}", "type": kind, "id_card": id_card(n), **kw},
        )
        if topup_fen:
            a.call(
                "POST",
                f"/v1/admin/accounts/{number}/topups",
                {"amount_fen": topup_fen, "channel": "cash"},
            )
        card = a.call("POST", f"/v1/admin/accounts/{number}/cards", {})
        return {**card, "password": id_card(n)[-7:-1] if id_card(n)[-1] == "X" else id_card(n)[-6:]}

    def account(self, number: str) -> dict[str, Any]:
        return self.admin().call("GET", f"/v1/admin/accounts/{number}")

    def enroll_token(self, name: str, role: str = "pos") -> str:
        return str(
            self.admin().call("POST", "/v1/admin/terminals/tokens", {"role": role, "name": name})[
                "token"
            ]
        )


@dataclass
class PosProc(_Child):
    data: Path
    server: ServerProc
    token: str | None = None
    port: int = field(default_factory=free_port)
    reader: str = "sim://r1"
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    log: Any = None
    extra: tuple[str, ...] = ()
    camera: str | None = None  # QR source URL (phone codes)
    server_url: str | None = None  # talk to this URL instead (e.g. a dead port: network cut)

    def start(self) -> PosProc:
        args = [
            "pos",
            "--server",
            self.server_url or self.server.url,
            "--data",
            str(self.data),
            "--reader",
            self.reader,
            "--control-port",
            str(self.port),
            "--seed",
            "7",
        ]
        if self.token:
            args += ["--enroll", self.token]
        if self.camera:
            args += ["--camera", self.camera]
        args += self.extra
        self._spawn(["--log-level", "INFO", *args], "/control/status")
        return self

    def status(self) -> dict[str, Any]:
        return dict(requests.get(self.url + "/control/status", timeout=5).json())

    def wait_synced(self, timeout: float = 15.0) -> dict[str, Any]:
        return dict(
            wait_until(
                lambda: (s := self.status())["queued"] == 0 and s["online"] and s, timeout, 0.05
            )
        )

    def wait_card_known(self, card_no: str, timeout: float = 10.0) -> None:
        """Wait until the delta feed has brought this card to the terminal's cache."""
        from edge.cache import Cache
        from sync.db import Database

        cache = Cache(Database(self.data / "cache.db", synchronous="NORMAL"))
        try:
            wait_until(lambda: cache.card(card_no) is not None, timeout, 0.05)
        finally:
            cache.db.close()
