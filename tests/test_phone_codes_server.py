"""Phone codes on the server (real `ykt server`, terminals built by hand): online authorization
of payment codes, the certificates in the feed, reverse-scan payments, and what ingest does
with phone-code records."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest

from sim import wallet, wallet_codes
from sim.errors import SimError
from sync import codes
from sync.crypto import SigningKey
from tests.handterm import HandTerminal
from tests.helpers import ServerProc

_n = iter(range(500, 10_000))


def holder(server: ServerProc, tmp: Path, topup: int = 5000) -> tuple[dict[str, Any], Path]:
    n = next(_n)
    card = server.add_account(f"P{n}", n, topup_fen=topup)
    path = tmp / f"w{n}.json"
    w = wallet.login(server.url, f"P{n}", card["password"])
    w.save(path)
    return {**card, "id": w.account["id"]}, path


def code(path: Path, kind: codes.Kind = codes.Kind.PAY, **kw: Any) -> str:
    w = wallet.Wallet.load(path)
    return str(wallet_codes.make_code(w, path, kind, **kw)["text"])


def request(term: HandTerminal, amount: int, order: int, **kw: Any) -> str:
    tag = codes.campus_tag("ynart")
    raw = codes.make_request(
        kw.get("key", term.key),
        kw.get("campus", tag),
        codes.terminal_number(term.terminal_id),
        order,
        amount,
        kw.get("time_s", int(time.time())),
        b"\x07" * 8,
    )
    return codes.to_text(raw, numeric=True)


def test_online_authorization_of_payment_codes(module_server: ServerProc, tmp_path: Path) -> None:
    acct, path = holder(module_server, tmp_path)
    term = HandTerminal.enroll(module_server, "qr-auth")
    text = code(path)
    ok = term.authorize_body({"seq": 1, "amount_fen": 900, "method": "qr-forward", "qr": text})
    assert ok["approved"] and ok["cred"].startswith("qr:") and ok["balance_fen"] == 4100
    again = term.authorize_body({"seq": 2, "amount_fen": 900, "method": "qr-forward", "qr": text})
    assert again["code"] == "replayed"
    over = term.authorize_body(
        {"seq": 2, "amount_fen": 4500, "method": "qr-forward", "qr": code(path)}
    )
    assert over["code"] == "needs_confirm"  # R6: 900 held + 4500 > ¥50
    fine = code(path, confirm_password=acct["password"])
    assert term.authorize_body({"seq": 2, "amount_fen": 4000, "method": "qr-forward", "qr": fine})[
        "approved"
    ]
    auth = code(path, codes.Kind.AUTH)
    wrong = term.authorize_body({"seq": 3, "amount_fen": 100, "method": "qr-forward", "qr": auth})
    assert wrong["code"] == "wrong_kind"
    with pytest.raises(SimError, match="bad_credentials"):
        code(path, confirm_password="000000")


def test_the_feed_carries_certificates_and_their_revocation(
    module_server: ServerProc, tmp_path: Path
) -> None:
    acct, path = holder(module_server, tmp_path)
    term = HandTerminal.enroll(module_server, "qr-feed")
    page = term.feed(0)
    serial = wallet.Wallet.load(path).extra["codes"]["serial"]
    mine = [c for c in page["certs"] if c["serial"] == serial]
    assert mine and not mine[0]["revoked"] and mine[0]["account_id"] == acct["id"]
    cert = codes.parse_cert(base64.b64decode(mine[0]["raw"]))
    keys = {k["kid"]: k["public_key"] for k in page["codes"]["keys"]}
    assert codes.campus_tag("ynart") == page["codes"]["campus_tag"] == cert.campus
    assert len(base64.b64decode(page["codes"]["proof_key"])) == 32 and keys
    wallet.Wallet.load(path).call("POST", "/v1/app/logout")
    later = term.feed(page["version"])
    assert [c["revoked"] for c in later["certs"] if c["serial"] == serial] == [True]


def test_reverse_scan_payment_rules(module_server: ServerProc, tmp_path: Path) -> None:
    acct, path = holder(module_server, tmp_path, topup=6000)
    term = HandTerminal.enroll(module_server, "qr-rev")
    w = wallet.Wallet.load(path)

    def pay(text: str, **kw: Any) -> dict[str, Any]:
        return wallet_codes.scan(wallet.Wallet.load(path), text, path=path, **kw)

    with pytest.raises(SimError, match="forged"):
        pay(request(term, 500, 1, key=SigningKey.generate()))
    with pytest.raises(SimError, match="other_campus"):
        pay(request(term, 500, 1, campus=codes.campus_tag("elsewhere")))
    with pytest.raises(SimError, match="expired"):
        pay(request(term, 500, 1, time_s=int(time.time()) - 3600))
    text = request(term, 500, 1)  # one request: made twice, the clock's second may move
    first = pay(text)
    assert first["balance_fen"] == 5500 and not first["already_paid"]
    req = codes.parse_request(codes.unpack_text(text))
    proof = codes.parse_proof(codes.unpack_text(first["proof_text"]))
    assert proof.account_id == acct["id"] and proof.amount_fen == 500
    assert first["proof_code"] == codes.proof_code(
        base64.b64decode(term.feed(0)["codes"]["proof_key"]), req
    )
    # R6 over the daily limit: the query password, or a recent confirmation
    with pytest.raises(SimError, match="needs_confirm"):
        pay(request(term, 4800, 2))
    code(path, confirm_password=acct["password"])  # the phone confirmed a moment ago
    assert pay(request(term, 4800, 2))["confirmed"]
    with pytest.raises(SimError, match="needs_confirm"):  # a confirmation pays once
        pay(request(term, 300, 3))  # 4800 counted from zero (R6) + 300 > ¥50
    assert pay(request(term, 300, 3), confirm_password=acct["password"])["balance_fen"] == 400
    # another holder cannot pay a request that is paid; a lost account cannot pay at all
    other, other_path = holder(module_server, tmp_path)
    with pytest.raises(SimError, match="already_paid"):
        wallet_codes.scan(wallet.Wallet.load(other_path), request(term, 500, 1))
    module_server.admin().call("POST", f"/v1/admin/accounts/{other['number']}/status",
                               {"action": "report-loss"})  # fmt: skip
    with pytest.raises(SimError, match="lost"):
        wallet_codes.scan(wallet.Wallet.load(other_path), request(term, 100, 4))
    shown = module_server.account(acct["number"])
    assert [b["amount_fen"] for b in shown["bills"]] == [6000, -500, -4800, -300]
    assert w.account["id"] == acct["id"]


def test_ingest_of_phone_code_records(module_server: ServerProc, tmp_path: Path) -> None:
    acct, path = holder(module_server, tmp_path)
    term = HandTerminal.enroll(module_server, "qr-ingest")
    st = wallet.Wallet.load(path).extra["codes"]
    forged = codes.to_text(
        codes.make_code(
            SigningKey.generate(),
            codes.Kind.PAY,
            st["campus_tag"],
            st["serial"],
            int(time.time()),
            77,
        )
    )
    term.record(
        acct["id"], 300, method="qr-forward", cred=f"qr:{st['serial']}:77", x={"code": forged}
    )
    term.record(acct["id"], 400, method="qr-reverse", cred="qr-reverse:99", x={"order": 99})
    out = term.push(term.wire([1, 2]))
    assert out["ack"] == 2
    assert sorted(a["kind"] for a in out["alarms"]) == ["bad_code", "reverse_unpaid"]
    shown = module_server.account(acct["number"])
    assert shown["balance_fen"] == 5000  # the forged sale reversed, the unpaid one never charged
    assert shown["status"] == "normal" and shown["flags"] == []  # not the holder's doing
    assert [b["kind"] for b in shown["bills"]] == ["topup", "sale", "reversal"]
    assert module_server.admin().call("GET", "/v1/admin/ledger/check")["ok"]
