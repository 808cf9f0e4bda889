"""The lunch peak's terminal routes served without the framework's layers
(:mod:`sync.server.hot`): which requests they take, which they hand to the FastAPI route, and
the commits of nonce claims that wait for no fsync (:meth:`sync.db.Database.tx`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from sync import protocol
from sync.db import Database
from sync.server.hot import MAX_HEAD, feed_query
from tests.handterm import HandTerminal, fresh_account
from tests.helpers import ServerProc


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b"", {}),
        (b"since=5&wait=20.0", {"since": 5, "wait": 20.0}),
        (b"since=0&wait=0&head=7&acked=6", {"since": 0, "wait": 0.0, "head": 7, "acked": 6}),
        (f"head={MAX_HEAD}".encode(), {"head": MAX_HEAD}),
    ],
)
def test_the_plain_feed_queries_are_served_here(raw: bytes, parsed: dict[str, object]) -> None:
    assert feed_query(raw) == parsed


@pytest.mark.parametrize(
    "raw",
    [
        b"since=-1",
        b"since=1.5",
        b"since=%31",  # percent-encoded: the FastAPI route reads it
        b"since=1&since=2",
        b"wait=31",  # over the route's bound: its 422 comes from the FastAPI route
        b"wait=1e3",
        f"head={MAX_HEAD + 1}".encode(),
        b"since",
        b"other=1",
        b"since=\xff",
    ],
)
def test_any_other_feed_query_goes_to_the_fastapi_route(raw: bytes) -> None:
    assert feed_query(raw) is None


def test_odd_requests_of_the_hot_routes_get_the_fastapi_routes_answers(
    module_server: ServerProc,
) -> None:
    """Not JSON, not of the model, or an odd query: the FastAPI route answers (its 422 with
    the field's code); an ordinary one is served, with the same checks (a replayed request
    is refused either way)."""
    term = HandTerminal.enroll(module_server, "hot-odd")
    acct = fresh_account(module_server, topup_fen=10_000)

    def post(
        body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> requests.Response:
        signed = headers or protocol.sign_request(
            term.key, term.terminal_id, "POST", "/v1/pos/authorize", body, term.clock.now_ms()
        )
        return requests.post(
            f"{module_server.url}/v1/pos/authorize",
            data=body,
            headers={"Content-Type": content_type, **signed},
            timeout=10,
        )

    bad = b'{"seq": 1, "card_no": "x", "amount_fen": 1, "pin": "12"}'
    resp = post(bad, "application/json")
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid"
    assert "pin" in resp.json()["error"]["message"]
    ok = f'{{"seq": 1, "card_no": "{acct["card_no"]}", "amount_fen": 100}}'.encode()
    resp = post(ok, "text/plain")  # not JSON to FastAPI either: the body is not the model
    assert resp.status_code == 422
    headers = protocol.sign_request(
        term.key, term.terminal_id, "POST", "/v1/pos/authorize", ok, term.clock.now_ms()
    )
    first = post(ok, "application/json; charset=utf-8", headers)
    assert first.status_code == 200 and first.json()["approved"], first.text
    again = post(ok, "application/json", headers)
    assert again.status_code == 401 and again.json()["error"]["code"] == "replayed_request"
    feed = requests.get(f"{module_server.url}/v1/feed?since=%31", timeout=10)
    assert feed.status_code == 401  # unsigned, answered by the FastAPI route


def test_a_commit_that_waits_for_no_fsync_is_kept_and_restores_the_setting(
    tmp_path: Path,
) -> None:
    db = Database(tmp_path / "t.db", synchronous="FULL")
    with db.tx() as tx:
        tx.execute("CREATE TABLE t (x INTEGER)")
    with db.tx(durable=False) as tx:
        tx.execute("INSERT INTO t VALUES (1)")
    assert db.scalar("PRAGMA synchronous") == 2  # FULL again for the next commit
    with pytest.raises(ZeroDivisionError), db.tx(durable=False) as tx:
        tx.execute("INSERT INTO t VALUES (2)")
        raise ZeroDivisionError
    assert db.scalar("PRAGMA synchronous") == 2
    db.close()
    again = Database(tmp_path / "t.db")
    assert [r["x"] for r in again.all("SELECT x FROM t")] == [1]
    again.close()
