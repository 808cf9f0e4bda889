"""Terminal request authentication on the real server (docs/architecture.md: terminal requests are signed;
unsigned, stale, replayed or foreign-signed requests are refused), enrollment tokens, roles."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from pytest import raises

from sync import protocol
from sync.client import ServerClient
from sync.clock import ManualClock, SystemClock
from sync.crypto import SigningKey, b64e
from sync.db import Database
from sync.errors import AuthError, ServerRefused
from sync.server import accounts, authorize, ingest, terminals
from sync.server.errors import Forbidden
from tests.handterm import HandTerminal, admin_raw, error_of, fresh_account
from tests.helpers import ServerProc, id_card
from tests.inproc import InProcTerminal, make_context
from tests.turns import Turns

SKEW_MS = 120_000  # the server's default freshness window


def refused(resp: requests.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert error_of(resp)["code"] == code


def signed_get(term: HandTerminal, target: str, time_ms: int | None = None) -> dict[str, str]:
    return protocol.sign_request(
        term.key, term.terminal_id, "GET", target, b"", time_ms or SystemClock().now_ms()
    )


def test_signed_request_is_accepted(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "auth-ok")
    out = term.feed(0)
    assert out["version"] >= 0 and out["ack"] == 0


def test_unsigned_request_is_refused(module_server: ServerProc) -> None:
    for path in ("/v1/feed", "/v1/journal", "/v1/pos/authorize"):
        method = "GET" if path == "/v1/feed" else "POST"
        resp = requests.request(method, module_server.url + path, json={}, timeout=5)
        refused(resp, 401, "unsigned")


def test_unknown_terminal_is_refused(module_server: ServerProc) -> None:
    key = SigningKey.generate()
    client = ServerClient(module_server.url, terminal_id="T99999", key=key)
    with raises(AuthError) as err:
        client.feed(0)
    assert (err.value.status, err.value.code) == (401, "unknown_terminal")


def test_missing_or_garbled_signature_headers(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "auth-headers")
    good = signed_get(term, "/v1/feed")
    for drop in (protocol.H_TIME, protocol.H_NONCE, protocol.H_SIGNATURE):
        headers = {k: v for k, v in good.items() if k != drop}
        refused(
            requests.get(term.url + "/v1/feed", headers=headers, timeout=5), 401, "bad_signature"
        )
    for name, value in (
        (protocol.H_SIGNATURE, "***"),
        (protocol.H_SIGNATURE, "AAAA"),
        (protocol.H_TIME, "yesterday"),
        (protocol.H_NONCE, "x"),
    ):
        headers = {**signed_get(term, "/v1/feed"), name: value}
        refused(
            requests.get(term.url + "/v1/feed", headers=headers, timeout=5), 401, "bad_signature"
        )


def test_stale_request_is_refused(module_server: ServerProc) -> None:
    """A clock skewed beyond the window in either direction; inside the window is fine."""
    term = HandTerminal.enroll(module_server, "auth-stale")
    now = SystemClock().now_ms()
    for skew in (-SKEW_MS - 5_000, SKEW_MS + 5_000, -10 * 24 * 3600 * 1000):
        term.client.clock = ManualClock(now + skew)
        with raises(AuthError) as err:
            term.feed(0)
        assert (err.value.status, err.value.code) == (401, "stale_request")
    term.client.clock = ManualClock(now - SKEW_MS // 2)
    assert term.feed(0)["ack"] == 0


def test_replayed_nonce_is_refused(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "auth-replay")
    acct = fresh_account(module_server, topup_fen=10_000)
    body = protocol.canonical({"records": [term.record(acct["id"], 100)]})
    headers = protocol.sign_request(
        term.key, term.terminal_id, "POST", "/v1/journal", body, SystemClock().now_ms()
    )
    headers["Content-Type"] = "application/json"
    first = requests.post(term.url + "/v1/journal", data=body, headers=headers, timeout=5)
    assert first.status_code == 200 and first.json()["applied"] == 1
    again = requests.post(term.url + "/v1/journal", data=body, headers=headers, timeout=5)
    refused(again, 401, "replayed_request")
    # the same nonce on another, correctly signed request is a replay too
    other = protocol.canonical({"records": []})
    msg = protocol.request_message(
        "POST", "/v1/journal", other, int(headers[protocol.H_TIME]), headers[protocol.H_NONCE]
    )
    h2 = {**headers, protocol.H_SIGNATURE: b64e(term.key.sign(msg))}
    resp = requests.post(term.url + "/v1/journal", data=other, headers=h2, timeout=5)
    refused(resp, 401, "replayed_request")
    assert module_server.account(acct["number"])["balance_fen"] == 10_000 - 100


def signed_authorize(
    term: HandTerminal, body: dict[str, object]
) -> Callable[[], requests.Response]:
    """One signed authorize request, to send as often as a replayer would."""
    raw = protocol.canonical(body)
    headers = protocol.sign_request(
        term.key, term.terminal_id, "POST", "/v1/pos/authorize", raw, SystemClock().now_ms()
    )
    headers["Content-Type"] = "application/json"
    return lambda: requests.post(
        term.url + "/v1/pos/authorize", data=raw, headers=headers, timeout=10
    )


def test_a_replay_is_refused_whatever_the_first_answer_was(module_server: ServerProc) -> None:
    """The nonce is claimed with the request's own work where the database allows it
    (:meth:`sync.server.terminals.NonceCache.riding`): an approval, a decline read before
    any transaction, a refusal whose transaction was rolled back; each replay is refused,
    and only the approval holds money."""
    term = HandTerminal.enroll(module_server, "auth-replay-any")
    acct = fresh_account(module_server, topup_fen=10_000)
    approve = signed_authorize(term, {"seq": 1, "card_no": acct["card_no"], "amount_fen": 700})
    first = approve()
    assert first.status_code == 200 and first.json()["approved"], first.text
    refused(approve(), 401, "replayed_request")
    unknown = signed_authorize(term, {"seq": 2, "card_no": "NO-SUCH-CARD", "amount_fen": 1})
    first = unknown()
    assert first.status_code == 200 and not first.json()["approved"], first.text
    refused(unknown(), 401, "replayed_request")
    term.push([term.record(acct["id"], 700)])  # seq 1 journaled: asking for it again is refused
    used = signed_authorize(term, {"seq": 1, "card_no": acct["card_no"], "amount_fen": 700})
    refused(used(), 409, "seq_used")
    refused(used(), 401, "replayed_request")
    assert module_server.account(acct["number"])["balance_fen"] == 10_000 - 700


def test_request_signed_by_another_key_is_refused(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "auth-foreign")
    term.client.key = SigningKey.generate()
    with raises(AuthError) as err:
        term.feed(0)
    assert (err.value.status, err.value.code) == (401, "bad_signature")


def test_request_altered_in_transit_is_refused(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "auth-altered")
    headers = signed_get(term, "/v1/feed?since=0&wait=0")
    resp = requests.get(term.url + "/v1/feed?since=5&wait=0", headers=headers, timeout=5)
    refused(resp, 401, "bad_signature")


def test_revoked_terminal_is_refused(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "auth-revoked")
    assert term.feed(0)["ack"] == 0
    module_server.admin().call("POST", f"/v1/admin/terminals/{term.terminal_id}/revoke")
    with raises(AuthError) as err:
        term.feed(0)
    assert (err.value.status, err.value.code) == (403, "terminal_revoked")
    rows = module_server.admin().call("GET", "/v1/admin/terminals")["terminals"]
    assert next(t for t in rows if t["id"] == term.terminal_id)["status"] == "revoked"
    refused(
        admin_raw(module_server, "POST", "/v1/admin/terminals/T99999/revoke"), 404, "no_terminal"
    )


def test_enrollment_token_is_one_time(module_server: ServerProc) -> None:
    token = module_server.enroll_token("auth-once")
    HandTerminal(module_server.url, token)
    with raises(AuthError) as err:
        HandTerminal(module_server.url, token)
    assert (err.value.status, err.value.code) == (401, "token_used")


def test_unknown_enrollment_token_and_bad_key(module_server: ServerProc) -> None:
    with raises(AuthError) as err:
        HandTerminal(module_server.url, "no-such-token-at-all")
    assert (err.value.status, err.value.code) == (401, "bad_token")
    token = module_server.enroll_token("auth-badkey")
    client = ServerClient(module_server.url)
    with raises(ServerRefused) as api:
        client.enroll(token, "A" * 40 + "==")  # base64, but 31 bytes
    assert (api.value.status, api.value.code) == (422, "bad_key")
    # the token was not spent by the failed attempt
    HandTerminal(module_server.url, token)


def test_wrong_role_cannot_authorize(module_server: ServerProc) -> None:
    """A kiosk's key is good for its own requests, not for selling at a POS."""
    kiosk = HandTerminal.enroll(module_server, "auth-kiosk", role="kiosk")
    assert kiosk.role == "kiosk"
    acct = fresh_account(module_server, topup_fen=10_000)
    with raises(AuthError) as err:
        kiosk.authorize(1, acct["card_no"], 100)
    assert (err.value.status, err.value.code) == (403, "wrong_role")
    assert module_server.account(acct["number"])["balance_fen"] == 10_000


def test_admin_api_needs_the_admin_token(module_server: ServerProc) -> None:
    url = module_server.url + "/v1/admin/ledger/check"
    refused(requests.get(url, timeout=5), 401, "bad_admin_token")
    refused(
        requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5),
        401,
        "bad_admin_token",
    )
    # a terminal's signature is no admin credential
    term = HandTerminal.enroll(module_server, "auth-admin")
    resp = requests.get(url, headers=signed_get(term, "/v1/admin/ledger/check"), timeout=5)
    refused(resp, 401, "bad_admin_token")


def test_replay_protection_survives_a_restart_and_lagging_clocks_are_fine(
    server: ServerProc,
) -> None:
    term = HandTerminal.enroll(server, "auth-restart")
    headers = signed_get(term, "/v1/feed")
    assert requests.get(term.url + "/v1/feed", headers=headers, timeout=5).status_code == 200
    server.stop()
    server.start()
    refused(
        requests.get(term.url + "/v1/feed", headers=headers, timeout=5), 401, "replayed_request"
    )
    # a terminal whose clock runs 30 s behind is inside the window, even right after a start
    term.client.clock = ManualClock(SystemClock().now_ms() - 30_000)
    assert term.feed(0)["ack"] == 0


def test_enrollment_token_never_starts_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ykt pos --enroll TOKEN` must read it as a value (argparse takes "-…" for an option);
    token_urlsafe starts one token in 64 with "-"."""
    ctx = make_context(tmp_path)
    drawn = iter(["-leading-dash-token", "-again", "plain-token_123"])
    monkeypatch.setattr(terminals.secrets, "token_urlsafe", lambda n: next(drawn))
    assert terminals.create_enroll_token(ctx, "pos", "t")["token"] == "plain-token_123"


def test_a_token_for_another_role_is_refused_and_not_used_up(module_server: ServerProc) -> None:
    """An agent says what it is; a kiosk token offered by a POS is refused and stays usable."""
    from sync.client import ServerClient
    from sync.crypto import SigningKey
    from sync.errors import ServerRefused

    token = module_server.enroll_token("role-check", role="kiosk")
    client = ServerClient(module_server.url)
    key = SigningKey.generate().public.to_b64()
    with pytest.raises(ServerRefused) as err:
        client.enroll(token, key, "pos")
    assert (err.value.status, err.value.code) == (409, "wrong_role")
    assert client.enroll(token, key, "kiosk")["role"] == "kiosk"
    client.close()


def test_a_terminal_revoked_after_its_last_request_gets_nothing_more(
    module_server: ServerProc,
) -> None:
    """The hot routes may check a signature against the key of a row an earlier request found
    active (:meth:`sync.server.terminals.TerminalAuth.signed`); once the terminal is revoked,
    a sale, a decline and a push are all refused, and no hold is left behind on the account."""
    term = HandTerminal.enroll(module_server, "auth-revoked-later")
    other = HandTerminal.enroll(module_server, "auth-revoked-other")
    acct = fresh_account(module_server, topup_fen=4_000)  # within R6's daily limit of ¥50
    first = term.authorize(1, acct["card_no"], 700, uid=acct["uid"])
    assert first["approved"], first
    assert term.push([term.record(acct["id"], 700)])["ack"] == 1
    module_server.admin().call("POST", f"/v1/admin/terminals/{term.terminal_id}/revoke")
    for ask in (
        lambda: term.authorize(2, acct["card_no"], 3_000, uid=acct["uid"]),  # would approve
        lambda: term.authorize(3, "NO-SUCH-CARD", 100),  # a decline read before any write
        lambda: term.push([term.record(acct["id"], 100)]),
    ):
        with raises(AuthError) as err:
            ask()
        assert (err.value.status, err.value.code) == (403, "terminal_revoked")
    # no hold of the revoked terminal stands in the way of the whole balance
    whole = other.authorize(1, acct["card_no"], 3_300, uid=acct["uid"])
    assert whole["approved"] and whole["balance_fen"] == 0, whole


def _signed(t: InProcTerminal, body: bytes, now_ms: int) -> dict[str, str]:
    return protocol.sign_request(t.key, t.id, "POST", "/v1/journal", body, now_ms)


def test_a_row_found_active_is_read_again_only_where_the_claim_cannot_ride(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the terminal's row is read for its first signed request only: the next
    ones are checked against its key and the claim rides the work's transaction guarded by the
    row (:meth:`sync.server.terminals.Known.guarded_insert`).  On SQLite it is read for every
    request (the claim does not ride there)."""
    ctx = make_context(tmp_path)
    auth = terminals.TerminalAuth(ctx)
    t = InProcTerminal(ctx, "rows")
    reads: list[object] = []
    one = ctx.db.one

    def counted(sql: str, params: object = ()) -> object:
        if sql == terminals.TERMINAL_READ:
            reads.append(params)
        return one(sql, params)  # type: ignore[arg-type]

    monkeypatch.setattr(ctx.db, "one", counted)
    for i in range(3):
        headers = _signed(t, b"{}", ctx.now_ms() + i)
        with auth.signed("POST", "/v1/journal", b"{}", headers, "POST /v1/journal") as term:
            assert term["id"] == t.id
            with ctx.db.tx() as tx:
                tx.execute("UPDATE terminals SET last_seen_ms = ? WHERE id = ?", (i, t.id))
    assert len(reads) == (1 if ctx.db.dialect == "postgresql" else 3)
    # a request whose work wrote nothing has its row read before its claim
    headers = _signed(t, b"{}", ctx.now_ms() + 3)
    with auth.signed("POST", "/v1/journal", b"{}", headers, "POST /v1/journal"):
        pass
    assert len(reads) == (2 if ctx.db.dialect == "postgresql" else 4)
    terminals.revoke(ctx, t.id)
    for write in (True, False):
        headers = _signed(t, b"{}", ctx.now_ms() + 4 + write)
        with (
            raises(Forbidden) as err,
            auth.signed("POST", "/v1/journal", b"{}", headers, "POST /v1/journal"),
        ):
            if write:
                with ctx.db.tx() as tx:
                    tx.execute("UPDATE terminals SET last_seen_ms = 99 WHERE id = ?", (t.id,))
        assert err.value.code == "terminal_revoked"
    assert ctx.db.scalar("SELECT last_seen_ms FROM terminals WHERE id = ?", (t.id,)) == 2


@pytest.mark.postgres
def test_a_revocation_between_the_check_and_the_work_fails_the_work(tmp_path: Path) -> None:
    """A terminal revoked after its request was checked and before the request's transaction:
    that transaction fails (its claim is guarded by the row, read under the writer lock that
    the revocation takes too), so nothing it did stays: a hold there would never be released
    (the revocation released the terminal's holds before it)."""
    ctx = make_context(tmp_path)
    auth = terminals.TerminalAuth(ctx)
    t = InProcTerminal(ctx, "race")
    headers = _signed(t, b"{}", ctx.now_ms())
    with auth.signed("POST", "/v1/journal", b"{}", headers, "POST /v1/journal"):
        pass  # the row is known from now on
    seen = ctx.db.scalar("SELECT last_seen_ms FROM terminals WHERE id = ?", (t.id,))
    headers = _signed(t, b"{}", ctx.now_ms() + 1)
    with (
        raises(Forbidden) as err,
        auth.signed("POST", "/v1/journal", b"{}", headers, "POST /v1/journal"),
    ):
        revoking = threading.Thread(target=terminals.revoke, args=(ctx, t.id))
        revoking.start()
        revoking.join()
        with ctx.db.tx() as tx:
            tx.execute("UPDATE terminals SET last_seen_ms = 99 WHERE id = ?", (t.id,))
    assert err.value.code == "terminal_revoked"
    assert ctx.db.scalar("SELECT last_seen_ms FROM terminals WHERE id = ?", (t.id,)) == seen != 99
    assert ctx.db.scalar("SELECT COUNT(*) FROM nonces WHERE terminal_id = ?", (t.id,)) == 1


@pytest.mark.postgres
def test_a_known_terminals_sale_and_its_push_take_two_round_trips_each(
    tmp_path: Path,
) -> None:
    """PostgreSQL, counted by a relay (tests/turns.py), as the hot routes run them: a sale of a
    terminal whose row is known (every read of the sale with the transaction's first
    statements and the nonce guarded by the row; the commit with the hold) and its push (the
    head, held records, policy, state, the records' accounts and the merchant's ledger
    account with the first statements; the transfers, the records and the rest with the
    commit)."""
    made = make_context(tmp_path)
    url = made.config.db_url
    assert url is not None
    relay, through = Turns.for_url(url)
    ctx = dataclasses.replace(made, db=Database(through))
    try:
        accounts.add_account(ctx, number="RT001", name="往返", type="student", id_card=id_card(71))
        accounts.topup(ctx, "RT001", 5000, "cash", None, "desk")
        card = accounts.issue_card(ctx, "RT001", "04A1B2C3D4E5A1")
        auth = terminals.TerminalAuth(ctx)
        t = InProcTerminal(ctx, "trips")
        counts: list[int] = []
        for seq in (1, 2, 3):
            req = {"seq": seq, "card_no": card["card_no"], "amount_fen": 100, "method": "card"}
            body = protocol.canonical(req)
            relay.reset()
            headers = protocol.sign_request(
                t.key, t.id, "POST", "/v1/pos/authorize", body, ctx.now_ms() + seq
            )
            endpoint = "POST /v1/pos/authorize"
            with auth.signed("POST", "/v1/pos/authorize", body, headers, endpoint) as term:
                answer = authorize.authorize(ctx, term, req)
            assert answer.approved, answer
            counts.append(relay.count)
            wire = t.record(int(card["account_id"]), 100)
            body = protocol.canonical({"records": [wire]})
            relay.reset()
            headers = protocol.sign_request(
                t.key, t.id, "POST", "/v1/journal", body, ctx.now_ms() + seq
            )
            with auth.signed("POST", "/v1/journal", body, headers, "POST /v1/journal") as term:
                assert ingest.push(ctx, term, [wire], seq - 1).ack == seq
            counts.append(relay.count)
        # the first sale reads the terminal's row and claims its nonce on its own (a prune of
        # old nonces is due at a process's first claim); then 2 each
        assert counts == [4, 2, 2, 2, 2, 2], counts
    finally:
        ctx.db.close()
        made.db.close()
        relay.close()
