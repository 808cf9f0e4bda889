"""Issue 10, tried over HTTP against real `ykt server` processes (the harness): passwords and
identities, who may call what, what a terminal holds, forged paging cursors.

Each test here failed on the code before the issue was fixed (the report of the fix quotes the
failures); docs/security.md says what they protect."""

from __future__ import annotations

import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from sync.errors import AuthError
from sync.passwords import verify_password
from tests.handterm import HandTerminal, fresh_account
from tests.helpers import ServerProc


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


def test_no_feed_verifier_is_a_query_password_hash(module_server: ServerProc) -> None:
    """Item 9: the feed carries nothing a terminal could crack: no account snapshot holds a
    hash of the holder's query password (nor of anything else)."""
    acct = fresh_account(module_server, topup_fen=100)
    pos = HandTerminal.enroll(module_server, "trust-feed")
    page, since = pos.feed(0), 0
    snaps = list(page["accounts"])
    while page["more"]:
        since = page["version"]
        page = pos.feed(since)
        snaps += page["accounts"]
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
