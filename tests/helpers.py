"""The tests' side of the harness: real ``ykt server`` and ``ykt pos`` processes on loopback
(started by :mod:`sim.harness.ykt`, the one way to start them), the one ``ykt()`` wrapper, and
small helpers."""

from __future__ import annotations

import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from edge.cache import Cache
from sim.harness import procs
from sim.harness.procs import free_port, ykt_cmd
from sim.harness.ykt import PosProcess, ServerProcess
from sync import paygate
from sync.crypto import SigningKey
from sync.db import Database
from sync.paygate import Notification
from tests import dbs

__all__ = [
    "DEV_ONLY",
    "ROOT",
    "PosProc",
    "ServerProc",
    "free_port",
    "id_card",
    "wait_until",
    "ykt",
    "ykt_cmd",
]

ROOT = Path(__file__).resolve().parent.parent
#: the packages (import names) of the [dev] extra only: ykt itself (``ykt bench`` included)
#: imports none of them (tests/unit/test_architecture.py) and runs without them
#: (tests/test_production_install.py)
DEV_ONLY = (
    "pytest",
    "hypothesis",
    "httpx",
    "schemathesis",
    "playwright",
    "mypy",
    "ruff",
    "importlinter",
    "grimp",
)
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_card(n: int, birth: str = "20040101") -> str:
    """A valid (GB 11643) ID-card number, different for every n."""
    body = f"510102{birth}{n % 1000:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


def ykt(
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``ykt ARGS`` as a process (the one way the tests run a ``ykt`` command): its exit
    code, stdout and stderr.  ``check``: an exit code other than 0 fails the test, with stderr.
    ``env`` replaces the environment (as subprocess does)."""
    out = subprocess.run(
        ykt_cmd(*args), capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )
    if check and out.returncode != 0:
        raise AssertionError(f"ykt {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return out


def wait_until(pred: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll a condition that has no event to await (another process's state)."""
    got = procs.poll(pred, timeout, interval)
    if not got:
        raise AssertionError(f"condition not met within {timeout}s")
    return got


@dataclass
class ServerProc(ServerProcess):
    """A real ``ykt server`` (:class:`sim.harness.ykt.ServerProcess`) on a fresh database of
    the current kind (SQLite in ``data``, or PostgreSQL: tests/dbs.py), with the accounts the
    tests need."""

    #: PostgreSQL database URL; None: SQLite in ``data`` (see tests/dbs.py)
    db_url: str | None = field(default_factory=dbs.fresh_url)

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

    def provider_topup(self, number: str, password: str, channel: str, amount_fen: int) -> None:
        """Money of a provider's channel (R7) as it really arrives: the holder's order, then
        the provider's signed notification of its payment (a key this test registered for the
        channel; nothing listens at the provider's URL: the notification is sent from here)."""
        key = _provider_keys.get((self.url, channel))
        if key is None:
            key = _provider_keys[(self.url, channel)] = SigningKey.generate()
            self.register_paygate(channel, "http://127.0.0.1:9", key.public.to_b64())
        login = requests.post(
            f"{self.url}/v1/app/login", json={"number": number, "password": password}, timeout=10
        )
        login.raise_for_status()
        auth = {"Authorization": f"Bearer {login.json()['token']}"}
        body = {"amount_fen": amount_fen, "channel": channel, "password": password}
        got = requests.post(f"{self.url}/v1/app/topups", json=body, headers=auth, timeout=10)
        got.raise_for_status()
        order = got.json()["pay"]["order"]
        txn = secrets.token_hex(8)
        note = paygate.encode(
            Notification(
                id=f"N{txn}",
                event="payment.succeeded",
                order_id=order["order_id"],
                txn_id=f"X{txn}",
                channel=channel,  # type: ignore[arg-type]
                amount_fen=amount_fen,
                currency=order["currency"],
                paid_ms=int(time.time() * 1000),
                attach=order["attach"],
            )
        )
        headers = paygate.sign(key, note, int(time.time() * 1000))
        done = requests.post(
            f"{self.url}/v1/paygate/{channel}/notify",
            data=note,
            headers={**headers, "Content-Type": "application/json"},
            timeout=10,
        )
        assert done.status_code == 200 and done.json()["credited"], done.text


_provider_keys: dict[tuple[str, str], SigningKey] = {}


class PosProc(PosProcess):
    """A real ``ykt pos`` agent (:class:`sim.harness.ykt.PosProcess`) enrolled at ``server``
    (or talking to ``server_url`` instead, e.g. a dead port: the network cut), on a simulated
    reader, INFO logging and a fixed seed."""

    def __init__(
        self,
        data: Path,
        server: ServerProc,
        token: str | None = None,
        *,
        server_url: str | None = None,
        seed: int | None = 7,
        log_level: str | None = "INFO",
        **kw: Any,
    ) -> None:
        super().__init__(data, token=token, seed=seed, log_level=log_level, **kw)
        self.server = server
        self.server_url = server_url or ""

    def upstream(self) -> str:
        return self.server_url or self.server.url

    def wait_synced(self, timeout: float = 15.0) -> dict[str, Any]:
        return dict(
            wait_until(
                lambda: (s := self.status())["queued"] == 0 and s["online"] and s, timeout, 0.05
            )
        )

    def wait_account_tries(self, card_no: str, tries: int, timeout: float = 10.0) -> None:
        """Wait until the delta feed has brought the server's count of wrong consumption
        passwords (R5) of this card's account to the terminal's cache."""
        cache = Cache(Database(self.data / "cache.db", synchronous="NORMAL"))

        def synced() -> bool:
            card = cache.card(card_no)
            acct = cache.account(card.account_id) if card is not None else None
            return acct is not None and acct.pin_tries == tries

        try:
            wait_until(synced, timeout, 0.05)
        finally:
            cache.db.close()

    def wait_card_known(self, card_no: str, timeout: float = 10.0) -> None:
        """Wait until the delta feed has brought this card to the terminal's cache."""
        cache = Cache(Database(self.data / "cache.db", synchronous="NORMAL"))
        try:
            wait_until(lambda: cache.card(card_no) is not None, timeout, 0.05)
        finally:
            cache.db.close()
