"""Fakes for the unit tests: a scripted central server behind the client's transport seam
(:class:`sync.client.MockTransport`) and a POS terminal put together in-process (journal and
cache in SQLite ``:memory:``, a :class:`sync.clock.ManualClock`, a simulated MIFARE card on
:class:`sim.reader.SimReader`, keys from fixed seeds).  No processes, no sockets.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import msgspec

from edge.cache import Cache
from edge.journal import Journal
from edge.link import Link
from edge.pos.cardkeys import KeyProvider
from edge.pos.decide import Decider, Outcome
from edge.pos.decide_qr import QrDecider
from edge.uplink import Uplink
from sim.cards import encoded_card
from sim.mifare import MifareClassic1K
from sim.reader import SimCard, SimReader
from sync import codes
from sync.card import layout
from sync.card.keys import MASTERS, Keystore
from sync.client import MockTransport, Request, Response, ServerClient
from sync.clock import ManualClock, campus_date
from sync.crypto import SigningKey
from sync.db import Database
from sync.records import FeedPage, JournalRecord

TZ = "Asia/Shanghai"
NOON_MS = 1_780_027_200_000  # a campus noon, far from midnight
TERMINAL_ID = "T00042"
TERMINAL_SEED = bytes(range(32))
OPERATOR = "收银员7"  # not ASCII: a body is UTF-8, never \\u escapes
CAMPUS = "ynart"
CARD_ACCT, CARD_NO, CARD_UID = 101, "20260001", "04A1B2C3"
PHONE_ACCT = 102
PIN = "135790"
ISSUER_KID = 1
CERT_SERIAL = 5001
PROOF_KEY = bytes(range(100, 132))
POLICY = {
    "offline_max_purchase_fen": 5000,
    "offline_max_card_day_fen": 10000,
    "offline_max_card_fen": 10000,
    "offline_max_total_fen": 500000,
    "pin_max_tries": 3,
    "code_valid_s": 300,
    "code_skew_s": 60,
}


def seed_key(tag: int) -> SigningKey:
    return SigningKey.from_seed(bytes([tag]) * 32)


def card_keystore() -> Keystore:
    """The issuer's card keystore, from fixed bytes (every run makes the same cards)."""
    issuer = seed_key(7)
    return Keystore(
        campus_id=CAMPUS,
        role="server",
        masters={m: bytes([i + 1]) * 16 for i, m in enumerate(MASTERS)},
        issuer_public=issuer.public,
        issuer=issuer,
    )


def issued_card(
    keys: Keystore,
    *,
    uid: str = CARD_UID,
    card_no: str = CARD_NO,
    acct: int = CARD_ACCT,
    generation: int = 1,
    expires: str = "2030-12-31",
    counters: layout.Counters | None = None,
) -> MifareClassic1K:
    """A campus card as a desk writes it (a 2^10 scrypt verifier of :data:`PIN`: fast), with
    ``counters`` (of their record version) as the issuer carries them."""
    raw_uid = bytes.fromhex(uid)
    ident = layout.Identity(card_no, acct, "student", generation, expires, "2026-01-01")
    verifier = layout.make_verifier(keys, acct, PIN, log2n=10)
    blob = layout.issue_blob(keys, raw_uid, ident, verifier)
    return encoded_card(
        raw_uid, base64.b64encode(blob).decode(), keys, tag=bytes(16), counters=counters
    )


def account(aid: int, number: str, balance: int, limit: int, **kw: Any) -> dict[str, Any]:
    """An account snapshot as the feed sends it."""
    return {
        "id": aid,
        "number": number,
        "name": f"持卡人{aid}",
        "type": "student",
        "status": "normal",
        "balance_fen": balance,
        "transition_fen": 0,
        "limit_fen": limit,
        "spent_day": "2026-05-29",
        "spent_fen": 0,
        "pin_tries": 0,
        "pin_verifier": "",
        "pin_epoch": 0,
        "expires": "2030-12-31",
        "version": 1,
        **kw,
    }


def card_row(**kw: Any) -> dict[str, Any]:
    return {
        "card_no": CARD_NO,
        "account_id": CARD_ACCT,
        "uid": CARD_UID,
        "generation": 1,
        "status": "active",
        "identity": "",
        **kw,
    }


def error(status: int, code: str, message: str = "") -> tuple[int, dict[str, Any]]:
    """An error answer in the server's shape."""
    return status, {"error": {"code": code, "message": message or code}}


class FakeServer:
    """The far end, answering ``(method, path, body)`` with ``(status, JSON)``.

    ``down``: every request fails to connect.  ``failing``: every request gets this answer
    (``(503, …)``, ``(409, …)``).  ``auth``: the answers to authorize requests, in order.
    Pushed records are applied when they continue the chain (``head``); setting ``head``
    lower is a server restored from a backup.  ``pages``: feed pages to hand out, in order
    (then an empty page at ``version``); a feed stream hands them all out at once."""

    def __init__(self) -> None:
        self.down = False
        self.failing: tuple[int, dict[str, Any]] | None = None
        self.auth: list[dict[str, Any] | tuple[int, dict[str, Any]]] = []
        self.head = 0
        self.applied: list[JournalRecord] = []
        self.pushed: list[dict[str, str]] = []  # every wire record received
        self.pages: list[dict[str, Any]] = []
        self.version = 0
        self.requests: list[tuple[str, str, Any]] = []
        self.garbage = False

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        return self._answer(method, path, body)

    def stream(self, path: str) -> tuple[int, list[Any]]:
        """A feed stream: every page left, then the last one (``garbage``: a line that is
        not a page, after the first)."""
        self.requests.append(("GET", path, None))
        if self.failing is not None:
            return self.failing[0], [self.failing[1]]
        lines: list[Any] = []
        while self.pages:
            lines.append(self._answer("GET", path, None)[1])
            if self.garbage and len(lines) == 1:
                lines.append("not a page")
        lines.append(self._answer("GET", path, None)[1])
        return 200, lines

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if self.failing is not None:
            return self.failing
        if path == "/v1/health":
            return 200, {"ok": True}
        if path == "/v1/pos/authorize":
            got = self.auth.pop(0)
            return got if isinstance(got, tuple) else (200, got)
        if path == "/v1/journal":
            return 200, self._ingest(body["records"])
        if path == "/v1/feed":
            if self.pages:
                page = self.pages.pop(0)
                self.version = page["version"]
                return 200, {"ack": self.head, **page}
            return 200, {"version": self.version, "ack": self.head}
        return error(404, "not_found", path)

    def _ingest(self, wire: list[dict[str, str]]) -> dict[str, Any]:
        applied = duplicates = 0
        self.pushed.extend(wire)
        for w in wire:
            rec = JournalRecord.parse(w["body"])
            if rec.seq == self.head + 1:
                self.head += 1
                self.applied.append(rec)
                applied += 1
            elif rec.seq <= self.head:
                duplicates += 1
        return {
            "ack": self.head,
            "applied": applied,
            "duplicates": duplicates,
            "pending": 0,
            "alarms": [],
        }

    def paths(self) -> list[str]:
        return [p for _m, p, _b in self.requests]


def client_for(server: FakeServer, clock: ManualClock, key: SigningKey) -> ServerClient:
    """The terminal's real client, on a transport that asks ``server``."""

    def handler(req: Request) -> Response:
        if server.down:
            raise ConnectionError("refused")
        if "stream=1" in req.target:
            status, lines = server.stream(req.path)
            return Response(status, b"\n".join(json.dumps(x).encode() for x in lines))
        status, out = server.handle(req.method, req.path, req.json())
        return Response(status, json.dumps(out).encode())

    return ServerClient(
        "http://pos.invalid",
        terminal_id=TERMINAL_ID,
        key=key,
        clock=clock,
        transport=MockTransport(handler),
    )


def first_page(issuer: SigningKey, phone: SigningKey, **changes: Any) -> dict[str, Any]:
    """The first feed page of the world: the card account, the phone account with its wallet
    certificate, the code keys, the policy."""
    campus = codes.campus_tag(CAMPUS)
    cert = codes.make_cert(
        issuer,
        ISSUER_KID,
        campus,
        CERT_SERIAL,
        PHONE_ACCT,
        NOON_MS // 1000 - 3600,
        NOON_MS // 1000 + 86400,
        phone.public.to_bytes(),
    )
    page = {
        "version": 1,
        "ack": 0,
        "accounts": [
            account(CARD_ACCT, "S2026001", 50_000, 3000),
            account(PHONE_ACCT, "S2026002", 30_000, 5000),
        ],
        "cards": [card_row()],
        "certs": [
            {
                "serial": CERT_SERIAL,
                "account_id": PHONE_ACCT,
                "raw": base64.b64encode(cert).decode(),
                "revoked": False,
            }
        ],
        "codes": {
            "campus_id": CAMPUS,
            "campus_tag": campus,
            "keys": [{"kid": ISSUER_KID, "public_key": issuer.public.to_b64()}],
            "code_valid_s": 300,
            "code_skew_s": 60,
            "proof_key": base64.b64encode(PROOF_KEY).decode(),
        },
        "policy": dict(POLICY),
        "campus_id": CAMPUS,
        "tz": TZ,
    }
    page.update(changes)
    return page


class World:
    """One POS terminal in-process, with the server behind a :class:`FakeServer`."""

    def __init__(self, data: Path, **page: Any) -> None:
        self.clock = ManualClock(NOON_MS)
        self.today = campus_date(NOON_MS, TZ)
        self.key = SigningKey.from_seed(TERMINAL_SEED)
        self.journal = Journal(Database(":memory:"), TERMINAL_ID, self.key, self.clock, TZ)
        self.cache = Cache(Database(":memory:"))
        self.link = Link(self.clock)
        self.server = FakeServer()
        self.client = client_for(self.server, self.clock, self.key)
        self.card_keys = card_keystore()
        self.issuer = seed_key(9)
        self.phone = seed_key(11)
        self.campus = codes.campus_tag(CAMPUS)
        self.page = first_page(self.issuer, self.phone, **page)
        self.cache.apply(msgspec.convert(self.page, FeedPage))
        keyfile = data / "card-keys.json"
        self.card_keys.for_role("pos").save(keyfile)
        self.keys = KeyProvider(keyfile, None, role="pos")
        self.decider = Decider(
            self.journal,
            self.cache,
            self.client,
            self.link,
            self.clock,
            TZ,
            self.keys,
            operator=OPERATOR,
        )
        self.qr = QrDecider(self.decider, TERMINAL_ID, CAMPUS, self.key, random.Random(5))
        self.reader = SimReader("unit")
        self.card = issued_card(self.card_keys)
        self.counter = 0

    def account_row(self, aid: int) -> dict[str, Any]:
        """The account as the first feed page sent it."""
        return dict(next(a for a in self.page["accounts"] if a["id"] == aid))

    def cache_page(self, **rows: Any) -> FeedPage:
        """The next feed page, carrying ``rows`` (accounts, cards, certs …)."""
        return msgspec.convert({"version": self.cache.version + 1, **rows}, FeedPage)

    # -- acts -------------------------------------------------------------------------------
    def present(self, card: MifareClassic1K | None = None) -> SimCard:
        return self.reader.present(card or self.card)

    def tap(self, amount: int, pin: str | None = None) -> Outcome:
        """The card tapped for a sale of ``amount`` (and lifted again)."""
        present = self.present()
        try:
            return self.decider.decide(present, amount, pin)
        finally:
            present.close()

    def code(self, confirmed: bool = False, serial: int = CERT_SERIAL) -> str:
        """A fresh payment code of the phone (its next counter)."""
        self.counter += 1
        raw = codes.make_code(
            self.phone,
            codes.Kind.PAY,
            self.campus,
            serial,
            self.clock.now_ms() // 1000,
            self.counter,
            confirmed=confirmed,
        )
        return codes.to_text(raw)

    def approve(self, acct: int, seq: int, balance: int, limit: int, **kw: Any) -> None:
        """The server's next authorize answer: approved."""
        self.server.auth.append(
            {
                "approved": True,
                "code": "ok",
                "reason": "approved",
                "auth_id": f"{TERMINAL_ID}:{seq}",
                "balance_fen": balance,
                "limit_fen": limit,
                "spent_fen": kw.pop("spent_fen", 0),
                "pin": kw.pop("pin", "none"),
                "pin_epoch": 0,
                "account_id": acct,
                "number": f"S2026{acct:03d}",
                "name": f"持卡人{acct}",
                **kw,
            }
        )

    def offline(self) -> None:
        """The server cannot be reached, and the terminal knows it."""
        self.server.down = True
        self.link.down("refused")

    def online(self) -> None:
        self.server.down = False
        self.link.up()

    def uplink(self, batch: int = 500) -> Uplink:
        return Uplink(
            self.journal,
            self.cache,
            lambda: self.client,
            self.link,
            random.Random(3),
            batch=batch,
            poll_wait_s=0.0,
        )

    def records(self) -> list[JournalRecord]:
        """Every record of the journal, parsed from its stored body."""
        return [
            JournalRecord.parse(r["body"])
            for r in self.journal.db.all("SELECT body FROM journal ORDER BY seq")
        ]
