"""The simulated phone app (学付宝) of a card holder: a wallet file with its server, session, its
own Ed25519 key and the server's certificate for it (``extra["codes"]``), and calls to the
server's app API.

The wallet file is JSON, mode 0600 (it holds a session token and the phone's private key).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import SimError, SimUsageError
from sync.client import ServerClient
from sync.crypto import SigningKey, b64e
from sync.errors import SyncError
from sync.files import write_private


@dataclass
class Wallet:
    server: str
    number: str
    token: str
    account: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Wallet:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except FileNotFoundError:
            raise SimUsageError(f"no wallet at {path}: run `ykt sim wallet login` first") from None
        except (OSError, ValueError, TypeError) as exc:
            raise SimUsageError(f"wallet file {path} is damaged: {exc}") from exc

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), ensure_ascii=False, indent=2).encode())

    def client(self) -> ServerClient:
        return ServerClient(self.server, headers={"Authorization": f"Bearer {self.token}"})

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """A call to the app API with this wallet's session."""
        client = self.client()
        try:
            return client.request(method, path, body=body, signed=False)
        except SyncError as exc:
            raise SimError(str(exc)) from exc
        finally:
            client.close()


def login(server: str, number: str, password: str) -> Wallet:
    """R16: sign in with number + query password; returns a new wallet.

    The phone makes its own Ed25519 key here and sends only the public half; the server
    certifies it for the account (wallet enrollment, for payment and authentication codes:
    :mod:`sim.wallet_codes`).  The key and certificate live in the wallet file."""
    key = SigningKey.generate()
    client = ServerClient(server)
    try:
        resp = client.request(
            "POST",
            "/v1/app/login",
            body={"number": number, "password": password, "public_key": key.public.to_b64()},
            signed=False,
        )
    except SyncError as exc:
        raise SimError(f"login failed: {exc}") from exc
    finally:
        client.close()
    w = Wallet(
        server=server.rstrip("/"), number=number, token=resp["token"], account=resp["account"]
    )
    if "wallet" in resp:
        w.extra["codes"] = {
            "phone_key": b64e(key.to_seed()),
            "counter": 0,
            **resp["wallet"],
        }
    return w
