"""A real ``ykt server`` for the benchmarks: a child process (uvicorn on loopback, SQLite in a
fresh data directory), with helpers to populate it through the admin API and enroll terminals.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import requests

from sim.bench.errors import BenchmarkError
from sim.bench.records import key_from_seed
from sim.harness import procs
from sync.admin.common import AdminClient
from sync.client import ServerClient
from sync.crypto import SigningKey

_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_card(n: int) -> str:
    """A valid GB 11643 ID-card number, different for each n below 120,000."""
    body = f"51010{(n // 1000) % 10}2000{1 + (n // 10000) % 12:02d}01{n % 1000:03d}"
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]
    return body + check


def wait_until(pred: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll another process's state (there is no event to await across processes)."""
    got = procs.poll(pred, timeout, interval)
    if not got:
        raise BenchmarkError(f"benchmark setup: {what} did not happen within {timeout:.0f}s")
    return got


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchServer:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = procs.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BenchServer:
        self.data.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data.parent / f"{self.data.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "edge.cli", "server", "--data", str(self.data)),
                *("--port", str(self.port), "--password-cost", "10"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BenchmarkError(f"benchmark server exited with {self.proc.returncode}")
            try:
                return requests.get(self.url + "/v1/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, 30, "the server answering")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop([self.proc])
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def admin(self) -> AdminClient:
        return AdminClient(self.url, (self.data / "admin.token").read_text().strip())

    def populate(self, n: int, topup_fen: int, cards: bool = False) -> list[dict[str, Any]]:
        """``n`` student accounts (roster import), each topped up, optionally with a card."""
        admin = self.admin()
        try:
            admin.call("POST", "/v1/admin/roster", {"csv": roster_csv(n)})
            out = []
            for i in range(n):
                number = account_number(i)
                a = admin.call(
                    "POST",
                    f"/v1/admin/accounts/{number}/topups",
                    {"amount_fen": topup_fen, "channel": "cash"},
                )
                item = {"id": a["id"], "number": number}
                if cards:
                    c = admin.call("POST", f"/v1/admin/accounts/{number}/cards", {})
                    item.update(card_no=c["card_no"], uid=c["uid"])
                out.append(item)
            return out
        finally:
            admin.close()

    def enroll(self, name: str, seed: int, role: str = "pos") -> tuple[str, SigningKey]:
        """Enroll a terminal whose key comes from ``seed``; its id and key."""
        admin = self.admin()
        try:
            token = admin.call("POST", "/v1/admin/terminals/tokens", {"role": role, "name": name})
        finally:
            admin.close()
        key = key_from_seed(seed)
        client = ServerClient(self.url)
        try:
            resp = client.enroll(token["token"], key.public.to_b64())
        finally:
            client.close()
        return str(resp["terminal_id"]), key


def account_number(i: int) -> str:
    return f"B{i + 1:06d}"


def roster_csv(n: int) -> str:
    lines = ["number,name,type,id_card"]
    lines += [f"{account_number(i)},压测{i + 1},student,{id_card(i + 1)}" for i in range(n)]
    return "\n".join(lines) + "\n"
