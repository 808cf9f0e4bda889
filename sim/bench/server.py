"""A real ``ykt server`` for the benchmarks (:class:`sim.harness.ykt.ServerProcess`: uvicorn on
loopback, SQLite in a fresh data directory), with helpers to populate it through the admin API
and enroll terminals.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sim.bench.errors import BenchmarkError
from sim.bench.records import key_from_seed
from sim.harness import procs
from sim.harness.ykt import ServerProcess
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


class BenchServer(ServerProcess):
    """``with BenchServer(data) as server: …``"""

    def populate(self, n: int, topup_fen: int, cards: bool = False) -> list[dict[str, Any]]:
        """``n`` student accounts (roster import), each topped up, optionally with a card."""
        admin = self.admin(keep_alive=True)
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

    def terminal(self, name: str, seed: int, role: str = "pos") -> tuple[str, SigningKey]:
        """Enroll a terminal whose key comes from ``seed``; its id and key."""
        key = key_from_seed(seed)
        return self.enroll(name, key, role), key


def account_number(i: int) -> str:
    return f"B{i + 1:06d}"


def roster_csv(n: int) -> str:
    lines = ["number,name,type,id_card"]
    lines += [f"{account_number(i)},压测{i + 1},student,{id_card(i + 1)}" for i in range(n)]
    return "\n".join(lines) + "\n"
