"""The stand-in payment provider (sim/paygate.py) served by uvicorn in a thread of the test
process, on the test's clock, for the in-process server of tests/live.py: the tests pay orders
at it and look at what it delivered."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import uvicorn

from sim.paygate import Provider, create_paygate
from sim.wallet_business_cli import pay_at_provider
from sync import paygate
from sync.clock import Clock
from sync.crypto import SigningKey
from sync.paygate import Notification
from tests.helpers import free_port, wait_until
from tests.live import Live


@dataclass
class LiveGate:
    provider: Provider
    port: int = field(default_factory=free_port)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_key(self) -> str:
        return self.provider.key.public.to_b64()

    def start(self) -> LiveGate:
        self.provider.start()
        config = uvicorn.Config(
            create_paygate(self.provider), host="127.0.0.1", port=self.port, log_level="error"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server is not None and self.server.started, 10)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.provider.stop()


def open_gate(tmp: Path, clock: Clock, **kw: Any) -> LiveGate:
    return LiveGate(Provider(tmp, clock=clock, **kw)).start()


def register(live: Live, gate: LiveGate, *channels: str) -> None:
    for ch in channels:
        live.register_paygate(ch, gate.url, gate.public_key)


def order(live: Live, token: str, channel: str, amount: int, password: str, **kw: Any) -> Any:
    body = {"amount_fen": amount, "channel": channel, "password": password, **kw}
    return live.call("POST", "/v1/app/topups", body, token)


def pay(order_out: dict[str, Any]) -> dict[str, Any]:
    """Pay an order at its provider, as the app does (ykt sim wallet topup)."""
    return pay_at_provider(order_out["pay"])


def wait_order(live: Live, token: str, order_id: str, wait: float = 10) -> dict[str, Any]:
    r = live.call("GET", f"/v1/app/topups/{order_id}?wait={wait}", token=token)
    assert r.status_code == 200, r.text
    return dict(r.json())


def notification(order_out: dict[str, Any], txn_id: str, paid_ms: int, **changes: Any) -> bytes:
    """A notification of an order's payment (fields changed as a test likes), unsigned."""
    o = order_out["pay"]["order"]
    fields = {
        "id": "N" + txn_id,
        "event": "payment.succeeded",
        "order_id": o["order_id"],
        "txn_id": txn_id,
        "channel": o["channel"],
        "amount_fen": o["amount_fen"],
        "currency": o["currency"],
        "paid_ms": paid_ms,
        "attach": o["attach"],
        **changes,
    }
    return paygate.encode(Notification(**fields))


def deliver(
    live: Live, channel: str, body: bytes, key: SigningKey, ts_ms: int | None = None
) -> requests.Response:
    """POST a notification to the server's notify URL, signed with ``key``."""
    headers = paygate.sign(key, body, live.ctx.now_ms() if ts_ms is None else ts_ms)
    return requests.post(
        f"{live.url}/v1/paygate/{channel}/notify",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
        timeout=10,
    )


def topped_up(
    live: Live, gate: LiveGate, number: str, password: str, channel: str, amount: int
) -> dict[str, Any]:
    """A holder's top-up as the app makes it: an order, paid at the provider, credited when
    its notification arrives (the channel's provider must be registered)."""
    token = live.login(number, password)
    r = order(live, token, channel, amount, password)
    assert r.status_code == 200, r.text
    pay(r.json())
    done = wait_order(live, token, r.json()["order_id"])
    assert done["status"] == "credited", done
    return done
