"""Issue 10, tried over HTTP against real `ykt server` processes (the harness): passwords and
identities, who may call what, what a terminal holds, forged paging cursors.

Each test here failed on the code before the issue was fixed (the report of the fix quotes the
failures); docs/security.md says what they protect."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from sync.errors import AuthError
from sync.passwords import verify_password
from tests.handterm import HandTerminal, fresh_account
from tests.helpers import PosProc, ServerProc, ykt


def login(server: ServerProc, number: str, password: str) -> requests.Response:
    return requests.post(
        server.url + "/v1/app/login", json={"number": number, "password": password}, timeout=30
    )


def test_fifty_concurrent_wrong_logins_lock_the_account(module_server: ServerProc) -> None:
    """Item 8: the tries are counted atomically, before the slow hash: 50 wrong passwords sent
    at once count as 50 (not as one), the account locks, and the right password is refused
    until the lock ends."""
    acct = fresh_account(module_server)
    number, right = acct["number"], acct["password"]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda i: login(module_server, number, "000000"), range(50)))
    codes = sorted({(r.status_code, r.json()["error"]["code"]) for r in answers})
    assert set(codes) <= {(401, "bad_credentials"), (403, "locked")}, codes
    assert sum(r.status_code == 401 for r in answers) <= 5  # five tries, then the lock
    again = login(module_server, number, right)
    assert (again.status_code, again.json()["error"]["code"]) == (403, "locked"), again.text


def test_unknown_numbers_lock_like_known_ones(module_server: ServerProc) -> None:
    """Item 8: sign-in answers do not tell which numbers exist: an unknown number is refused
    like a wrong password and locks after the same tries, with the same answer."""
    known = fresh_account(module_server)["number"]
    unknown = "S9" + known[-6:] + "X"
    seen: dict[str, list[tuple[int, str]]] = {}
    for number in (known, unknown):
        seen[number] = []
        for _ in range(6):
            r = login(module_server, number, "000000")
            seen[number].append((r.status_code, r.json()["error"]["code"]))
    assert seen[known] == seen[unknown] == [(401, "bad_credentials")] * 5 + [(403, "locked")]


def test_a_kiosk_cannot_push_sales(module_server: ServerProc) -> None:
    """Item 11: `POST /v1/journal` is for POS terminals; a (compromised) kiosk that signs a
    sale of a stranger's account is refused and no money moves."""
    acct = fresh_account(module_server, topup_fen=10_000)
    kiosk = HandTerminal.enroll(module_server, "trust-kiosk", role="kiosk")
    with pytest.raises(AuthError) as err:
        kiosk.push([kiosk.record(acct["id"], 4_000)])
    assert (err.value.status, err.value.code) == (403, "wrong_role")
    assert module_server.account(acct["number"])["balance_fen"] == 10_000


def _whole_feed(pos: HandTerminal) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    page = pos.feed(0)
    snaps, cards = list(page["accounts"]), list(page["cards"])
    while page["more"]:
        page = pos.feed(page["version"])
        snaps += page["accounts"]
        cards += page["cards"]
    return snaps, cards


def test_no_feed_verifier_is_a_query_password_hash(module_server: ServerProc) -> None:
    """Item 9: the feed carries nothing a terminal could crack: no account snapshot holds a
    hash of the holder's query password (nor of anything else), and a real (not simulated)
    terminal gets no card identity, which holds the consumption-password verifier (at first
    the same password, R3)."""
    acct = fresh_account(module_server, topup_fen=100)
    pos = HandTerminal(module_server.url, module_server.enroll_token("trust-feed", simulated=False))
    snaps, cards = _whole_feed(pos)
    assert cards and all(c["identity"] == "" for c in cards), cards[:3]
    sim = HandTerminal.enroll(module_server, "trust-feed-sim")  # the harness: simulated
    assert all(c["identity"] for c in _whole_feed(sim)[1] if c["status"] == "active")
    mine = [s for s in snaps if s["id"] == acct["id"]]
    assert mine, "the account is in the feed"
    for snap in snaps:
        assert snap.get("pin_verifier", "") == "", snap
        for value in snap.values():
            assert not (isinstance(value, str) and "scrypt$" in value), snap
    assert not any(
        isinstance(v, str) and v and verify_password(acct["password"], v) for v in mine[0].values()
    )


@pytest.mark.parametrize(
    "cursor",
    [
        [10**30, "t:1"],
        [-(10**30), "t:1"],
        [2**63, "e:1"],
        [1.5, "t:1"],
        [True, "t:1"],
        ["1", "t:1"],
        [1, "x" * 5000],
        [1, "t:1", 3],
    ],
    ids=["huge", "hugely-negative", "2^63", "float", "bool", "text", "long-key", "three"],
)
def test_a_forged_paging_cursor_is_refused_with_400(
    module_server: ServerProc, cursor: list[Any]
) -> None:
    """Item 18: a cursor the server did not hand out (here: well-formed JSON, with a huge
    integer or the wrong types) is a bad request, never a 500."""
    acct = fresh_account(module_server, topup_fen=100)
    token = login(module_server, acct["number"], acct["password"]).json()["token"]
    forged = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
    for path in ("/v1/app/bills", "/v1/app/flow"):
        r = requests.get(
            module_server.url + path,
            params={"cursor": forged},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_cursor"), r.text


def test_the_server_data_directory_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Item 18: `ykt.db` holds the issuer and card master keys: started with umask 000 outside
    systemd, the data directory is 0700 and every file in it 0600."""
    s = ServerProc(tmp_path / "server", db_url=None)
    s.prepare()
    (tmp_path / "server").chmod(0o777)
    old = os.umask(0)  # the child inherits it
    try:
        s.start()
    finally:
        os.umask(old)
    try:
        s.add_account("S2029001", 91, topup_fen=100)
    finally:
        s.stop()
    assert (tmp_path / "server").stat().st_mode & 0o777 == 0o700
    files = [p for p in (tmp_path / "server").iterdir() if p.is_file()]
    assert any(p.name == "ykt.db" for p in files)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {
        p.name: oct(0o600) for p in files
    }


# -- the POS control API (item 14) ----------------------------------------------------------------
@pytest.fixture
def agent(tmp_path: Path, module_server: ServerProc) -> Iterator[PosProc]:
    old = os.umask(0)  # the agent's files are private whatever the umask (item 18)
    try:
        p = PosProc(
            tmp_path / "pos", module_server, token=module_server.enroll_token("trust-pos")
        ).start()
    finally:
        os.umask(old)
    yield p
    p.stop()


def test_the_control_api_refuses_foreign_hosts_and_changes_without_the_token(
    agent: PosProc, tmp_path: Path
) -> None:
    """DNS rebinding: a page of another origin whose name resolves to 127.0.0.1 sends its own
    `Host`; and a request that changes state needs the per-boot token, which only the
    agent's own pages and the local operator have."""
    port = agent.port
    for host in (f"evil.example:{port}", "127.0.0.1:1", f"127.0.0.1.evil.example:{port}", ""):
        for method, path in (
            ("GET", "/control/state"),
            ("GET", "/cashier"),
            ("POST", "/control/amount"),
        ):
            r = requests.request(
                method,
                agent.url + path,
                json={"amount_fen": 100},
                headers={"Host": host, **agent.control_headers()},
                timeout=5,
            )
            assert (r.status_code, r.json()["error"]["code"]) == (403, "bad_host"), (host, path)
    for headers in ({}, {"X-Ykt-Control-Token": "guess"}, {"X-Ykt-Control-Token": ""}):
        for path in ("/control/amount", "/control/cancel", "/control/sim/card"):
            r = requests.post(
                agent.url + path, json={"amount_fen": 100}, headers=headers, timeout=5
            )
            assert (r.status_code, r.json()["error"]["code"]) == (401, "bad_control_token"), path
    assert requests.get(agent.url + "/control/state", timeout=5).json()["state"] == "idle"
    # the loopback names with the agent's port, and the token, are what the agent answers
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        r = requests.post(
            agent.url + "/control/amount",
            json={"amount_fen": 100, "confirm": False},
            headers={"Host": host, **agent.control_headers()},
            timeout=5,
        )
        assert r.status_code == 200, r.text
    # the cashier screen carries the token for its own scripts, and may not be framed
    page = requests.get(agent.url + "/cashier", timeout=5)
    token = agent.control_headers()["X-Ykt-Control-Token"]
    assert f'<meta name="ykt-control-token" content="{token}">' in page.text
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    # the token is new at every start
    agent.stop()
    agent.start()
    r = requests.post(
        agent.url + "/control/cancel", headers={"X-Ykt-Control-Token": token}, timeout=5
    )
    assert r.status_code == 401
    assert agent.control_headers()["X-Ykt-Control-Token"] != token


def test_ykt_sim_finds_the_token_or_reads_it_from_a_file(
    agent: PosProc, module_server: ServerProc
) -> None:
    card = fresh_account(module_server, topup_fen=1000)
    agent.wait_card_known(card["card_no"])
    out = ykt("sim", "sale", "--agent", agent.url, "--card", card["card_no"], "--amount", "1.00",
              "--json")  # fmt: skip
    assert json.loads(out.stdout)["approved"]
    token_file = agent.data / "control.token"
    out = ykt("sim", "sale", "--agent", agent.url, "--card", card["card_no"], "--amount", "1.00",
              "--json", "--token-file", str(token_file))  # fmt: skip
    assert json.loads(out.stdout)["approved"]
    bad = agent.data.parent / "wrong.token"
    bad.write_text("not-the-token\n")
    refused = ykt("sim", "sale", "--agent", agent.url, "--card", card["card_no"], "--amount",
                  "1.00", "--token-file", str(bad), check=False)  # fmt: skip
    assert refused.returncode != 0 and "control token" in refused.stderr, refused.stderr


def test_the_terminal_data_directory_is_private_whatever_the_umask(agent: PosProc) -> None:
    """Item 18, terminals: started under umask 000, the agent's key, identity, journal, cache,
    card keys and control token are 0600 in a 0700 directory."""
    assert agent.data.stat().st_mode & 0o777 == 0o700
    files = {p.name: oct(p.stat().st_mode & 0o777) for p in agent.data.iterdir() if p.is_file()}
    for name in ("terminal.key", "terminal.json", "journal.db", "cache.db", "control.token"):
        assert name in files, files
    assert files == dict.fromkeys(files, oct(0o600))
