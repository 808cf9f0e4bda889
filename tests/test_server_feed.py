"""The delta feed (docs/architecture.md): version paging, long-poll, hotlist in the snapshots, policy."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

from sync import protocol
from sync.client import ServerClient
from sync.crypto import SigningKey
from sync.errors import AuthError, ServerRefused
from sync.records import to_json
from sync.server import accounts, feed, merchants, policy, terminals
from sync.server.context import Context, current_version
from sync.server.hot import WAIT_SPREAD
from tests.handterm import HandTerminal, admin_raw, error_of, fresh_account
from tests.helpers import ServerProc, id_card
from tests.inproc import InProcTerminal, make_context


def page_of(ctx: Context, terminal: dict[str, Any], since: int, page: int = feed.PAGE) -> Any:
    """A feed page as the terminal receives it (JSON)."""
    return to_json(feed.delta(ctx, terminal, since, page=page))


# --- paging (in-process: the page size is not an API knob) ----------------------------------------
@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> tuple[Context, InProcTerminal]:
    """A server whose history has versions of one row and versions of many rows."""
    ctx = make_context(tmp_path_factory.mktemp("feed"))
    term = InProcTerminal(ctx)
    ids = []
    for n in range(1, 9):  # one version per account
        ids.append(
            accounts.add_account(ctx, number=f"F{n}", name="n", type="student", id_card=id_card(n))[
                "id"
            ]
        )
        accounts.topup(ctx, f"F{n}", 10_000, "cash")
    for n in range(1, 9):
        accounts.issue_card(ctx, f"F{n}")
    accounts.issue_card(ctx, "F1")  # one version: the old card replaced, the new one issued
    # one ingest touching five accounts: five account rows with a single version
    term.push([term.record(i, 100) for i in ids[:5]])
    accounts.change_status(ctx, "F7", "report-loss")
    policy.set_policy(ctx, {"offline_max_purchase_fen": 3000})  # a version with no rows
    accounts.topup(ctx, "F8", 100, "cash")
    return ctx, term


def rows_of(out: dict[str, Any]) -> list[tuple[str, Any, int]]:
    return [("a", a["id"], a["version"]) for a in out["accounts"]] + [
        ("c", c["card_no"], c["version"]) for c in out["cards"]
    ]


def all_rows(ctx: Context) -> list[tuple[str, Any, int]]:
    return [
        ("a", r["id"], r["version"]) for r in ctx.db.all("SELECT id, version FROM accounts")
    ] + [
        ("c", r["card_no"], r["version"]) for r in ctx.db.all("SELECT card_no, version FROM cards")
    ]


@pytest.mark.parametrize("page", [1, 2, 3, 4, 7, 100])
def test_paging_never_splits_a_version(busy: tuple[Context, InProcTerminal], page: int) -> None:
    ctx, term = busy
    everything = all_rows(ctx)
    by_version: dict[int, set[tuple[str, Any, int]]] = {}
    for r in everything:
        by_version.setdefault(r[2], set()).add(r)
    assert max(len(v) for v in by_version.values()) >= 5  # the case that matters exists

    since, seen, pages = 0, [], 0
    while True:
        out = page_of(ctx, term.row, since, page=page)
        got = rows_of(out)
        pages += 1
        assert not out["reset"]
        for v in {r[2] for r in got}:
            assert by_version[v] <= set(got), f"version {v} split across pages"
            assert since < v <= out["version"]
        if len({r[2] for r in got}) > 1:
            assert len(got) <= page  # only a single version may exceed the page
        seen += got
        assert out["version"] > since or not out["more"]
        since = out["version"]
        if not out["more"]:
            break
    assert since == current_version(ctx.db)
    assert sorted(seen) == sorted(everything)  # every row once, none missed
    if page < len(everything):
        assert pages > 1


def test_policy_in_the_page_that_covers_its_version(busy: tuple[Context, InProcTerminal]) -> None:
    ctx, term = busy
    pv = int(ctx.setting("policy_version"))
    since, carried = 0, []
    while True:
        out = page_of(ctx, term.row, since, page=2)
        if "policy" in out:
            carried.append((since, out["version"]))
            assert out["policy"]["offline_max_purchase_fen"] == 3000
        since = out["version"]
        if not out["more"]:
            break
    assert carried[0][0] == 0  # the first pull always carries the policy
    assert any(lo < pv <= hi for lo, hi in carried)
    assert "policy" not in page_of(ctx, term.row, pv)


def test_since_beyond_the_server_resets(busy: tuple[Context, InProcTerminal]) -> None:
    ctx, term = busy
    out = page_of(ctx, term.row, current_version(ctx.db) + 50)
    assert out["reset"] and "policy" in out
    assert sorted(rows_of(out)) == sorted(all_rows(ctx))


def test_snapshot_carries_what_offline_decisions_need(busy: tuple[Context, InProcTerminal]) -> None:
    ctx, term = busy
    out = page_of(ctx, term.row, 0)
    snap = {a["number"]: a for a in out["accounts"]}
    assert snap["F7"]["status"] == "lost"
    assert snap["F1"]["balance_fen"] == 10_000 - 100
    assert snap["F1"]["spent_fen"] == 100 and snap["F1"]["spent_day"] == ctx.today()
    assert snap["F8"]["balance_fen"] == 10_100
    # no password hash reaches a terminal (issue 10 item 9): the field stays, empty
    assert all(a["pin_verifier"] == "" for a in out["accounts"])
    cards = [c for c in out["cards"] if c["account_id"] == snap["F1"]["id"]]
    assert sorted((c["generation"], c["status"]) for c in cards) == [(1, "replaced"), (2, "active")]
    assert out["ack"] == 5


def test_a_kiosk_gets_the_hotlist_and_policy_but_no_operator_nor_card_secret(
    busy: tuple[Context, InProcTerminal],
) -> None:
    """A kiosk pulls the feed too (sync/server/roles.py): account snapshots with their status and
    the policy (the reissue fee), but not the PIN verifiers of its merchant's operators (a POS
    of the same merchant gets them) nor, unless enrolled --simulated, the cards' identities."""
    ctx, pos = busy
    merchants.add_operator(ctx, "DEFAULT", "op-feed", "收银员", "cashier", "135790")
    token = terminals.create_enroll_token(ctx, "kiosk", "kiosk-feed")["token"]
    key = SigningKey.from_seed(bytes(range(32)))
    kid = terminals.enroll(ctx, token, key.public.to_b64())["terminal_id"]
    kiosk = ctx.db.one("SELECT * FROM terminals WHERE id = ?", (kid,))
    assert kiosk is not None and kiosk["role"] == "kiosk"
    out = page_of(ctx, dict(kiosk), 0)
    assert out["operators"] == [] and out["policy"]["reissue_fee_fen"] == 2000
    assert {a["number"]: a["status"] for a in out["accounts"]}["F7"] == "lost"
    assert all(a["pin_verifier"] == "" for a in out["accounts"])
    assert out["cards"] and all(c["identity"] == "" for c in out["cards"])
    assert [o["number"] for o in page_of(ctx, pos.row, 0)["operators"]] == ["op-feed"]


# --- over loopback ------------------------------------------------------------------------------
def test_long_poll_returns_soon_after_a_loss_report(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "feed-poll")
    acct = fresh_account(module_server, topup_fen=1000)
    since = term.feed(0)["version"]
    out, took = _loss_report_answers_a_parked_poll(module_server, term, acct, since)
    assert took < 1.5
    snap = {a["number"]: a for a in out["accounts"]}
    assert snap[acct["number"]]["status"] == "lost"


def _loss_report_answers_a_parked_poll(
    server: ServerProc, term: HandTerminal, acct: dict[str, Any], since: int
) -> tuple[dict[str, Any], float]:
    """Park a long-poll from ``since``, report ``acct`` lost: the page it got, and the seconds
    from the report to its answer."""
    got: dict[str, Any] = {}

    def poll() -> None:
        got["out"] = term.feed(since, wait=20)
        got["at"] = time.monotonic()

    t = threading.Thread(target=poll)
    t.start()
    # no event tells that the server has parked the poll; give it a moment (the assertion
    # below shows the poll was still waiting when the change came)
    time.sleep(0.3)
    assert t.is_alive()
    changed = time.monotonic()
    server.admin().call(
        "POST", f"/v1/admin/accounts/{acct['number']}/status", {"action": "report-loss"}
    )
    t.join(10)
    assert not t.is_alive()
    return got["out"], got["at"] - changed


def test_long_poll_without_change_waits_then_answers(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "feed-idle")
    since = term.feed(0)["version"]
    t0 = time.monotonic()
    out = term.feed(since, wait=1)
    took = time.monotonic() - t0
    assert out["version"] == since and out["accounts"] == [] and out["cards"] == []
    # it ends in the later half of its wait (hot.WAIT_SPREAD: polls parked together end apart)
    assert (1 - WAIT_SPREAD) * 0.95 <= took < 3


def test_a_long_poll_behind_only_by_sales_parks_and_a_loss_report_answers_it(
    module_server: ServerProc,
) -> None:
    """A plain sale moves the version but is no news for a long-poll (its balances ride the
    next answer): the poll parks for its whole wait instead of answering at once (at a lunch
    peak every poll was answered at once while sales moved the version).  A loss report is
    news: it answers the parked poll at once."""
    term = HandTerminal.enroll(module_server, "feed-sales")
    acct = fresh_account(module_server, topup_fen=10_000)
    # the server's watcher wakes once more, coalesced, for the account's own changes (it
    # cannot tell them from another process's): let that pass
    time.sleep(1.5)
    since = term.feed(0)["version"]
    term.record(acct["id"], 100)
    assert term.push(term.wire([1]))["ack"] == 1
    t0 = time.monotonic()
    out = term.feed(since, wait=1)
    took = time.monotonic() - t0
    # parked for (the later half of) the wait, then answered with the sale's balance
    assert (1 - WAIT_SPREAD) * 0.95 <= took < 3
    assert out["version"] > since
    assert [a["number"] for a in out["accounts"]] == [acct["number"]]
    since = out["version"]
    term.record(acct["id"], 100)
    term.push(term.wire([2]))
    out, took = _loss_report_answers_a_parked_poll(module_server, term, acct, since)
    assert took < 1.5
    assert {a["number"]: a["status"] for a in out["accounts"]} == {acct["number"]: "lost"}


@pytest.mark.parametrize(("action", "status"), [("report-loss", "lost"), ("freeze", "frozen")])
def test_hotlist_status_in_the_snapshot(
    module_server: ServerProc, action: str, status: str
) -> None:
    term = HandTerminal.enroll(module_server, "feed-hot")
    acct = fresh_account(module_server)
    since = term.feed(0)["version"]
    module_server.admin().call(
        "POST", f"/v1/admin/accounts/{acct['number']}/status", {"action": action}
    )
    out = term.feed(since)
    assert [(a["number"], a["status"]) for a in out["accounts"]] == [(acct["number"], status)]


def test_replaced_card_in_the_feed(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "feed-card")
    acct = fresh_account(module_server)
    since = term.feed(0)["version"]
    new = module_server.admin().call("POST", f"/v1/admin/accounts/{acct['number']}/cards", {})
    cards = {c["card_no"]: c["status"] for c in term.feed(since)["cards"]}
    assert cards == {acct["card_no"]: "replaced", new["card_no"]: "active"}


def test_policy_appears_when_changed(module_server: ServerProc) -> None:
    """The whole policy comes in a terminal's first page (from version 0: it has nothing) and
    then only when it changed."""
    fresh_account(module_server)  # a server of its own (the test alone) is at version 0 else
    term = HandTerminal.enroll(module_server, "feed-policy")
    first = term.feed(0)
    assert first["version"] > 0
    assert "policy" in first
    since = first["version"]
    assert "policy" not in term.feed(since)
    resp = admin_raw(
        module_server, "PUT", "/v1/admin/policy", {"values": {"offline_max_total_fen": 123_400}}
    )
    assert resp.status_code == 200 and resp.json()["offline_max_total_fen"] == 123_400
    out = term.feed(since)
    assert out["policy"]["offline_max_total_fen"] == 123_400
    assert "policy" not in term.feed(out["version"])


@pytest.mark.parametrize(
    "values",
    [
        {"no_such_key": 1},
        {"offline_max_total_fen": -1},
        {"offline_max_total_fen": True},
        {"offline_max_total_fen": "100"},
        {"reverse_refund_s": 10**30},
        {"pin_max_tries": 2**63},
        {"auto_freeze_pin_lockout": 1},
        {"channels": {"bank": "yes"}},
        {"channels": {"paypal": True}},
        {"channels": []},
    ],
)
def test_bad_policy_is_refused(module_server: ServerProc, values: dict[str, Any]) -> None:
    before = admin_raw(module_server, "GET", "/v1/admin/policy").json()
    resp = admin_raw(module_server, "PUT", "/v1/admin/policy", {"values": values})
    assert resp.status_code == 422, resp.text
    assert error_of(resp)["code"] == "bad_policy"
    assert admin_raw(module_server, "GET", "/v1/admin/policy").json() == before


def test_feed_query_is_checked(module_server: ServerProc) -> None:
    term = HandTerminal.enroll(module_server, "feed-query")
    for params in ({"since": -1}, {"since": "x"}, {"wait": 31}, {"wait": -1}):
        with pytest.raises(ServerRefused) as err:
            term.client.request("GET", "/v1/feed", params=params)
        assert (err.value.status, err.value.code) == (422, "invalid")


def test_long_polls_parked_together_end_apart(module_server: ServerProc) -> None:
    """Long-polls with no news that start together end at random points of the later half of
    their wait (hot.WAIT_SPREAD): a wake answers every parked poll at once, and with a fixed
    end their next polls would all end together, again and again (a burst every ``wait``)."""
    terms = [HandTerminal.enroll(module_server, f"feed-spread-{i}") for i in range(8)]
    since = [t.feed(0)["version"] for t in terms]
    ends: list[float] = []
    lock = threading.Lock()

    def poll(t: HandTerminal, v: int) -> None:
        t.feed(v, wait=2)
        with lock:
            ends.append(time.monotonic())

    t0 = time.monotonic()
    threads = [threading.Thread(target=poll, args=tv) for tv in zip(terms, since, strict=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert len(ends) == 8
    took = sorted(e - t0 for e in ends)
    assert took[0] >= (1 - WAIT_SPREAD) * 2 * 0.95 and took[-1] < 2.5
    assert took[-1] - took[0] >= 0.2  # 8 ends spread over 1 s: all within 0.2 s is ~1e-4


def test_a_feed_stream_sends_each_page_on_the_open_request(module_server: ServerProc) -> None:
    """``stream=1``: a loss report's page comes on the request the terminal holds, and the
    next one on the same request; whenever no news came for (the later half of) its wait, a
    page without news, and the stream goes on."""
    term = HandTerminal.enroll(module_server, "feed-stream")
    first = fresh_account(module_server, topup_fen=1000)
    second = fresh_account(module_server, topup_fen=1000)
    time.sleep(1.5)  # the watcher's coalesced wake for the accounts' own changes passes
    since = term.feed(0)["version"]
    got: list[tuple[dict[str, Any], float]] = []
    arrived = threading.Condition()

    def hold() -> None:
        for page in term.client.feed_stream(since, wait=6):
            with arrived:
                got.append((to_json(page), time.monotonic()))
                arrived.notify_all()
            if len(got) == 4:
                return  # the terminal stops reading: its request ends

    t0 = time.monotonic()
    t = threading.Thread(target=hold)
    t.start()
    for n, acct in enumerate((first, second), start=1):
        time.sleep(0.5)  # parked (no event tells; the page count below shows it was)
        assert len(got) == n - 1 and t.is_alive()
        reported = time.monotonic()
        module_server.admin().call(
            "POST", f"/v1/admin/accounts/{acct['number']}/status", {"action": "report-loss"}
        )
        with arrived:
            assert arrived.wait_for(lambda: len(got) == n, timeout=5)  # noqa: B023
        page, at = got[-1]
        assert at - reported < 1.5
        assert [(a["number"], a["status"]) for a in page["accounts"]] == [(acct["number"], "lost")]
    t.join(20)
    assert not t.is_alive()
    assert len(got) == 4  # the two reports', then one at the end of each wait
    versions = [p["version"] for p, _ in got]
    assert since < versions[0] < versions[1] <= versions[2] <= versions[3]
    assert got[2][0]["accounts"] == got[3][0]["accounts"] == []
    # each page began the wait again: the stream outlived its first wait, and its second
    for n in (2, 3):
        assert (1 - WAIT_SPREAD) * 6 * 0.95 <= got[n][1] - got[n - 1][1] < 7
    assert got[1][1] - t0 > 1.0


def test_a_feed_stream_is_checked_as_a_long_poll_is(module_server: ServerProc) -> None:
    """Its signature and role are checked before anything is sent: a refusal is the route's
    JSON error, not a stream; a plain stream with nothing new is one page; the FastAPI route
    (a query in another form: ``stream=true``) streams the same way."""
    term = HandTerminal.enroll(module_server, "feed-stream-check")
    since = term.feed(0)["version"]
    pages = [to_json(p) for p in term.client.feed_stream(since, wait=0)]
    assert len(pages) == 1 and pages[0]["version"] >= since
    kiosk_only = HandTerminal.enroll(module_server, "feed-stream-kiosk", role="kiosk")
    assert len(list(kiosk_only.client.feed_stream(0, wait=0))) == 1  # a kiosk holds one too
    stranger = ServerClient(
        module_server.url, terminal_id=term.terminal_id, key=SigningKey.generate()
    )
    with pytest.raises(AuthError) as err:
        list(stranger.feed_stream(since, wait=5))
    assert err.value.status == 401
    target = f"/v1/feed?since={since}&wait=0&stream=true"
    headers = protocol.sign_request(
        term.key, term.terminal_id, "GET", target, b"", int(time.time() * 1000)
    )
    resp = requests.get(module_server.url + target, headers=headers, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = resp.content.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["version"] >= since


def test_a_stream_of_a_terminal_revoked_meanwhile_gets_no_further_page(
    module_server: ServerProc,
) -> None:
    """A stream is signed once, when it opens; every page checks the terminal's row again, so
    a terminal revoked while it holds one is refused at the next page (a parked stream has
    sent nothing yet: its answer is the route's 403)."""
    term = HandTerminal.enroll(module_server, "feed-stream-revoked")
    acct = fresh_account(module_server, topup_fen=1000)
    time.sleep(1.5)  # the watcher's coalesced wake for the account's own changes passes
    since = term.feed(0)["version"]
    got: dict[str, Any] = {}

    def hold() -> None:
        try:
            got["pages"] = [to_json(p) for p in term.client.feed_stream(since, wait=20)]
        except AuthError as exc:
            got["error"] = exc

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.5)  # parked (no event tells; is_alive below shows it was)
    assert t.is_alive()
    module_server.admin().call("POST", f"/v1/admin/terminals/{term.terminal_id}/revoke")
    module_server.admin().call(
        "POST", f"/v1/admin/accounts/{acct['number']}/status", {"action": "report-loss"}
    )
    t.join(10)
    assert not t.is_alive()
    assert "pages" not in got
    assert (got["error"].status, got["error"].code) == (403, "terminal_revoked")
