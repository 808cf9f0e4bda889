"""Several ``ykt server`` processes on one database (docs/operations.md: stateless processes behind a load
balancer), on PostgreSQL and on SQLite (tests/dbs.py).  Two real server processes on their own
ports; each test sends the two sides of a race to different processes at the same moment and
then checks that balances are right, nothing was applied twice, the ledger holds, and what
must be shared between processes is (replay nonces, rate limits, long-poll wake-ups, card
numbers, terminal ids, feed versions).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from sync import paygate, protocol
from sync.card.keys import Keystore
from sync.client import ServerClient
from sync.crypto import SigningKey
from sync.paygate import Notification
from sync.records import to_json
from tests.handterm import HandTerminal, admin_raw, fresh_account, ledger_ok
from tests.helpers import ServerProc, id_card, ykt

FEE = 2000  # the default R11 reissue fee


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[list[ServerProc]]:
    """Two server processes on one database; the second has its own data directory with a
    copy of the admin token, as on a second machine."""
    base = tmp_path_factory.mktemp("pair")
    first = ServerProc(base / "a").start()
    (base / "b").mkdir()
    shutil.copy(first.token_file, base / "b" / "admin.token")
    # SQLite: the second process opens the first one's database file (one machine)
    second = ServerProc(base / "b" if first.db_url else first.data, db_url=first.db_url)
    second.start()
    yield [first, second]
    second.stop()
    first.stop()


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; their results (or exceptions)."""
    gate = threading.Barrier(len(calls))

    def run(fn: Callable[[], Any]) -> Any:
        gate.wait()
        try:
            return fn()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def client_at(server: ServerProc, term: HandTerminal) -> ServerClient:
    """The terminal's signed client, talking to another server process."""
    return ServerClient(server.url, terminal_id=term.terminal_id, key=term.key)


def balance(server: ServerProc, number: str) -> int:
    return int(server.account(number)["balance_fen"])


def records_applied(server: ServerProc, term: HandTerminal) -> int:
    rows = server.admin().call("GET", "/v1/admin/terminals")["terminals"]
    return int(next(r["head_seq"] for r in rows if r["id"] == term.terminal_id))


# -- the races of issue 5 -----------------------------------------------------------------------
def test_r11_two_kiosks_reissue_the_same_account_at_once(pair: list[ServerProc]) -> None:
    a, b = pair
    acct = fresh_account(a, topup_fen=10_000)
    kiosks = [HandTerminal.enroll(s, f"kiosk-{s.port}", role="kiosk") for s in pair]
    body = {"number": acct["number"], "id_card": acct_id_card(acct)}
    # two orders for one account, one at each process
    got = at_once(
        lambda: kiosks[0].client.request(
            "POST", "/v1/kiosk/reissue", body={**body, "order_id": "order-a-1", "uid": "0A0B0C01"}
        ),
        lambda: kiosks[1].client.request(
            "POST", "/v1/kiosk/reissue", body={**body, "order_id": "order-b-1", "uid": "0A0B0C02"}
        ),
    )
    assert all(isinstance(g, dict) and g["created"] for g in got), got
    shown = a.account(acct["number"])
    active = [c for c in shown["cards"] if c["status"] == "active"]
    assert len(active) == 1  # R11: the old card stops the moment the new one exists
    assert shown["balance_fen"] == 10_000 - 2 * FEE  # two orders, two fees
    assert sorted(c["generation"] for c in shown["cards"]) == [1, 2, 3]
    # the same order retried at both processes at once: one card, one fee
    retry = {**body, "order_id": "order-c-1"}
    got = at_once(
        lambda: kiosks[0].client.request(
            "POST", "/v1/kiosk/reissue", body={**retry, "uid": "0A0B0C03"}
        ),
        lambda: kiosks[1].client.request(
            "POST", "/v1/kiosk/reissue", body={**retry, "uid": "0A0B0C04"}
        ),
    )
    assert all(isinstance(g, dict) for g in got), got
    assert sorted(g["created"] for g in got) == [False, True]
    assert len({g["card"]["card_no"] for g in got}) == 1
    assert balance(b, acct["number"]) == 10_000 - 3 * FEE
    ledger_ok(b)


def test_r7_topups_race_sync_batches(pair: list[ServerProc]) -> None:
    a, b = pair
    acct = fresh_account(a, topup_fen=1_000)
    term = HandTerminal.enroll(b, "race-topup")
    batches = [[term.record(acct["id"], 7) for _ in range(50)] for _ in range(6)]

    def topups() -> int:
        s = a.admin()
        for i in range(12):
            s.call(
                "POST",
                f"/v1/admin/accounts/{acct['number']}/topups",
                {"amount_fen": 100, "channel": "cash", "request_id": f"race-{acct['id']}-{i}"},
            )
        return 12

    def pushes() -> int:
        for batch in batches:
            client_at(b, term).push(batch)
        return len(batches)

    assert at_once(topups, pushes) == [12, 6]
    assert records_applied(a, term) == 300
    assert balance(a, acct["number"]) == 1_000 + 12 * 100 - 300 * 7
    ledger_ok(a)


def test_r10_loss_reported_while_a_batch_applies(pair: list[ServerProc]) -> None:
    a, b = pair
    acct = fresh_account(a, topup_fen=50_000)
    term = HandTerminal.enroll(a, "race-loss")
    batch = [term.record(acct["id"], 3) for _ in range(1500)]  # offline sales, made before

    def loss() -> str:
        return str(
            requests.post(
                b.url + "/v1/holder/report-loss",
                json={"number": acct["number"], "password": acct["password"]},
                timeout=30,
            ).json()["status"]
        )

    pushed, status = at_once(lambda: term.push(batch), loss)
    assert isinstance(pushed, dict) and pushed["ack"] == 1500, pushed
    assert status == "lost"
    shown = b.account(acct["number"])
    assert shown["status"] == "lost"  # the batch did not undo the loss
    assert shown["balance_fen"] == 50_000 - 1500 * 3  # and every sale made before it applied
    again = to_json(client_at(b, term).push(batch[-10:]))  # a retry of the tail: nothing twice
    assert again["applied"] == 0 and again["duplicates"] == 10
    assert balance(a, acct["number"]) == 50_000 - 1500 * 3
    ledger_ok(b)


def test_many_terminals_ingest_at_once_and_nothing_is_applied_twice(
    pair: list[ServerProc],
) -> None:
    accts = [fresh_account(pair[0], topup_fen=100_000) for _ in range(4)]
    terms = [HandTerminal.enroll(pair[i % 2], f"many-{i}") for i in range(6)]
    sent: dict[str, int] = {}

    def run(i: int, term: HandTerminal) -> None:
        clients = [client_at(s, term) for s in pair]
        total = 0
        for k in range(4):
            batch = [term.record(accts[(i + j) % 4]["id"], 1 + (j % 5)) for j in range(40)]
            total += sum(1 + (j % 5) for j in range(40))
            # every batch goes to both processes at once: one applies it, one sees duplicates
            outs = at_once(
                lambda c=clients[0], b=batch: to_json(c.push(b)),
                lambda c=clients[1], b=batch: to_json(c.push(b)),
            )
            assert all(isinstance(o, dict) for o in outs), outs
            assert sum(o["applied"] for o in outs) == 40, outs
            assert all(o["ack"] == 40 * (k + 1) for o in outs)
        sent[term.terminal_id] = total

    with ThreadPoolExecutor(len(terms)) as pool:
        list(pool.map(lambda it: run(*it), enumerate(terms)))
    assert all(records_applied(pair[0], t) == 160 for t in terms)
    spent = sum(100_000 - balance(pair[1], a["number"]) for a in accts)
    assert spent == sum(sent.values())
    ledger_ok(pair[0])


# -- what must be shared between processes -------------------------------------------------------
def test_a_request_replayed_at_the_other_process_is_refused(pair: list[ServerProc]) -> None:
    a, b = pair
    term = HandTerminal.enroll(a, "replay")
    path = "/v1/feed?since=0&wait=0"
    headers = protocol.sign_request(
        term.key, term.terminal_id, "GET", path, b"", term.clock.now_ms()
    )
    assert requests.get(a.url + path, headers=headers, timeout=10).status_code == 200
    again = requests.get(b.url + path, headers=headers, timeout=10)
    assert again.status_code == 401 and again.json()["error"]["code"] == "replayed_request"


def test_a_sale_sent_at_both_processes_at_once_is_approved_once(pair: list[ServerProc]) -> None:
    """The same signed authorization sent 12 times at once, half at each process: its nonce
    rides the sale's own transaction (on PostgreSQL), and the database's key on the nonces
    lets one through; the others are replays and hold nothing (nothing is held twice)."""
    acct = fresh_account(pair[0], topup_fen=10_000)
    term = HandTerminal.enroll(pair[0], "replay-race")
    raw = protocol.canonical({"seq": 1, "card_no": acct["card_no"], "amount_fen": 900})
    headers = protocol.sign_request(
        term.key, term.terminal_id, "POST", "/v1/pos/authorize", raw, term.clock.now_ms()
    )
    headers["Content-Type"] = "application/json"
    answers = at_once(
        *(
            lambda s=s: requests.post(
                s.url + "/v1/pos/authorize", data=raw, headers=headers, timeout=30
            )
            for s in pair * 6
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [401] * 11, [a.text for a in answers]
    assert all(
        a.json()["error"]["code"] == "replayed_request" for a in answers if a.status_code == 401
    )
    # one hold of 900 counts towards the day's ¥50 without a password (R6): another 41.00
    # fits beside it, 1 fen more does not
    assert term.authorize(2, acct["card_no"], 4_101)["code"] == "needs_pin"
    answer = term.authorize(3, acct["card_no"], 4_100)
    assert answer["approved"] is True, answer


def test_r10_card_less_rate_limit_counts_at_every_process(pair: list[ServerProc]) -> None:
    acct = fresh_account(pair[0])
    codes = []
    for i in range(7):
        resp = requests.post(
            pair[i % 2].url + "/v1/holder/report-loss",
            json={"number": acct["number"], "password": "000000"},
            timeout=10,
        )
        codes.append(resp.status_code)
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]


def test_long_poll_at_one_process_wakes_on_a_change_at_the_other(pair: list[ServerProc]) -> None:
    a, b = pair
    acct = fresh_account(a)
    term = HandTerminal.enroll(b, "poller")
    since = term.feed(0)["version"]
    t0 = time.monotonic()
    report = threading.Timer(
        0.5,
        lambda: a.admin().call(
            "POST", f"/v1/admin/accounts/{acct['number']}/status", {"action": "report-loss"}
        ),
    )
    report.start()
    try:
        got = term.feed(since, wait=20)
    finally:
        report.join()
    waited = time.monotonic() - t0
    assert [x["status"] for x in got["accounts"] if x["number"] == acct["number"]] == ["lost"]
    assert waited < 3.0, waited  # docs/benchmarks.md: a loss reaches the terminals within 3 s


def test_terminal_ids_and_card_numbers_stay_unique_across_processes(
    pair: list[ServerProc],
) -> None:
    tokens = [pair[0].enroll_token(f"uniq-{i}") for i in range(8)]

    def enroll(i: int) -> str:
        c = ServerClient(pair[i % 2].url)
        try:
            return str(c.enroll(tokens[i], SigningKey.generate().public.to_b64())["terminal_id"])
        finally:
            c.close()

    ids = at_once(*[lambda i=i: enroll(i) for i in range(8)])
    assert all(isinstance(x, str) for x in ids) and len(set(ids)) == 8, ids
    accts = [fresh_account(pair[0]) for _ in range(6)]
    cards = at_once(
        *[
            lambda i=i: (
                pair[i % 2]
                .admin()
                .call("POST", f"/v1/admin/accounts/{accts[i]['number']}/cards", {})
            )
            for i in range(6)
        ]
    )
    assert all(isinstance(c, dict) for c in cards), cards
    numbers = [c["card_no"] for c in cards] + [a["card_no"] for a in accts]
    assert len(set(numbers)) == len(numbers)


def test_feed_versions_never_skip_a_row_under_concurrent_writers(pair: list[ServerProc]) -> None:
    """Writers at both processes change many accounts while a terminal pulls the feed from
    both, alternately, always from the version it last got.  A row whose version became
    visible after a higher one was pulled would be missed for good; so at the end the
    terminal's copy of every account must equal the server's."""
    accts = [fresh_account(pair[0]) for _ in range(12)]
    term = HandTerminal.enroll(pair[0], "feed-race")
    clients = [client_at(s, term) for s in pair]
    mine: dict[str, dict[str, Any]] = {}
    since = 0
    stop = threading.Event()

    def pull() -> None:
        nonlocal since
        n = 0
        while True:
            last = stop.is_set()  # every write committed before this pull began
            got = to_json(clients[n % 2].feed(since, wait=0.0 if last else 0.5))
            n += 1
            for x in got["accounts"]:
                mine[x["number"]] = x
            since = got["version"]
            if last and not got["more"]:
                return

    def write(w: int) -> None:
        s = pair[w % 2].admin()
        for i in range(24):
            acct = accts[(w * 5 + i) % len(accts)]
            if i % 3 == 0:
                s.call(
                    "POST",
                    f"/v1/admin/accounts/{acct['number']}/topups",
                    {"amount_fen": 1 + w, "channel": "cash"},
                )
            else:
                action = "report-loss" if (i + w) % 2 else "freeze"
                resp = admin_raw(
                    pair[w % 2],
                    "POST",
                    f"/v1/admin/accounts/{acct['number']}/status",
                    {"action": action},
                )
                assert resp.status_code in (200, 409), resp.text
                undo = {"report-loss": "unlock", "freeze": "unfreeze"}[action]
                admin_raw(
                    pair[w % 2],
                    "POST",
                    f"/v1/admin/accounts/{acct['number']}/status",
                    {"action": undo},
                )

    puller = threading.Thread(target=pull)
    puller.start()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    stop.set()
    puller.join(60)
    assert not puller.is_alive()
    final = to_json(clients[0].feed(since))  # nothing new: the puller saw the last version
    assert final["accounts"] == [] and final["version"] == since
    for acct in accts:
        shown = pair[1].account(acct["number"])
        got = mine[acct["number"]]
        assert (got["status"], got["balance_fen"]) == (shown["status"], shown["balance_fen"])


def acct_id_card(acct: dict[str, Any]) -> str:
    """The ID-card number of an account made by ``fresh_account`` (number ``U<n>``)."""
    return id_card(int(acct["number"][1:]))


def test_every_process_issues_and_reads_cards_and_codes_with_the_same_keys(
    pair: list[ServerProc], tmp_path: Path
) -> None:
    """The campus card keys and the phone-code issuer live in the database: a POS that fetched
    its keystore from one process reads the cards the other process issued, and phone codes
    certified by one verify with the keys the other hands out."""
    terms = [HandTerminal.enroll(s, f"keys-{s.port}") for s in pair]
    got = [t.client.request("GET", "/v1/terminals/keystore") for t in terms]
    assert got[0] == got[1] and got[0]["masters"]
    desk = [s.admin().call("GET", "/v1/admin/keystore?role=kiosk") for s in pair]
    assert desk[0] == desk[1]
    for name in ("card-keys.json", "code-issuer.key", "code-proof.secret"):
        files = [(s.data / name).read_bytes() for s in pair]
        assert files[0] == files[1], name
    info = [requests.get(s.url + "/v1/codes/keys", timeout=10).json() for s in pair]
    assert info[0] == info[1]  # the phone codes' issuer too
    if pair[0].db_url:  # a third machine whose data directory has keys of its own: refused
        other = tmp_path / "other"
        other.mkdir()
        shutil.copy(pair[0].token_file, other / "admin.token")
        Keystore.generate("ynart").save(other / "card-keys.json")
        done = ykt(
            "server",
            "--data",
            str(other),
            "--port",
            "1",
            "--db",
            pair[0].db_url,
            check=False,
            timeout=60,
        )
        assert done.returncode == 2 and "other card keys" in done.stderr, done.stderr


def test_r7_one_payment_notified_to_both_processes_at_once_credits_once(
    pair: list[ServerProc],
) -> None:
    """Issue 10 item 1: the provider's notification delivered to both processes at the same
    moment (a redelivery racing the first delivery behind a load balancer): credited once,
    the others acknowledged as duplicates."""
    a, b = pair
    provider = SigningKey.generate()
    a.register_paygate("wechat", "http://127.0.0.1:9", provider.public.to_b64())
    acct = fresh_account(a)
    login = requests.post(
        a.url + "/v1/app/login",
        json={"number": acct["number"], "password": acct["password"]},
        timeout=10,
    ).json()
    order = requests.post(
        b.url + "/v1/app/topups",
        json={"amount_fen": 888, "channel": "wechat", "password": acct["password"]},
        headers={"Authorization": f"Bearer {login['token']}"},
        timeout=10,
    ).json()
    note = Notification(
        id="N-race-000001",
        event="payment.succeeded",
        order_id=order["order_id"],
        txn_id="P-race-000001",
        channel="wechat",
        amount_fen=888,
        currency="CNY",
        paid_ms=int(time.time() * 1000),
        attach=acct["number"],
    )
    body = paygate.encode(note)

    def deliver(server: ServerProc) -> Callable[[], Any]:
        def go() -> Any:
            headers = paygate.sign(provider, body, int(time.time() * 1000))
            r = requests.post(
                server.url + "/v1/paygate/wechat/notify",
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                timeout=30,
            )
            return r.status_code, r.json().get("credited")

        return go

    got = at_once(*(deliver(s) for s in pair for _ in range(4)))
    assert sorted(got) == [(200, False)] * 7 + [(200, True)], got
    assert balance(a, acct["number"]) == 888
    ledger_ok(b)
