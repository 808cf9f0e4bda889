"""Journal records as the POS signs them, kept as fixtures (``tests/unit/data/wire_records.json``).

The file in the repository was written by the code *before* the journal record became typed
(sync.records) and before the server client had a transport seam (that first run handed the
deciders a duck-typed client instead of :class:`sync.client.MockTransport`);
``tests/unit/test_wire_fixtures.py`` checks that today's code still makes the very same bytes
and signatures from the same sales, and parses every stored body.  Do not write the file again
to make that test pass: ``.venv/bin/python -m tests.unit.make_wire_fixtures`` rewrites it (and
``git diff`` then shows what changed on the wire).

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
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge.pos.decide import Outcome
from sim.bench import records as bench_records
from sync import codes, protocol
from tests.unit.fakes import CARD_ACCT, ISSUER_KID, NOON_MS, PHONE_ACCT, PIN, PROOF_KEY, World

HERE = Path(__file__).parent
FIXTURE = HERE / "data" / "wire_records.json"

BENCH_TERMINAL = "T00043"
BENCH_SEED = 4242


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
    w.offline()
    tick(5_000)
    _expect(w.tap(400), "ok", True)
    tick(30_000)
    _expect(w.tap(2900, "999999"), "wrong_pin", True)
    tick(4_000)
    _expect(w.tap(2900, PIN), "ok", True)
    tick(60_000)
    # 7 a payment code, online
    w.online()
    w.approve(PHONE_ACCT, 7, 28_800, 5000)
    _expect(w.qr.decide_forward(w.code(), 1200), "ok", False)
    tick(30_000)
    # 8, 9 offline: verified here; over the limit only with the phone's confirmation
    w.offline()
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
            "terminal_id": w.journal.terminal_id,
            "key_seed_hex": w.key.to_seed().hex(),
            "public_key": w.key.public.to_b64(),
            "genesis": protocol.genesis_hash(w.journal.terminal_id),
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
