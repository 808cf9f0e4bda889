"""The real server app served by uvicorn on loopback inside the test process, on a Context the
test holds (so it can use a manual clock and look at the database), with signed terminal
clients and card-holder sessions."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import uvicorn

from sim.harness.ykt import AdminApi
from sync.client import ServerClient
from sync.clock import Clock, SystemClock
from sync.crypto import SigningKey
from sync.server.app import create_app
from sync.server.cli import ensure_admin_token
from sync.server.context import Context, ServerConfig
from tests import dbs
from tests.helpers import free_port, id_card, wait_until


def initial_pw(n: int) -> str:
    """R3: the initial password of the account made with ``id_card(n)``."""
    idc = id_card(n)
    return idc[-7:-1] if idc[-1] == "X" else idc[-6:]


@dataclass
class Live(AdminApi):
    """The server app in a thread of the test process (uvicorn on loopback), on a
    :class:`Context` the test holds; driven over HTTP like a :class:`ServerProcess`
    (:class:`sim.harness.ykt.AdminApi`)."""

    ctx: Context
    port: int = field(default_factory=free_port)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    token: str = ""
    clients: list[ServerClient] = field(default_factory=list)
    admin_token_file: Path | None = None

    @property
    def token_file(self) -> Path:
        assert self.admin_token_file is not None, "not started"
        return self.admin_token_file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Live:
        self.admin_token_file, _ = ensure_admin_token(self.ctx)
        self.token = self.admin_token_file.read_text().strip()
        config = uvicorn.Config(
            create_app(self.ctx), host="127.0.0.1", port=self.port, log_level="error"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server is not None and self.server.started, 10)
        return self

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.ctx.db.close()

    # -- HTTP ------------------------------------------------------------------------------
    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None, **kw: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(
            method, self.url + path, json=body, headers=headers, timeout=10, **kw
        )

    def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """:meth:`AdminApi.admin_call`."""
        return self.admin_call(method, path, body)

    def add_account(
        self, number: str, n: int, kind: str = "student", topup_fen: int = 0, card: bool = True
    ) -> dict[str, Any]:
        self.admin(
            "POST",
            "/v1/admin/accounts",
            {"number": number, "name": f"测试{n}", "type": kind, "id_card": id_card(n)},
        )
        if topup_fen:
            self.admin(
                "POST",
                f"/v1/admin/accounts/{number}/topups",
                {"amount_fen": topup_fen, "channel": "cash"},
            )
        out: dict[str, Any] = {"number": number, "password": initial_pw(n), "id_card": id_card(n)}
        if card:
            out.update(self.admin("POST", f"/v1/admin/accounts/{number}/cards", {}))
        return out

    def login(self, number: str, password: str) -> str:
        r = self.call("POST", "/v1/app/login", {"number": number, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def terminal(self, role: str, name: str | None = None) -> ServerClient:
        """A terminal of ``role`` enrolled with its own key: a signed client."""
        tok = self.enroll_token(name or f"{role}-t", role)
        key = SigningKey.generate()
        client = ServerClient(self.url, clock=self.ctx.clock)
        self.clients.append(client)
        got = client.enroll(tok, key.public.to_b64())
        client.terminal_id, client.key = got["terminal_id"], key
        return client


def open_live(tmp: Path, clock: Clock | None = None, **config: Any) -> Live:
    """The server app on a fresh database of the current kind (tests/dbs.py)."""
    config.setdefault("db_url", dbs.fresh_url())
    cfg = ServerConfig(data_dir=tmp, password_log2_n=10, seed=5, **config)
    ctx = Context.open(cfg, clock=clock or SystemClock())
    dbs.opened(cfg.db_url, ctx.db)
    return Live(ctx).start()


def proof(card: dict[str, Any]) -> dict[str, Any]:
    """What a kiosk reads off a card the server issued (see docs/card-present.md)."""
    return {
        "card_no": card["card_no"],
        "uid": card["uid"],
        "generation": card["generation"],
        "tag": card["tag"],
    }


class Pos:
    """A POS terminal speaking the real protocol: online authorization, then the signed,
    hash-chained journal record pushed to the server (what `ykt pos` does)."""

    def __init__(self, client: ServerClient) -> None:
        from sync import protocol

        self.client = client
        self.seq = 0
        assert client.terminal_id is not None
        self.prev = protocol.genesis_hash(client.terminal_id)

    def sell(self, card: dict[str, Any], amount: int, pin: str | None = None) -> dict[str, Any]:
        from sync.records import UNSET, AuthorizeRequest, to_json

        req = AuthorizeRequest(
            seq=self.seq + 1,
            card_no=card["card_no"],
            uid=card["uid"],
            amount_fen=amount,
            method="card",
            pin=UNSET if pin is None else pin,
        )
        resp = to_json(self.client.authorize(req))
        if resp["approved"]:
            self.journal(card, resp["account_id"], amount, resp)
        return resp

    def offline_sale(self, card: dict[str, Any], account_id: int, amount: int) -> None:
        """A sale decided offline (docs/architecture.md): journaled and synced later, no authorization."""
        self.journal(card, account_id, amount, None)

    def journal(
        self, card: dict[str, Any], account_id: int, amount: int, resp: dict[str, Any] | None
    ) -> None:
        import msgspec

        from sync import protocol, records

        self.seq += 1
        assert self.client.terminal_id is not None and self.client.key is not None
        rec = records.offline_sale(
            term=self.client.terminal_id,
            seq=self.seq,
            prev=self.prev,
            ts=self.client.clock.now_ms(),
            acct=account_id,
            cred=f"card:{card['card_no']}:{card['uid']}",
            amt=amount,
            off=resp is None,
            lim=resp["limit_fen"] if resp else 0,
            bal=resp["balance_fen"] if resp else None,
            auth=resp["auth_id"] if resp else None,
        )
        if resp:
            rec = msgspec.structs.replace(rec, pin=resp["pin"], spent=resp["spent_fen"])
        body, sig = protocol.seal(self.client.key, rec)
        self.prev = protocol.record_hash(body)
        ack = self.client.push([protocol.wire_record(body, sig)])
        assert ack.ack == self.seq, ack
