"""Journal records as the POS signs them, kept as fixtures (``tests/unit/data/wire_records.json``).

Run ``.venv/bin/python -m tests.unit.make_wire_fixtures`` to write the file again.  The file in
the repository was written by the code *before* the journal record became typed
(sync.records); ``tests/unit/test_wire_fixtures.py`` checks that today's code still makes the
very same bytes and signatures from the same sales, and parses every stored body.

The scenario drives the real deciders (:class:`edge.pos.decide.Decider`,
:class:`edge.pos.decide_qr.QrDecider`) and the real journal, in-process: a simulated MIFARE
card (:class:`sim.mifare.MifareClassic1K`) behind :class:`sim.reader.SimReader`, a
:class:`sync.clock.ManualClock`, keys from fixed seeds and a scripted server behind the
client's transport seam.  Every record kind and payment method the POS makes is there:

=====  ==========  ==========  =======  ====  ============================================
 seq   kind        method      offline  pin   what
=====  ==========  ==========  =======  ====  ============================================
 1     sale        card        no       none  authorized by the server
 2     pin_fail    card        no       fail  wrong consumption password, online
 3     sale        card        no       ok    over the daily limit, right password
 4     sale        card        yes      none  the server is down
 5     pin_fail    card        yes      fail  wrong password, offline
 6     sale        card        yes      ok    right password, offline
 7     sale        qr-forward  no       none  authorized by the server (x.code)
 8     sale        qr-forward  yes      none  verified by the terminal
 9     sale        qr-forward  yes      ok    over the limit, confirmed on the phone
 10    sale        qr-reverse  yes      none  proof shown (x.order, x.payment)
 11    sale        qr-reverse  yes      none  proof keyed as a short code (acct 0, x.proof)
=====  ==========  ==========  =======  ====  ============================================

plus the hand-built records of the benchmarks and test terminals (``sim.bench.records``).
"""

from __future__ import annotations

import base64
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from edge.cache import Cache
from edge.journal import Journal
from edge.link import Link
from edge.pos.cardkeys import KeyProvider
from edge.pos.decide import Decider, Outcome
from edge.pos.decide_qr import QrDecider
from sim.bench import records as bench_records
from sim.cards import encoded_card
from sim.reader import SimReader
from sync import codes, protocol
from sync.card import layout
from sync.card.keys import MASTERS, Keystore
from sync.client import MockTransport, Request, Response, ServerClient
from sync.clock import ManualClock, campus_date
from sync.crypto import SigningKey
from sync.db import Database
from sync.records import FeedPage

HERE = Path(__file__).parent
FIXTURE = HERE / "data" / "wire_records.json"

TZ = "Asia/Shanghai"
NOON_MS = 1_780_027_200_000  # a campus noon, far from midnight
TERMINAL_ID = "T00042"
TERMINAL_SEED = bytes(range(32))
BENCH_TERMINAL = "T00043"
BENCH_SEED = 4242
OPERATOR = "收银员7"  # not ASCII: the body is UTF-8, never \\u escapes
CAMPUS = "ynart"
CARD_ACCT, CARD_NO, CARD_UID = 101, "20260001", "04A1B2C3"
PHONE_ACCT = 102
PIN = "135790"
ISSUER_KID = 1
PROOF_KEY = bytes(range(100, 132))


def seed_key(tag: int) -> SigningKey:
    return SigningKey.from_seed(bytes([tag]) * 32)


def card_keystore() -> Keystore:
    """The issuer's card keystore, from fixed bytes (the scenario must be repeatable)."""
    issuer = seed_key(7)
    return Keystore(
        campus_id=CAMPUS,
        role="server",
        masters={m: bytes([i + 1]) * 16 for i, m in enumerate(MASTERS)},
        issuer_public=issuer.public,
        issuer=issuer,
    )


def issued_card(keys: Keystore) -> Any:
    """The campus card of account 101 as a desk writes it (a 2^10 scrypt verifier: fast)."""
    uid = bytes.fromhex(CARD_UID)
    ident = layout.Identity(CARD_NO, CARD_ACCT, "student", 1, "2030-12-31", "2026-01-01")
    verifier = layout.make_verifier(keys, CARD_ACCT, PIN, log2n=10)
    blob = layout.issue_blob(keys, uid, ident, verifier)
    return encoded_card(uid, base64.b64encode(blob).decode(), keys, tag=bytes(16))


def account(aid: int, number: str, balance: int, limit: int) -> dict[str, Any]:
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
    }


class ScriptedServer:
    """The far end: answers ``(method, path, body)`` with ``(status, json)``; ``down`` makes
    every request fail to connect.  ``auth`` answers authorize requests in order."""

    def __init__(self) -> None:
        self.down = False
        self.auth: list[dict[str, Any]] = []
        self.pushed: list[dict[str, str]] = []
        self.requests: list[tuple[str, str, Any]] = []

    def handle(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path, body))
        if path == "/v1/health":
            return 200, {"ok": True}
        if path == "/v1/pos/authorize":
            return 200, self.auth.pop(0)
        if path == "/v1/journal":
            self.pushed.extend(body["records"])
            return 200, {"ack": 0, "applied": 0, "duplicates": 0, "pending": 0, "alarms": []}
        return 404, {"error": {"code": "not_found", "message": path}}


def client_for(server: ScriptedServer, clock: ManualClock, key: SigningKey) -> ServerClient:
    """The terminal's real client, on a transport that asks ``server``."""

    def handler(req: Request) -> Response:
        if server.down:
            raise ConnectionError("refused")
        status, out = server.handle(req.method, req.path, req.json())
        return Response.of(status, out)

    return ServerClient(
        "http://pos.invalid",
        terminal_id=TERMINAL_ID,
        key=key,
        clock=clock,
        transport=MockTransport(handler),
    )


class World:
    """One POS terminal, in-process."""

    def __init__(self, data: Path) -> None:
        self.clock = ManualClock(NOON_MS)
        self.today = campus_date(NOON_MS, TZ)
        self.key = SigningKey.from_seed(TERMINAL_SEED)
        self.journal = Journal(Database(":memory:"), TERMINAL_ID, self.key, self.clock, TZ)
        self.cache = Cache(Database(":memory:"))
        self.link = Link(self.clock)
        self.server = ScriptedServer()
        self.client = client_for(self.server, self.clock, self.key)
        self.card_keys = card_keystore()
        self.issuer = seed_key(9)
        self.phone = seed_key(11)
        self.campus = codes.campus_tag(CAMPUS)
        cert = codes.make_cert(
            self.issuer,
            ISSUER_KID,
            self.campus,
            5001,
            PHONE_ACCT,
            NOON_MS // 1000 - 3600,
            NOON_MS // 1000 + 86400,
            self.phone.public.to_bytes(),
        )
        self.cache.apply(
            msgspec.convert(
                {
                    "version": 1,
                    "ack": 0,
                    "accounts": [
                        account(CARD_ACCT, "S2026001", 50_000, 3000),
                        account(PHONE_ACCT, "S2026002", 30_000, 5000),
                    ],
                    "cards": [
                        {
                            "card_no": CARD_NO,
                            "account_id": CARD_ACCT,
                            "uid": CARD_UID,
                            "generation": 1,
                            "status": "active",
                            "identity": "",
                        }
                    ],
                    "certs": [
                        {
                            "serial": 5001,
                            "account_id": PHONE_ACCT,
                            "raw": base64.b64encode(cert).decode(),
                            "revoked": False,
                        }
                    ],
                    "codes": {
                        "campus_id": CAMPUS,
                        "campus_tag": self.campus,
                        "keys": [{"kid": ISSUER_KID, "public_key": self.issuer.public.to_b64()}],
                        "code_valid_s": 300,
                        "code_skew_s": 60,
                        "proof_key": base64.b64encode(PROOF_KEY).decode(),
                    },
                    "policy": {
                        "offline_max_purchase_fen": 5000,
                        "offline_max_card_day_fen": 10000,
                        "offline_max_total_fen": 500000,
                        "pin_max_tries": 3,
                        "code_valid_s": 300,
                        "code_skew_s": 60,
                    },
                    "campus_id": CAMPUS,
                    "tz": TZ,
                },
                FeedPage,
            )
        )
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
        self.reader = SimReader("fixture")
        self.card = issued_card(self.card_keys)
        self.counter = 0

    # -- acts -------------------------------------------------------------------------------
    def tap(self, amount: int, pin: str | None = None) -> Outcome:
        present = self.reader.present(self.card)
        try:
            return self.decider.decide(present, amount, pin)
        finally:
            present.close()

    def code(self, confirmed: bool = False) -> str:
        self.counter += 1
        raw = codes.make_code(
            self.phone,
            codes.Kind.PAY,
            self.campus,
            5001,
            self.clock.now_ms() // 1000,
            self.counter,
            confirmed=confirmed,
        )
        return codes.to_text(raw)

    def approve(self, acct: int, seq: int, balance: int, limit: int, **kw: Any) -> None:
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


def _expect(out: Outcome, code: str, offline: bool) -> None:
    if out.code != code or out.offline != offline:
        raise AssertionError(f"expected {code} (offline={offline}), got {out}")


def run_scenario(data: Path) -> World:
    """The sales of the table in the module docstring, on a fresh :class:`World` keeping its
    card keystore in ``data``."""
    w = World(data)
    tick = w.clock.advance
    # 1 online card sale
    w.link.up()
    w.approve(CARD_ACCT, 1, 48_800, 3000)
    _expect(w.tap(1200), "ok", False)
    tick(61_000)
    # 2 over the limit: the POS asks for the password; a wrong one is counted, online
    _expect(w.tap(2500), "needs_pin", False)
    _expect(w.tap(2500, "000000"), "wrong_pin", False)
    tick(5_000)
    # 3 the right one: authorized
    w.approve(CARD_ACCT, 3, 46_300, 3000, pin="ok")
    _expect(w.tap(2500, PIN), "ok", False)
    tick(60_000)
    # 4-6 the server is down
    w.server.down = True
    w.link.down("refused")
    tick(5_000)
    _expect(w.tap(400), "ok", True)
    tick(30_000)
    _expect(w.tap(2900, "999999"), "wrong_pin", True)
    tick(4_000)
    _expect(w.tap(2900, PIN), "ok", True)
    tick(60_000)
    # 7 a payment code, online
    w.server.down = False
    w.link.up()
    w.approve(PHONE_ACCT, 7, 28_800, 5000)
    _expect(w.qr.decide_forward(w.code(), 1200), "ok", False)
    tick(30_000)
    # 8, 9 offline: verified here; over the limit only with the phone's confirmation
    w.server.down = True
    w.link.down("refused")
    tick(4_000)
    _expect(w.qr.decide_forward(w.code(), 1000), "ok", True)
    tick(30_000)
    _expect(w.qr.decide_forward(w.code(), 4500), "needs_confirm", True)
    _expect(w.qr.decide_forward(w.code(confirmed=True), 4500), "ok", True)
    tick(30_000)
    # 10, 11 reverse scan: the phone paid online; the proof shown, then keyed
    pending = w.qr.start_reverse(1500)
    proof = codes.make_proof(w.issuer, ISSUER_KID, pending.request, PHONE_ACCT, 9001)
    _expect(w.qr.accept_proof_text(pending, codes.to_text(proof)), "ok", True)
    tick(30_000)
    pending = w.qr.start_reverse(600)
    digits = codes.proof_code(PROOF_KEY, pending.request)
    _expect(w.qr.accept_proof_code(pending, digits), "ok", True)
    return w


def journal_records(w: World) -> list[dict[str, Any]]:
    """Every record of the world's journal: fields, body, signature, hash, prev."""
    out = []
    for row in w.journal.db.all("SELECT seq, hash, body, sig FROM journal ORDER BY seq"):
        fields = json.loads(row["body"])
        out.append(
            {
                "seq": row["seq"],
                "fields": fields,
                "body": row["body"],
                "sig": row["sig"],
                "hash": row["hash"],
                "prev": fields["prev"],
            }
        )
    return out


def bench_chain() -> list[dict[str, Any]]:
    """Records of :class:`sim.bench.records.Chain` and ``offline_sale`` (benchmarks, tests)."""
    chain = bench_records.Chain(BENCH_TERMINAL, BENCH_SEED, [101, 102], start_ms=NOON_MS)
    sealed = chain.take(5)
    rec = bench_records.offline_sale(
        term=BENCH_TERMINAL,
        seq=6,
        prev=sealed[-1].hash,
        ts=NOON_MS + 60_000,
        acct=101,
        amt=300,
        cred="card:test",
        lim=5000,
    )
    body, sig = protocol.seal(chain.key, rec)
    out = [
        {
            "seq": s.rec.seq,
            "fields": json.loads(s.body),
            "body": s.body.decode(),
            "sig": base64.b64encode(s.sig).decode(),
            "hash": s.hash,
            "prev": s.rec.prev,
        }
        for s in sealed
    ]
    out.append(
        {
            "seq": 6,
            "fields": json.loads(body),
            "body": body.decode(),
            "sig": base64.b64encode(sig).decode(),
            "hash": protocol.record_hash(body),
            "prev": sealed[-1].hash,
        }
    )
    return out


def fixtures() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ykt-fixtures-") as tmp:
        w = run_scenario(Path(tmp))
    bench_key = bench_records.key_from_seed(BENCH_SEED)
    return {
        "about": "journal records signed by the POS code; written by "
        "tests/unit/make_wire_fixtures.py, checked by tests/unit/test_wire_fixtures.py",
        "pos": {
            "terminal_id": TERMINAL_ID,
            "key_seed_hex": TERMINAL_SEED.hex(),
            "public_key": w.key.public.to_b64(),
            "genesis": protocol.genesis_hash(TERMINAL_ID),
            "pushed_online": w.server.pushed,
            "records": journal_records(w),
        },
        "bench": {
            "terminal_id": BENCH_TERMINAL,
            "key_seed_hex": BENCH_SEED.to_bytes(32, "big").hex(),
            "public_key": bench_key.public.to_b64(),
            "genesis": protocol.genesis_hash(BENCH_TERMINAL),
            "records": bench_chain(),
        },
    }


def main() -> int:
    data = fixtures()
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(
        f"{FIXTURE}: {len(data['pos']['records'])} POS and {len(data['bench']['records'])} benchmark records"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
