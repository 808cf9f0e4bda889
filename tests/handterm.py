"""A terminal built by hand for server tests, without the POS agent.

It generates its own Ed25519 key, enrolls with a one-time token, seals journal records with
:func:`sync.protocol.seal` (keeping its own hash chain) and signs every request through
:class:`sync.client.ServerClient`.  Tests can then send whatever they like: duplicates, batches
out of order, gaps, edited records, foreign records.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import msgspec
import requests

from sim.harness.ykt import AdminApi
from sync import protocol
from sync.client import ServerClient
from sync.clock import Clock, SystemClock
from sync.crypto import SigningKey
from sync.records import AuthorizeRequest, JournalRecord, offline_sale, to_json
from tests.helpers import ServerProc


class HandTerminal:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        key: SigningKey | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.url = url
        self.key = key or SigningKey.generate()
        self.clock = clock or SystemClock()
        enrolled = ServerClient(url).enroll(token, self.key.public.to_b64())
        self.terminal_id: str = enrolled["terminal_id"]
        self.role: str = enrolled["role"]
        self.client = ServerClient(
            url, terminal_id=self.terminal_id, key=self.key, clock=self.clock
        )
        #: every record sealed so far, in sequence order: (record, wire form)
        self.journal: list[tuple[JournalRecord, dict[str, str]]] = []

    @classmethod
    def enroll(cls, server: AdminApi, name: str, role: str = "pos", **kw: Any) -> HandTerminal:
        """Enroll at a server however it was started (a process, or the in-thread app)."""
        return cls(server.url, server.enroll_token(name, role), **kw)

    # -- records ----------------------------------------------------------------------------
    @property
    def head_hash(self) -> str:
        if not self.journal:
            return protocol.genesis_hash(self.terminal_id)
        return protocol.record_hash(self.journal[-1][1]["body"].encode())

    def next_record(self, acct: int, amt: int, **kw: Any) -> JournalRecord:
        """The next record (an offline card sale unless ``kw`` changes fields; not yet
        sealed or checked)."""
        rec = offline_sale(
            term=self.terminal_id,
            seq=len(self.journal) + 1,
            prev=self.head_hash,
            ts=self.clock.now_ms(),
            acct=acct,
            amt=amt,
            cred="card:test",
            lim=5000,
        )
        return msgspec.structs.replace(rec, **kw)

    def fields(self, acct: int, amt: int, **kw: Any) -> dict[str, Any]:
        """The fields of the next record as JSON values, to send whatever a test likes."""
        return {**self.next_record(acct, amt).to_dict(), **kw}

    def record(self, acct: int, amt: int, **kw: Any) -> dict[str, str]:
        """Seal the next record of this terminal's chain; returns its wire form."""
        rec = self.next_record(acct, amt, **kw)
        body, sig = protocol.seal(self.key, rec)
        wire = protocol.wire_record(body, sig)
        self.journal.append((rec, wire))
        return wire

    def wire(self, seqs: Iterable[int]) -> list[dict[str, str]]:
        return [self.journal[s - 1][1] for s in seqs]

    # -- requests -----------------------------------------------------------------------------
    def push(self, records: list[dict[str, str]], acked: int | None = None) -> dict[str, Any]:
        """The server's answer (:class:`sync.records.PushAck`) as JSON; ``acked``: the head
        the server had acked before, as the uplink sends it."""
        return to_json(self.client.push(records, acked=acked))

    def push_raw(self, body: bytes) -> requests.Response:
        """POST arbitrary bytes to /v1/journal, correctly signed."""
        headers = protocol.sign_request(
            self.key, self.terminal_id, "POST", "/v1/journal", body, self.clock.now_ms()
        )
        headers["Content-Type"] = "application/json"
        return requests.post(self.url + "/v1/journal", data=body, headers=headers, timeout=10)

    def feed(self, since: int, wait: float = 0) -> dict[str, Any]:
        """A feed page (:class:`sync.records.FeedPage`) as JSON."""
        return to_json(self.client.feed(since, wait=wait))

    def authorize_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """What a POS sends (:class:`sync.records.AuthorizeRequest`); the answer as JSON."""
        req = msgspec.convert(body, AuthorizeRequest)
        return to_json(self.client.authorize(req, timeout=10))

    def authorize(self, seq: int, card_no: str, amount_fen: int, **kw: Any) -> dict[str, Any]:
        """Whatever request a test makes (not only what a POS sends); the answer as JSON."""
        return self.client.request(
            "POST",
            "/v1/pos/authorize",
            body={"seq": seq, "card_no": card_no, "amount_fen": amount_fen, **kw},
            timeout=(0.5, 10),
        )

    def close(self) -> None:
        self.client.close()


def admin_raw(
    server: ServerProc, method: str, path: str, body: Any = None, *, data: bytes | None = None
) -> requests.Response:
    """An admin request whose answer the test inspects itself (status and error shape)."""
    headers = {"Authorization": f"Bearer {server.token_file.read_text().strip()}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
        return requests.request(method, server.url + path, data=data, headers=headers, timeout=30)
    return requests.request(method, server.url + path, json=body, headers=headers, timeout=30)


def error_of(resp: requests.Response) -> dict[str, Any]:
    """The ``{"error": {"code", "message"}}`` of an error answer (asserting its shape)."""
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["code"], str) and err["code"], body
    assert isinstance(err["message"], str) and err["message"], body
    return dict(err)


_numbers = itertools.count(1)


def fresh_account(server: ServerProc, topup_fen: int = 0, **kw: Any) -> dict[str, Any]:
    """A new account with one card (and money): the card, plus ``id``, ``number`` and the R3
    ``password``."""
    n = next(_numbers)
    number = f"U{n:04d}"
    card = server.add_account(number, n, topup_fen=topup_fen, **kw)
    return {**card, "id": card["account_id"], "number": number}


def ledger_ok(server: ServerProc) -> None:
    check = server.admin().call("GET", "/v1/admin/ledger/check")
    assert check["ok"], check


def alarms_of(server: ServerProc, terminal_id: str) -> list[dict[str, Any]]:
    """Alarms raised for one terminal, oldest first."""
    rows = server.admin().call("GET", "/v1/admin/alarms")["alarms"]
    return [a for a in reversed(rows) if a["terminal_id"] == terminal_id]
