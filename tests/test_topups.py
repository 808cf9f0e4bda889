"""Issue 10 item 1: money enters only from a payer.  A top-up by the app, WeChat, Alipay or the
bank app is an **order**; it is credited only by the payment provider's **signed notification**
(sync/server/topups.py, sync/paygate.py), once per provider transaction, and everything else —
forged, stale, late, unknown, mismatched, duplicate with other content, for a channel with no
provider — is refused, logged and raised as an alarm.  The provider is the stand-in of
sim/paygate.py, served in this process (tests/paygate_helpers.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from sync.clock import ManualClock, SystemClock, campus_date
from sync.crypto import SigningKey
from sync.server import ledger
from tests.handterm import error_of
from tests.live import Live, Pos, open_live
from tests.paygate_helpers import (
    LiveGate,
    deliver,
    notification,
    open_gate,
    order,
    pay,
    register,
    wait_order,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[dict[str, Any]]:
    live = open_live(Path(tmp_path_factory.mktemp("topups")))
    gate = open_gate(Path(tmp_path_factory.mktemp("gate")), SystemClock(), retry_s=0.05)
    register(live, gate, "app", "wechat", "alipay")
    yield {"live": live, "gate": gate}
    gate.stop()
    live.stop()


_n = iter(range(400, 999))


def holder(live: Live, topup_fen: int = 0) -> dict[str, Any]:
    n = next(_n)
    card = live.add_account(f"TP{n}", n, topup_fen=topup_fen)
    return {**card, "token": live.login(card["number"], card["password"])}


def balances(live: Live, number: str) -> tuple[int, int]:
    a = live.admin("GET", f"/v1/admin/accounts/{number}")
    return int(a["balance_fen"]), int(a["transition_fen"])


def alarms(live: Live, kind: str) -> list[str]:
    rows = live.admin("GET", "/v1/admin/alarms")["alarms"]
    return [str(a["detail"]) for a in rows if a["kind"] == kind]


def paid_order(w: dict[str, Any], h: dict[str, Any], channel: str, amount: int) -> dict[str, Any]:
    live: Live = w["live"]
    o = order(live, h["token"], channel, amount, h["password"]).json()
    assert o["status"] == "open" and o["pay"], o
    pay(o)
    return o


# -- the regression: a top-up is not money ------------------------------------------------------
def test_an_app_topup_credits_nothing_by_itself(tmp_path: Path) -> None:
    """The old server credited ``POST /v1/app/topups`` on the query password alone."""
    live = open_live(tmp_path / "bare")
    try:
        h = holder(live)
        for channel in ("app", "wechat", "alipay"):
            r = order(live, h["token"], channel, 100_000, h["password"])
            assert r.status_code == 409, r.text  # no provider registered: nothing to pay at
            assert error_of(r)["code"] == "no_paygate"
        assert balances(live, h["number"]) == (0, 0)
        assert live.admin("GET", "/v1/admin/ledger/check")["ok"]
    finally:
        live.stop()


def test_an_order_moves_no_money_until_its_provider_says_it_was_paid(
    world: dict[str, Any],
) -> None:
    live: Live = world["live"]
    h = holder(live)
    o = order(live, h["token"], "wechat", 2000, h["password"]).json()
    assert (o["status"], o["amount_fen"], o["currency"], o["channel"]) == (
        "open",
        2000,
        "CNY",
        "wechat",
    )
    assert balances(live, h["number"]) == (0, 0)
    assert wait_order(live, h["token"], o["order_id"], wait=0.2)["status"] == "open"
    pay(o)
    done = wait_order(live, h["token"], o["order_id"])
    assert (done["status"], done["balance_fen"], done["txn_id"] is not None) == (
        "credited",
        2000,
        True,
    )
    bills = live.admin("GET", f"/v1/admin/accounts/{h['number']}")["bills"]
    assert [(b["kind"], b["amount_fen"]) for b in bills] == [("topup", 2000)]
    assert live.admin("GET", "/v1/admin/ledger/check")["ok"]


def test_r7_alipay_lands_in_the_transition_balance_and_channels_switch(
    world: dict[str, Any],
) -> None:
    live: Live = world["live"]
    h = holder(live)
    o = paid_order(world, h, "alipay", 3000)
    assert wait_order(live, h["token"], o["order_id"])["status"] == "credited"
    assert balances(live, h["number"]) == (0, 3000)
    Pos(live.terminal("pos")).sell(h, 500)  # R7: moves in at the next card transaction
    assert balances(live, h["number"]) == (2500, 0)
    r = order(live, h["token"], "bank", 100, h["password"])  # off by default
    assert (r.status_code, error_of(r)["code"]) == (409, "channel_off")
    assert order(live, h["token"], "cash", 100, h["password"]).status_code == 422
    assert order(live, h["token"], "app", 100, "000000").status_code == 401
    live.admin("PUT", "/v1/admin/policy", {"values": {"channels": {"app": False}}})
    try:
        r = order(live, h["token"], "app", 100, h["password"])
        assert error_of(r)["code"] == "channel_off"
    finally:
        live.admin("PUT", "/v1/admin/policy", {"values": {"channels": {"app": True}}})


def test_an_order_is_idempotent_by_request_id_and_private_to_its_holder(
    world: dict[str, Any],
) -> None:
    live: Live = world["live"]
    h, other = holder(live), holder(live)
    first = order(live, h["token"], "wechat", 700, h["password"], request_id="tp-order-01").json()
    again = order(live, h["token"], "wechat", 700, h["password"], request_id="tp-order-01").json()
    assert again["order_id"] == first["order_id"]
    r = order(live, h["token"], "wechat", 701, h["password"], request_id="tp-order-01")
    assert (r.status_code, error_of(r)["code"]) == (409, "request_id_reused")
    r = live.call("GET", f"/v1/app/topups/{first['order_id']}", token=other["token"])
    assert (r.status_code, error_of(r)["code"]) == (404, "no_order")


# -- notifications ---------------------------------------------------------------------------------
def test_redeliveries_and_racing_deliveries_credit_once(world: dict[str, Any]) -> None:
    live: Live = world["live"]
    gate: LiveGate = world["gate"]
    h = holder(live)
    o = paid_order(world, h, "wechat", 1234)
    assert wait_order(live, h["token"], o["order_id"])["status"] == "credited"
    with ThreadPoolExecutor(8) as pool:  # the provider delivers again, eight times at once
        got = list(pool.map(lambda _: gate.provider.deliver(o["order_id"]), range(8)))
    assert all(d.acknowledged and d.answer["credited"] is False for d in got)
    assert balances(live, h["number"]) == (1234, 0)
    # two deliveries racing before either is credited: one credits, the other is a duplicate
    h2 = holder(live)
    o2 = order(live, h2["token"], "wechat", 555, h2["password"]).json()
    body = notification(o2, "RACE-TXN-0001", live.ctx.now_ms())
    start = threading.Barrier(6)

    def once(_: int) -> requests.Response:
        start.wait()
        return deliver(live, "wechat", body, gate.provider.key)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(once, range(6)))
    assert [r.status_code for r in answers] == [200] * 6
    assert sorted(r.json()["credited"] for r in answers) == [False] * 5 + [True]
    assert balances(live, h2["number"]) == (555, 0)
    assert live.admin("GET", "/v1/admin/ledger/check")["ok"]


REFUSED: list[tuple[str, Any, int, str, str]] = [
    # (why, how the notification differs, status, error code, alarm)
    (
        "amount altered, re-signed",
        {"amount_fen": 100_000},
        409,
        "payment_mismatch",
        "payment_mismatch",
    ),
    ("currency altered", {"currency": "USD"}, 409, "payment_mismatch", "payment_mismatch"),
    (
        "another channel's notification",
        {"channel": "app"},
        409,
        "payment_mismatch",
        "payment_mismatch",
    ),
    ("another account", {"attach": "SOMEONE"}, 409, "payment_mismatch", "payment_mismatch"),
    (
        "unknown order",
        {"order_id": "Tffffffffffffffffffff"},
        404,
        "no_order",
        "payment_unknown_order",
    ),
]


@pytest.mark.parametrize(
    ("why", "changes", "status", "code", "alarm"), REFUSED, ids=[r[0] for r in REFUSED]
)
def test_a_notification_that_does_not_match_its_order_is_refused(
    world: dict[str, Any], why: str, changes: dict[str, Any], status: int, code: str, alarm: str
) -> None:
    live: Live = world["live"]
    gate: LiveGate = world["gate"]
    h = holder(live)
    o = order(live, h["token"], "wechat", 800, h["password"]).json()
    txn = f"BAD{abs(hash(why)) % 10**12:012d}"
    r = deliver(
        live, "wechat", notification(o, txn, live.ctx.now_ms(), **changes), gate.provider.key
    )
    assert r.status_code == status, (why, r.text)
    assert error_of(r)["code"] == code
    assert any(txn in d for d in alarms(live, alarm)), (why, alarms(live, alarm))
    shown = wait_order(live, h["token"], o["order_id"], wait=0)
    assert shown["status"] == "open" and shown["balance_fen"] == 0
    if code == "payment_mismatch":
        assert shown["problem"], shown
    assert live.admin("GET", "/v1/admin/ledger/check")["ok"]


def test_forged_tampered_and_stale_notifications_are_refused(world: dict[str, Any]) -> None:
    live: Live = world["live"]
    gate: LiveGate = world["gate"]
    h = holder(live)
    o = paid_order(world, h, "wechat", 900)
    assert wait_order(live, h["token"], o["order_id"])["status"] == "credited"
    # the provider's notification with the amount altered after signing (a man in the middle)
    d = gate.provider.deliver(o["order_id"], tamper="amount")
    assert (d.status, d.acknowledged) == (401, False)
    assert d.answer["error"]["code"] == "bad_signature"
    # signed with a key that is not the registered provider's
    o2 = order(live, h["token"], "wechat", 900, h["password"]).json()
    forged = notification(o2, "FORGED-TXN-01", live.ctx.now_ms())
    r = deliver(live, "wechat", forged, SigningKey.generate())
    assert (r.status_code, error_of(r)["code"]) == (401, "bad_signature")
    assert any("FORGED-TXN-01" in a for a in alarms(live, "payment_forged"))
    # the provider's own signature, but ten minutes old (a replay of a captured delivery)
    r = deliver(live, "wechat", forged, gate.provider.key, ts_ms=live.ctx.now_ms() - 600_000)
    assert (r.status_code, error_of(r)["code"]) == (401, "bad_signature")
    # unsigned
    r = requests.post(f"{live.url}/v1/paygate/wechat/notify", data=forged, timeout=10)
    assert r.status_code == 401
    assert balances(live, h["number"]) == (900, 0)
    assert wait_order(live, h["token"], o2["order_id"], wait=0)["status"] == "open"


def test_a_channel_without_a_registered_provider_takes_no_notification(
    world: dict[str, Any],
) -> None:
    live: Live = world["live"]
    gate: LiveGate = world["gate"]
    h = holder(live)
    o = order(live, h["token"], "wechat", 400, h["password"]).json()
    body = notification(o, "BANKTXN-0001", live.ctx.now_ms(), channel="bank")
    r = deliver(live, "bank", body, gate.provider.key)  # bank has no provider registered
    assert (r.status_code, error_of(r)["code"]) == (403, "no_paygate")
    assert alarms(live, "payment_unregistered")
    assert balances(live, h["number"]) == (0, 0)


def test_one_order_paid_twice_is_credited_once_and_the_second_payment_raised(
    world: dict[str, Any],
) -> None:
    live: Live = world["live"]
    gate: LiveGate = world["gate"]
    h = holder(live)
    o = paid_order(world, h, "wechat", 600)
    done = wait_order(live, h["token"], o["order_id"])
    second = notification(o, "SECOND-PAY-01", live.ctx.now_ms())
    r = deliver(live, "wechat", second, gate.provider.key)
    assert (r.status_code, error_of(r)["code"]) == (409, "order_paid")
    assert any(o["order_id"] in a for a in alarms(live, "payment_twice"))
    # the first transaction again, with other content: refused as a conflict
    other = notification(o, done["txn_id"], live.ctx.now_ms(), amount_fen=601)
    r = deliver(live, "wechat", other, gate.provider.key)
    assert (r.status_code, error_of(r)["code"]) == (409, "payment_conflict")
    assert balances(live, h["number"]) == (600, 0)
    assert gate.provider.payment(o["order_id"])["acknowledged"]


def test_no_cash_or_provider_money_by_hand(world: dict[str, Any]) -> None:
    """Cash is a desk operation of the finance role; no one credits a provider channel by
    hand (the old desk API credited WeChat or Alipay money on a staff token alone)."""
    live: Live = world["live"]
    h = holder(live)
    path = f"/v1/admin/accounts/{h['number']}/topups"
    for channel in ("wechat", "alipay", "app", "bank"):
        r = live.call("POST", path, {"amount_fen": 100, "channel": channel}, live.token)
        assert r.status_code == 422, (channel, r.text)
    staff = {
        role: live.admin(
            "POST", "/v1/admin/staff", {"name": f"tp-{role}-{h['number'].lower()}", "role": role}
        )["token"]
        for role in ("desk", "finance", "operator", "auditor")
    }
    cash = {"amount_fen": 100, "channel": "cash"}
    assert live.call("POST", path, cash, staff["finance"]).status_code == 200
    for role in ("desk", "operator", "auditor"):
        r = live.call("POST", path, cash, staff[role])
        assert (r.status_code, error_of(r)["code"]) == (403, "not_permitted"), role
    key = SigningKey.generate().public.to_b64()
    reg = {"url": "http://127.0.0.1:9", "public_key": key}
    for role in ("desk", "finance", "auditor"):  # who decides whose signature credits money
        r = live.call("PUT", "/v1/admin/paygates/bank", reg, staff[role])
        assert r.status_code == 403, role
    assert balances(live, h["number"]) == (100, 0)


def test_late_notifications_and_expired_orders(tmp_path: Path) -> None:
    clock = ManualClock()
    live = open_live(tmp_path / "late", clock=clock)
    gate = open_gate(tmp_path / "gate", clock)
    try:
        register(live, gate, "wechat")
        h = holder(live)
        o = order(live, h["token"], "wechat", 300, h["password"]).json()
        ttl = o["expires_ms"] - o["created_ms"]
        assert ttl == live.admin("GET", "/v1/admin/policy")["topup_order_ttl_s"] * 1000
        clock.advance(ttl + 1)
        assert wait_order(live, h["token"], o["order_id"], wait=0)["status"] == "expired"
        # the provider refuses to take the payment of an expired order
        with pytest.raises(Exception, match="expired"):
            pay(o)
        # a notification of a payment made after the order expired is refused and raised
        body = notification(o, "LATE-TXN-0001", clock.now_ms())
        r = deliver(live, "wechat", body, gate.provider.key)
        assert (r.status_code, error_of(r)["code"]) == (409, "order_expired")
        assert any("LATE-TXN-0001" in a for a in alarms(live, "payment_late"))
        # a payment made in time is credited even when its notification comes late
        o2 = order(live, h["token"], "wechat", 200, h["password"]).json()
        in_time = clock.now_ms()
        clock.advance(ttl * 3)
        r = deliver(live, "wechat", notification(o2, "INTIME-TXN-01", in_time), gate.provider.key)
        assert r.status_code == 200 and r.json()["credited"] is True
        assert balances(live, h["number"]) == (200, 0)
    finally:
        gate.stop()
        live.stop()


class DropFirstAnswer:
    """A TCP relay in front of the server that loses the server's answer to the first request
    (the server credited the order, then crashed before its acknowledgement reached the
    provider)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.dropped = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.target)) as up:
            client.settimeout(10)
            up.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += client.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(rest) < length:
                rest += client.recv(65536)
            up.sendall(head + b"\r\nConnection: close\r\n\r\n" + rest)
            answer = b""
            while chunk := up.recv(65536):
                answer += chunk
            with self.lock:
                drop = self.dropped == 0
                self.dropped += drop
            if not drop:
                client.sendall(answer)

    def close(self) -> None:
        self.sock.close()


def test_a_crash_between_crediting_and_acknowledging_credits_once(
    world: dict[str, Any],
) -> None:
    live: Live = world["live"]
    gate: LiveGate = world["gate"]
    relay = DropFirstAnswer(live.port)
    try:
        h = holder(live)
        o = order(live, h["token"], "wechat", 4321, h["password"]).json()
        o["pay"]["order"]["notify_url"] = f"http://127.0.0.1:{relay.port}/v1/paygate/wechat/notify"
        pay(o)  # the provider delivers through the relay, which loses the first answer
        assert wait_order(live, h["token"], o["order_id"])["status"] == "credited"
        deadline = 100
        while not gate.provider.payment(o["order_id"])["acknowledged"] and deadline:
            threading.Event().wait(0.05)  # the provider's redelivery: no event to await
            deadline -= 1
        got = gate.provider.payment(o["order_id"])
        assert got["acknowledged"] and got["attempts"] >= 2, got
        assert relay.dropped == 1
        assert balances(live, h["number"]) == (4321, 0)
        assert live.admin("GET", "/v1/admin/ledger/check")["ok"]
    finally:
        relay.close()


# -- reconciliation --------------------------------------------------------------------------------
def test_the_daily_reconciliation_flags_every_difference(tmp_path: Path) -> None:
    live = open_live(tmp_path / "rec")
    gate = open_gate(tmp_path / "gate", SystemClock(), retry_s=0.05, max_attempts=2)
    try:
        register(live, gate, "wechat", "alipay")
        h = holder(live)
        ok = paid_order({"live": live}, h, "wechat", 1000)
        assert wait_order(live, h["token"], ok["order_id"])["status"] == "credited"
        ali = paid_order({"live": live}, h, "alipay", 500)
        assert wait_order(live, h["token"], ali["order_id"])["status"] == "credited"
        # paid at the provider, refused by the server: the account was cancelled meanwhile
        h2 = holder(live)
        lost = order(live, h2["token"], "wechat", 700, h2["password"]).json()
        live.admin("POST", f"/v1/admin/accounts/{h2['number']}/cancel")
        pay(lost)
        for _ in range(100):
            if gate.provider.payment(lost["order_id"])["attempts"] >= 1:
                break
            threading.Event().wait(0.05)
        assert any(lost["order_id"] in a for a in alarms(live, "payment_cancelled_account"))
        # money credited on a provider channel with no order (an old server's top-up)
        acct = live.admin("GET", f"/v1/admin/accounts/{h['number']}")
        with live.ctx.db.tx() as tx:
            ledger.ensure(tx, ledger.channel("wechat"), "channel")
            ledger.transfer(
                tx,
                ledger.Transfer(
                    "topup:app9-old",
                    live.ctx.now_ms(),
                    ledger.channel("wechat"),
                    ledger.wallet(acct["id"]),
                    9999,
                    "topup",
                    acct["id"],
                    "old app top-up",
                ),
            )
        day = campus_date(live.ctx.now_ms(), live.ctx.config.tz)
        rep = live.admin("GET", f"/v1/admin/reports/topups?date={day}")
        assert not rep["ok"] and rep["differences"] == 2, rep
        problems = {o["order_id"]: o["problem"] for o in rep["orders"]}
        assert problems == {
            ok["order_id"]: None,
            ali["order_id"]: None,
            lost["order_id"]: "paid_not_credited",
        }
        assert [t["transfer_id"] for t in rep["credited_without_order"]] == ["topup:app9-old"]
        wechat = next(c for c in rep["channels"] if c["channel"] == "wechat")
        assert (wechat["source"], wechat["paid_fen"], wechat["credited_fen"]) == (
            "provider",
            1700,
            1000,
        )
        # the provider cannot be reached: what it notified stands in for its statement
        gate.stop()
        rep = live.admin("GET", f"/v1/admin/reports/topups?date={day}")
        wechat = next(c for c in rep["channels"] if c["channel"] == "wechat")
        assert wechat["source"] == "notified" and wechat["error"]
        assert {o["order_id"]: o["problem"] for o in rep["orders"]} == problems
        assert not rep["ok"]
    finally:
        gate.stop()
        live.stop()
